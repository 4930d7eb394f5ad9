# Multi-site federation (issue #20): a SuperLink at one site, SuperNodes at another, joined by
# FL_JOIN alone across two NATs and a WAN with delay and loss, the WAN cut for 30 s mid-run.

.PHONY: multisite
## multisite        SuperLink in site A, 2 SuperNodes in site B (FL_JOIN + keys only), NAT both sides, WAN 80 ms RTT + 1% loss, cut 30 s mid-run
multisite: build image
	$(PYTHON) tests/e2e/multisite.py --rounds 3
TEST_TARGETS += multisite

.PHONY: wg-vm-test
## wg-vm-test       WireGuard over netlink on the pinned kernel (wireguard.ko): two devices, TCP between two namespaces through the tunnel
wg-vm-test: kernel
	$(PYTHON) tests/vm/in_guest.py wg
TEST_TARGETS += wg-vm-test

.PHONY: multisite-wg
## multisite-wg     the same sites and WAN, SuperLink and SuperNode as qemu VMs joined by a WireGuard overlay (FL_WG_*): only UDP 51820 forwarded, TLS and keys inside the tunnel (~8 min, not in make test)
multisite-wg: build initramfs image kernel venv
	$(PYTHON) tests/e2e/multisite_wg.py --rounds 2
