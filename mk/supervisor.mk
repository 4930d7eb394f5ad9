# Supervisor (issue #3): the loop's own tests run in `make unit`; these need root. They run
# the built binary's `supervise` as PID 1 of a PID namespace (unshare), and the PID-1
# power-off sequence as PID 1 of a namespace, where kill(-1) and reboot(2) stay inside it.

.PHONY: supervisor-test
## supervisor-test  root: `supervise` in a PID namespace (1,000 orphans, signals, grace, 2,000-connection flood, 200/503) and the PID-1 power-off sequence
supervisor-test: setup
	cargo test --locked --test supervise -- --ignored
	cargo test --locked --lib power::tests::pid1_shutdown_in_a_pid_namespace -- --ignored --exact
TEST_TARGETS += supervisor-test

.PHONY: supervisor-vm-test
## supervisor-vm-test  the ACPI power button (qemu system_powerdown) reaches the supervisor loop on the pinned kernel under qemu
supervisor-vm-test: kernel
	$(PYTHON) tests/vm/in_guest.py acpi
TEST_TARGETS += supervisor-vm-test
