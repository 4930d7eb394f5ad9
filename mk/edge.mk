# The edge (issue #22): an aarch64 SuperNode, everything cross-built on this x86_64 machine
# (make build|kernel|initramfs|image|appliance ARCH=aarch64: the static binary, Debian's arm64
# kernel, the initramfs, the arm64 image through qemu-user, the UEFI disk), booted by
# qemu-system-aarch64 under TCG.

EDGE_ROUNDS ?= 1
.PHONY: edge-aarch64 edge-test edge
edge-aarch64:
	$(MAKE) --no-print-directory build kernel initramfs image appliance ARCH=aarch64

## edge-test        the arm64 disk (qcow2) as an aarch64 SuperNode VM (virt, UEFI -> GRUB, 1 GiB, TCG) boots by flower-init to READY; its memory numbers; ACPI power-off
edge-test: edge-aarch64
	$(PYTHON) tests/vm/edge_test.py --boot qcow2 --json $(BUILD)/aarch64/edge-test/numbers.json
TEST_TARGETS += edge-test

## edge             cross-architecture federation: the demo with an x86_64 SuperLink VM, one x86_64 and one aarch64 SuperNode VM (1 GiB), EDGE_ROUNDS rounds (default 1)
edge: edge-aarch64 build initramfs image kernel appliance
	$(PYTHON) tests/e2e/demo.py --edge 1 --rounds $(EDGE_ROUNDS)
