# TLS (issue #5): real flower-superlink / flower-supernode over loopback with certificates made
# by src/tls. FLOWER_VENV picks the venv (flwr 1.42.0); by default the one `make venv` builds.

TLS_DEFAULT_VENV := $(abspath $(BUILD)/venv)
FLOWER_VENV ?= $(TLS_DEFAULT_VENV)

.PHONY: tls-flower-test
## tls-flower-test  SuperLink with generated certificates accepts a SuperNode trusting its CA, refuses another CA (FLOWER_VENV=…)
tls-flower-test: setup $(if $(filter $(TLS_DEFAULT_VENV),$(abspath $(FLOWER_VENV))),venv)
	@test -x "$(FLOWER_VENV)/bin/flower-superlink" || { echo "tls-flower-test: no flower-superlink in FLOWER_VENV=$(FLOWER_VENV)"; exit 1; }
	FLOWER_VENV="$(abspath $(FLOWER_VENV))" cargo test --locked --test tls_flower -- --ignored --nocapture

TEST_TARGETS += tls-flower-test

.PHONY: renewal-test
## renewal-test     root: a SuperLink whose certificate lives 150 s renews it while running (gateway reloads, Flower restarts, same CA), SuperNode reconnects (~2 min)
renewal-test: build image
	$(PYTHON) tests/e2e/renewal.py
TEST_TARGETS += renewal-test
