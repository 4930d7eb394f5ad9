# The deliverable disk (issue #15): one GPT qcow2 per framework that boots under SeaBIOS and
# UEFI with no -kernel (GRUB from Debian's grub-pc-bin / grub-efi-amd64-bin), the pinned
# kernel and the initramfs on its ESP, the read-only image and the FL_STATE partition.
# See docs/image.md ("The appliance disk"). After image.mk, whose FRAMEWORK it shares.

STATE_MB      ?= 1024
APPLIANCE_DIR := $(BUILD)/appliance
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

$(APPLIANCE): appliance/mkdisk.py $(BUILD)/initramfs.cpio $(BUILD)/kernel/.done $(IMAGE_DIR)/.stamp $(APPLIANCE_DIR)/.args-$(FRAMEWORK) | setup
	$(PYTHON) appliance/mkdisk.py --kernel $(BUILD)/kernel/vmlinuz --initrd $(BUILD)/initramfs.cpio \
	    --image $(IMAGE_DIR)/image.squashfs --state-mb $(STATE_MB) --out $@

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
