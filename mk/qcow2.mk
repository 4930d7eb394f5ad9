# The deliverable disk (issue #15): one GPT qcow2 per framework that boots under SeaBIOS and
# UEFI with no -kernel (GRUB from Debian's grub-pc-bin / grub-efi-amd64-bin), the pinned
# kernel and the initramfs on its ESP, the read-only image and the FL_STATE partition.
# ARCH=aarch64: build/aarch64/appliance/flower-FRAMEWORK.qcow2, UEFI only (issue #22).
# See docs/image.md ("The appliance disk"). After image.mk, whose FRAMEWORK it shares.

STATE_MB      ?= 1024
APPLIANCE_DIR := $(OUT)/appliance
APPLIANCE     := $(APPLIANCE_DIR)/flower-$(FRAMEWORK).qcow2
APPLIANCE_ARGS := $(FRAMEWORK) $(STATE_MB)

.PHONY: appliance appliance-vm-test appliance-vm-test-matrix
## appliance        build/appliance/flower-FRAMEWORK.qcow2 (+ .json: sizes, layout): boots under BIOS and UEFI; STATE_MB (default 1024) sizes FL_STATE
appliance: $(APPLIANCE)
	@$(MAKE) --no-print-directory appliance-meta

# mk/appliance-meta.mk (read before this file) measures the built disks.
appliance-meta: $(APPLIANCE)

$(APPLIANCE_DIR)/.args-$(FRAMEWORK): FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = "$(APPLIANCE_ARGS)" ] || echo "$(APPLIANCE_ARGS)" > $@

# ARCH=aarch64: UEFI only, GRUB's arm64-efi modules from Debian's arm64 package.
GRUB_ARM64    := $(BUILD)/aarch64/grub
APPLIANCE_ARCH_DEPS := $(if $(filter aarch64,$(ARCH)),$(GRUB_ARM64)/.done)
APPLIANCE_ARCH_ARGS := $(if $(filter aarch64,$(ARCH)),--arch aarch64 --grub-dir $(GRUB_ARM64)/arm64-efi)
$(GRUB_ARM64)/.done: scripts/fetch-grub-arm64.sh | setup
	scripts/fetch-grub-arm64.sh

$(APPLIANCE): appliance/mkdisk.py $(INITRAMFS) $(KERNEL_DIR)/.done $(IMAGE_DIR)/.stamp $(APPLIANCE_DIR)/.args-$(FRAMEWORK) $(APPLIANCE_ARCH_DEPS) | setup
	$(PYTHON) appliance/mkdisk.py --kernel $(KERNEL_DIR)/vmlinuz --initrd $(INITRAMFS) \
	    --image $(IMAGE_DIR)/image.squashfs --state-mb $(STATE_MB) $(APPLIANCE_ARCH_ARGS) --out $@

## appliance-vm-test  the FRAMEWORK (default sklearn) qcow2 as OpenNebula starts it: SeaBIOS/pc boot, disk-resize, OVMF/q35 reboot (state kept, FL_STATE grown), ACPI power-off (part of vm-test)
appliance-vm-test: appliance
	$(PYTHON) tests/vm/appliance_test.py --framework $(FRAMEWORK)

## appliance-vm-test-matrix  appliance-vm-test plus a fresh boot under SeaBIOS on q35 (not in make test: ~3 min more under TCG)
appliance-vm-test-matrix: appliance
	$(PYTHON) tests/vm/appliance_test.py --framework $(FRAMEWORK) --matrix

.PHONY: bench-qcow2
## bench-qcow2      qemu start -> Flower healthy: -kernel/-initrd vs the qcow2 via SeaBIOS and via OVMF (all -M q35, TLS SuperLink), interleaved, RUNS rounds (default 2)
bench-qcow2: appliance initramfs kernel
	@mkdir -p $(BUILD)/bench
	@for i in $$(seq $${RUNS:-2}); do for b in direct bios uefi; do \
		$(PYTHON) bench/boot.py flower-init qcow2-$$b-$$i --boot $$b --machine q35 --disk $(APPLIANCE); \
	done; done | tee $(BUILD)/bench/qcow2.jsonl
