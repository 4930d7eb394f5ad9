# Context layer (issue #2): parser, CD discovery, validation, `flower-init check`.

## context-test   root-only context tests: real ISO on a loop device, mounted in a private mount namespace
.PHONY: context-test
context-test: setup
	cargo test --locked --lib cdrom:: -- --ignored --nocapture --test-threads=1
TEST_TARGETS += context-test
