# The bundled Flower app (apps/appliance) and flower-init's run config (src/runconfig.rs).

## app-test      the app on a real flwr 1.42 federation on loopback (pytest tests/app, ~5 min)
.PHONY: app-test
# APP_TEST_VENV=DIR runs against an existing venv (flwr 1.42.0 + scikit-learn + pytest).
APP_TEST_VENV ?= $(BUILD)/venv
app-test: setup $(if $(filter $(BUILD)/venv,$(APP_TEST_VENV)),venv)
	cargo build --locked --quiet --example runconfig
	PYTHONDONTWRITEBYTECODE=1 APP_TEST_VENV=$(abspath $(APP_TEST_VENV)) \
	APP_TEST_RUNCONFIG=$(abspath target/debug/examples/runconfig) \
	$(APP_TEST_VENV)/bin/python -m pytest -p no:cacheprovider -q -rA tests/app

TEST_TARGETS += app-test
