# flower-init: build, image, tests. `make help` lists the targets.
# Every target that needs tools runs `setup` first, so a fresh Debian machine needs nothing else.

TARGET   := x86_64-unknown-linux-musl
BIN      := target/$(TARGET)/release/flower-init
BUILD    := build
PYTHON   ?= python3
export CARGO_TERM_COLOR ?= never

.PHONY: all setup build test unit venv help clean
all: build

help:
	@echo "make            static flower-init binary in build/flower-init"
	@echo "make test       everything CI runs (set-up included)"
	@echo "make unit       cargo tests only"
	@grep -h '^## ' mk/*.mk 2>/dev/null | sed 's/^## /make /' || true

setup:
	@scripts/setup.sh

# The static binary. `file` must say "statically linked" (asserted here, like catatonit's CI).
build: setup
	cargo build --release --locked --target $(TARGET)
	@mkdir -p $(BUILD)
	cp --remove-destination $(BIN) $(BUILD)/flower-init
	@file $(BUILD)/flower-init | grep -q 'statically linked' || { file $(BUILD)/flower-init; echo "not static"; exit 1; }
	@echo "build/flower-init: $$(stat -c %s $(BUILD)/flower-init) bytes, $$(file -b $(BUILD)/flower-init | cut -d, -f1-5)"

# Pinned Flower + scikit-learn + pytest for host tests (real flwr on loopback).
venv: $(BUILD)/venv/.done
$(BUILD)/venv/.done: python/requirements-flwr-deps.txt python/requirements-sklearn.txt python/requirements-test.txt python/flwr-version.txt
	python/install.sh $(BUILD)/venv $(PYTHON) sklearn test
	touch $@

unit: setup
	cargo test --locked

# Each concern adds its targets in mk/NAME.mk and its test target to TEST_TARGETS.
TEST_TARGETS := unit
include $(wildcard mk/*.mk)

test: build $(TEST_TARGETS)
	@echo "make test: all passed ($(TEST_TARGETS))"

clean:
	cargo clean
	rm -rf $(BUILD)
