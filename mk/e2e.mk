# The whole federation (issue #8): `make demo` under qemu (the README's first command) and
# `make e2e`, the same three nodes on the host (service mode in namespaces), with fault drills.

.PHONY: demo e2e
## demo             the local federation: stand-in + SuperLink + 2 SuperNode VMs under qemu, each booting the qcow2 (SeaBIOS / OVMF), TLS, 3 rounds, summary
demo: build initramfs image kernel appliance
	$(PYTHON) tests/e2e/demo.py --rounds $${ROUNDS:-3}

## e2e              SuperLink + 2 SuperNodes as flower-init service-mode nodes in network namespaces, TLS, 3 rounds, fault drills
e2e: build image venv
	$(PYTHON) tests/e2e/federation.py --rounds 3 --drills
TEST_TARGETS += e2e

# Issue #18: each framework image trains for real, started by flower-init. Not in `make test`:
# the tensorflow image is ~600 MB of wheels from PyPI and the pytorch one more (README, "Tests").
.PHONY: variant-test
VARIANT_USE_CASE ?= $(if $(filter sklearn,$(FRAMEWORK)),tabular-classification,image-classification)
## variant-test     FRAMEWORK's image (sklearn|tensorflow|pytorch) trains VARIANT_USE_CASE (image-classification, sklearn: tabular) ROUNDS (1) rounds: SuperLink + 2 SuperNodes on the host, service mode
variant-test: build image
	$(PYTHON) tests/e2e/federation.py --variant --framework $(FRAMEWORK) --use-case $(VARIANT_USE_CASE) --rounds $${ROUNDS:-1}
