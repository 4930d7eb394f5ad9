# The VM: pinned kernel, initramfs, and the qemu boot test (issue #3).

.PHONY: kernel initramfs
## kernel           the pinned Debian kernel package, extracted into build/kernel
kernel: build/kernel/.done
build/kernel/.done: scripts/fetch-kernel.sh | setup
	scripts/fetch-kernel.sh

## initramfs        build/initramfs.cpio: /init = flower-init + the needed modules
initramfs: build/initramfs.cpio
build/initramfs.cpio: build/kernel/.done initramfs/mkinitramfs.py initramfs/modules.txt build
	$(PYTHON) initramfs/mkinitramfs.py --kernel build/kernel --init build/flower-init --out $@
