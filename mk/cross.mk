# aarch64 (issue #22): the static binary cross-built here and checked against the x86_64 one
# under qemu-user (in `make test`); the library's unit tests run as aarch64 code (`cross-unit`,
# about 5 minutes, kept out of `make test` for CI's time budget).

.PHONY: cross-test cross-unit
## cross-test       build ARCH=aarch64 (static, no bigger than x86_64); same output as x86_64 for every operator command under qemu-aarch64; key files read across
cross-test: build
	$(MAKE) --no-print-directory build ARCH=aarch64
	$(PYTHON) tests/cross/cross_check.py $(BUILD)/flower-init $(BUILD)/aarch64/flower-init
TEST_TARGETS += cross-test

# Three tests are skipped because qemu-user does not emulate what they need (the code is the
# same on both architectures and they run in `make unit`): PR_SET_CHILD_SUBREAPER answers
# EINVAL (supervisor orphans, power's group stop) and generic netlink sockets are "Protocol not
# supported" (the ACPI button).
## cross-unit       the library's unit tests compiled for aarch64 and run under qemu-aarch64-static (495 of 498; 3 need syscalls qemu-user lacks)
cross-unit: setup
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static \
	  cargo test --locked --lib --target aarch64-unknown-linux-musl -- \
	  --skip acpi::tests::opens_on_this_kernel_or_says_not_available \
	  --skip power::tests::service_shutdown_stops_own_groups_and_nothing_else \
	  --skip supervisor::tests::orphans_are_reaped
