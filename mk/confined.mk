# The Flower container's confinement under the real runc (issue #14 item 3): Docker's default
# seccomp profile, the UTS namespace and the memory limit, on a busybox-only rootfs (no image
# build needed). Root; the test binary runs as PID 1 of a new PID and mount namespace.

.PHONY: confined-test
## confined-test    root, runc: seccomp refuses unshare(CLONE_NEWUSER), own UTS namespace, memory limit set (busybox rootfs, ~1 s)
confined-test: setup
	cargo test --locked --test confined_runc --no-run
	@bin=$$(cargo test --locked --test confined_runc --no-run --message-format=json 2>/dev/null \
	    | python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "confined_runc" and "test" in m["target"]["kind"] and m.get("executable")]' | tail -1); \
	test -x "$$bin" || { echo "confined-test: cannot find the confined_runc test binary"; exit 1; }; \
	timeout 300 unshare --pid --fork --kill-child --mount-proc "$$bin" --ignored --nocapture --test-threads=1
TEST_TARGETS += confined-test
