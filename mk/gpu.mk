# GPU (issue #9): the unit tests run in `make unit` (fake sysfs trees); this runs the binding on
# a real kernel under qemu (virtual IOMMU, emulated AMD-vendor VGA + audio in one IOMMU group).

.PHONY: gpu-vm-test
## gpu-vm-test      vfio-pci binding of a display function + its audio on the pinned kernel under qemu
gpu-vm-test: kernel
	$(PYTHON) tests/vm/in_guest.py gpu
TEST_TARGETS += gpu-vm-test
