# Control API client (issues #17.2, #19): flower-init's own protobuf-over-HTTP client against a
# real flower-superlink 1.42 on loopback, --insecure and TLS. FLOWER_VENV picks the venv
# (flwr 1.42.0); by default the one `make venv` builds.

CONTROL_DEFAULT_VENV := $(abspath $(BUILD)/venv)
FLOWER_VENV ?= $(CONTROL_DEFAULT_VENV)

.PHONY: control-flower-test
## control-flower-test  flower-init's Control client vs real SuperLinks (plain + TLS): RegisterNode/ListNodes/StartRun/ListRuns/StopRun/UnregisterNode (FLOWER_VENV=…)
control-flower-test: setup $(if $(filter $(CONTROL_DEFAULT_VENV),$(abspath $(FLOWER_VENV))),venv)
	@test -x "$(FLOWER_VENV)/bin/flower-superlink" || { echo "control-flower-test: no flower-superlink in FLOWER_VENV=$(FLOWER_VENV)"; exit 1; }
	FLOWER_VENV="$(abspath $(FLOWER_VENV))" cargo test --locked --test control_flower -- --ignored --nocapture

TEST_TARGETS += control-flower-test
