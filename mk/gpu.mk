# GPU (issue #9): the unit tests run in `make unit` (fake sysfs trees); this runs the binding on
# a real kernel under qemu (virtual IOMMU, emulated AMD-vendor VGA + audio in one IOMMU group).

.PHONY: gpu-vm-test
## gpu-vm-test      vfio-pci binding of a display function + its audio on the pinned kernel under qemu
gpu-vm-test: kernel
	$(PYTHON) tests/vm/in_guest.py gpu
TEST_TARGETS += gpu-vm-test

# Issue #18: the GPU image's NVIDIA modules (image/nvidia-driver.sh: Debian's non-free
# nvidia-kernel-dkms built for the pinned kernel). Not in `make test`: it downloads the driver
# and compiles it (minutes); README "Tests".
.PHONY: nvidia-driver nvidia-vm-test
## nvidia-driver    build/nvidia/driver: the NVIDIA modules for the pinned kernel (DKMS) and the driver's userspace
nvidia-driver: $(BUILD)/nvidia/driver/driver.json
## nvidia-vm-test   the NVIDIA modules' vermagic and symbol CRCs against the pinned kernel, then nvidia.ko loaded into it under qemu
nvidia-vm-test: kernel nvidia-driver
	$(PYTHON) tests/gpu/nvidia_modules.py
	$(PYTHON) tests/vm/in_guest.py nvidia
