# The VM: pinned kernel, initramfs, and the qemu boot test (issue #3). ARCH=aarch64: the same
# for arm64 (issue #22), in build/aarch64/.

.PHONY: kernel initramfs
## kernel           the pinned Debian kernel package, extracted into build/kernel (ARCH=aarch64: build/aarch64/kernel)
kernel: $(KERNEL_DIR)/.done
$(KERNEL_DIR)/.done: scripts/fetch-kernel.sh | setup
	ARCH=$(ARCH) scripts/fetch-kernel.sh

## initramfs        build/initramfs.cpio: /init = flower-init + the needed modules (ARCH=aarch64: build/aarch64/initramfs.cpio)
initramfs: $(INITRAMFS)
$(INITRAMFS): $(KERNEL_DIR)/.done initramfs/mkinitramfs.py initramfs/modules.txt build
	$(PYTHON) initramfs/mkinitramfs.py --arch $(ARCH) --kernel $(KERNEL_DIR) --init $(OUT)/flower-init --out $@

.PHONY: net-test
## net-test         apply a network plan over real netlink inside a network namespace (root)
net-test: setup
	cargo test --locked --test net_netns -- --ignored --test-threads=1
TEST_TARGETS += net-test

.PHONY: vm-test
## vm-test          the harness's KVM probe and silent-guest guard (tests/vm/test_qemu.py), then flower-init as PID 1 under qemu: SuperLink to /health, static IP, runc, power button; broken context (q35/SATA) -> 503; GPU fallback; then the qcow2 booted by SeaBIOS and OVMF (appliance-vm-test)
vm-test: initramfs image kernel appliance
	$(PYTHON) tests/vm/test_qemu.py
	$(PYTHON) tests/vm/vm_test.py
	$(PYTHON) tests/vm/appliance_test.py --framework $(FRAMEWORK)
TEST_TARGETS += vm-test
