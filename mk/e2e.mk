# The whole federation (issue #8): `make e2e` on the host (namespaces, runc, real Flower),
# `make demo` under qemu.

.PHONY: e2e e2e-drills
## e2e              SuperLink + 2 SuperNodes as flower-init service-mode nodes in network namespaces, TLS, 3 rounds, fault drills
e2e: build image
	$(PYTHON) tests/e2e/federation.py --rounds 3 --drills
TEST_TARGETS += e2e
