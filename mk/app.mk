# The bundled Flower app (apps/appliance) and flower-init's run config (src/runconfig.rs).

## app-test      the app on a real flwr 1.42 federation on loopback (pytest tests/app, 5-9 min here)
.PHONY: app-test app-test-tf
# APP_TEST_VENV=DIR runs against an existing venv (flwr 1.42.0 + scikit-learn + pytest).
APP_TEST_VENV ?= $(BUILD)/venv
app-test: setup $(if $(filter $(BUILD)/venv,$(APP_TEST_VENV)),venv)
	cargo build --locked --quiet --example runconfig
	PYTHONDONTWRITEBYTECODE=1 APP_TEST_VENV=$(abspath $(APP_TEST_VENV)) \
	APP_TEST_RUNCONFIG=$(abspath target/debug/examples/runconfig) \
	$(APP_TEST_VENV)/bin/python -m pytest -p no:cacheprovider -q -rA tests/app

TEST_TARGETS += app-test

## app-test-tf   the tensorflow variant of image-classification (own venv, ~600 MB from PyPI; not in `make test`)
TF_VERSION ?= 2.21.0
app-test-tf: setup $(BUILD)/venv-tf/.done
	cargo build --locked --quiet --example runconfig
	PYTHONDONTWRITEBYTECODE=1 APP_TEST_VENV=$(abspath $(BUILD)/venv-tf) \
	APP_TEST_RUNCONFIG=$(abspath target/debug/examples/runconfig) \
	$(BUILD)/venv-tf/bin/python -m pytest -p no:cacheprovider -q -rA tests/app/test_frameworks.py

# Pinned Flower deps first (as in `venv`), then tensorflow-cpu resolved against them.
$(BUILD)/venv-tf/.done: python/requirements-flwr-deps.txt python/requirements-sklearn.txt python/requirements-test.txt python/flwr-version.txt
	python/install.sh $(BUILD)/venv-tf $(PYTHON) sklearn test
	$(BUILD)/venv-tf/bin/python -m pip install -q --disable-pip-version-check --only-binary=:all: \
	    -c python/requirements-flwr-deps.txt tensorflow-cpu==$(TF_VERSION)
	touch $@
