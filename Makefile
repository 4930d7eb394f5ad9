# flower-init: build, image, tests. `make help` lists the targets.
# Every target that needs tools runs `setup` first, so a fresh Debian machine needs nothing else.

# ARCH=aarch64 (issue #22): `make build|kernel|initramfs|image|appliance ARCH=aarch64` cross-build
# the arm64 binary, kernel, initramfs, SuperNode image and disk into build/aarch64/; `make edge-test` and
# `make edge` boot them (mk/edge.mk). The other targets are x86_64's.
ARCH     ?= x86_64
ifeq ($(filter $(ARCH),x86_64 aarch64),)
$(error ARCH=$(ARCH): must be x86_64 or aarch64)
endif
TARGET   := $(ARCH)-unknown-linux-musl
BIN      := target/$(TARGET)/release/flower-init
BUILD    := build
OUT      := $(if $(filter x86_64,$(ARCH)),$(BUILD),$(BUILD)/$(ARCH))
ifneq ($(ARCH),x86_64)
ifneq ($(filter-out build setup help kernel initramfs image appliance appliance-meta,$(MAKECMDGOALS)),)
$(error ARCH=$(ARCH) builds build, kernel, initramfs, image, appliance and appliance-meta; the other targets are x86_64 (the arm64 VM tests: make edge-test, make edge))
endif
endif
# The pinned kernel and the initramfs of ARCH (mk/vm.mk builds them).
KERNEL_DIR := $(OUT)/kernel
INITRAMFS  := $(OUT)/initramfs.cpio
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
	scripts/cargo-release.sh $(TARGET)
	@mkdir -p $(OUT)
	cp --remove-destination $(BIN) $(OUT)/flower-init
	@file $(OUT)/flower-init | grep -q 'statically linked' || { file $(OUT)/flower-init; echo "not static"; exit 1; }
	@echo "$(OUT)/flower-init: $$(stat -c %s $(OUT)/flower-init) bytes, $$(file -b $(OUT)/flower-init | cut -d, -f1-5)"

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
