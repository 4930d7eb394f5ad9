# Context layer (issue #2): parser, CD discovery, validation, `flower-init check`.

FUZZ_SECONDS ?= 60

.PHONY: context-test readme examples-bless fuzz
# FUZZ_TARGETS=gateway_http make fuzz: one target only.
FUZZ_TARGETS ?= context_sh resolve gateway_http

## context-test     root-only context tests: real ISO on a loop device, mounted in a private mount namespace
context-test: setup
	cargo test --locked --lib cdrom::tests:: -- --ignored --skip vm_ --nocapture --test-threads=1
TEST_TARGETS += context-test

## readme           regenerate README.md's "Context variables" reference from src/vars.rs
readme:
	FI_BLESS=1 cargo test --locked --lib vars::tests::readme_section_is_up_to_date -- --exact

## examples-bless   rewrite examples/*/expected.txt from `flower-init check` (review the diff!)
examples-bless:
	FI_BLESS=1 cargo test --locked --test examples every_example_gives_its_expected_output

## fuzz             fuzz the context.sh parser, parse+validate, the gateway's HTTP parsers: FUZZ_SECONDS each (default 60; cargo-fuzz on stable via RUSTC_BOOTSTRAP=1)
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@mkdir -p $(BUILD)
	@for t in $(FUZZ_TARGETS); do \
		seeds=fuzz/seeds; [ $$t = gateway_http ] && seeds=fuzz/seeds-http; \
		mkdir -p fuzz/corpus/$$t && cp -n $$seeds/* fuzz/corpus/$$t/ && \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $(BUILD)/fuzz-$$t.log)" && \
		(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -O $$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1) >$(BUILD)/fuzz-$$t.log 2>&1 \
			|| { tail -n 40 $(BUILD)/fuzz-$$t.log; echo "fuzz: $$t FAILED (crash input in fuzz/artifacts/$$t/)"; exit 1; }; \
		grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' $(BUILD)/fuzz-$$t.log; \
	done

## context-vm-test  cdrom discovery on the pinned kernel under qemu (user CD + context CD, IDE driver arriving late)
.PHONY: context-vm-test
context-vm-test: kernel
	$(PYTHON) tests/vm/in_guest.py context
TEST_TARGETS += context-vm-test
