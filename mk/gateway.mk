# Gateway (issue #10): real Flower behind flower-init's Fleet-only TLS gateway, on loopback.
# FLOWER_VENV picks the venv (flwr 1.42.0); by default the one `make venv` builds. The
# gateway runs as the static release binary (build/flower-init), whose memory is measured.

GW_DEFAULT_VENV := $(abspath $(BUILD)/venv)
FLOWER_VENV ?= $(GW_DEFAULT_VENV)
GW_ENV = FLOWER_VENV="$(abspath $(FLOWER_VENV))" GATEWAY_BIN="$(abspath $(BUILD)/flower-init)"
GW_VENV_DEP = $(if $(filter $(GW_DEFAULT_VENV),$(abspath $(FLOWER_VENV))),venv)

.PHONY: gateway-test gateway-bench gateway-models-bench gateway-venv-check
gateway-venv-check:
	@test -x "$(FLOWER_VENV)/bin/flower-superlink" || { echo "gateway: no flower-superlink in FLOWER_VENV=$(FLOWER_VENV) (run make venv)"; exit 1; }

## gateway-test  2 SuperNodes train through the TLS gateway under attack; Control closed on the Fleet port, open to allowed sources (FLOWER_VENV=…)
gateway-test: build $(GW_VENV_DEP) gateway-venv-check
	$(GW_ENV) cargo test --locked --test gateway_flower -- --ignored --nocapture --test-threads=1 --skip bench_

## gateway-bench  gateway vs direct with real Flower: SuperNode poll and 10 MB push-object latency (medians)
gateway-bench: build $(GW_VENV_DEP) gateway-venv-check
	$(GW_ENV) cargo test --locked --test gateway_flower bench_gateway_vs_direct -- --ignored --nocapture

## gateway-models-bench  threads vs epoll: memory and latency with 2,000 idle TLS connections
gateway-models-bench: setup
	bench/gateway-models.sh

TEST_TARGETS += gateway-test
