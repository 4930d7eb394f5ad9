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

# Issue #18's device check (tests/gpu/device-check.sh, docs/gpu.md "Device check"): the SuperNode's
# container with flower-init's GPU devices, library mounts and environment, torch on the GPU. It
# needs a machine with an NVIDIA GPU and its driver; here its refusals and the bundle it writes
# over a fake GPU host are tested.
.PHONY: gpu-device-check-test gpu-device-kit
## gpu-device-check-test  device-check.sh without a GPU: what is missing is named; over fake /sys+/proc+/dev the bundle flower-init writes (root, ~1 s)
gpu-device-check-test: build
	$(PYTHON) tests/gpu/device_check_test.py $(OUT)/flower-init $(if $(GPU_IMAGE),--image $(GPU_IMAGE))
TEST_TARGETS += gpu-device-check-test

## gpu-device-kit   build/gpu-device-check/: device-check.sh, the static flower-init and this machine's runc, to copy to a GPU machine with the pytorch image
gpu-device-kit: build
	rm -rf $(BUILD)/gpu-device-check
	mkdir -p $(BUILD)/gpu-device-check
	cp tests/gpu/device-check.sh $(OUT)/flower-init $$(command -v runc) $(BUILD)/gpu-device-check/
	@echo "$(BUILD)/gpu-device-check: $$(ls $(BUILD)/gpu-device-check | tr '\n' ' ')($$(du -sh $(BUILD)/gpu-device-check | cut -f1)); with $(BUILD)/image/pytorch/image.squashfs: docs/gpu.md, Device check"
