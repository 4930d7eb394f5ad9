# Where the binary's bytes go (issue #17): the release build unstripped, with v0 symbol
# mangling so two versions of one crate show apart, then tools/size_by_crate.py per crate.
# Same code as `make build` (symbols only differ); its own target dir, so `make build` is untouched.

.PHONY: size
SIZE_TARGET_DIR := target/size
## size             bytes of the static binary per crate (unstripped build in target/size; BENCHMARKS.md "Sizes")
size: setup
	$(PYTHON) -m unittest tools/test_size_by_crate.py
	CARGO_TARGET_DIR=$(SIZE_TARGET_DIR) CARGO_PROFILE_RELEASE_STRIP=false \
	  CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C symbol-mangling-version=v0" \
	  scripts/cargo-release.sh $(TARGET)
	$(PYTHON) tools/size_by_crate.py $(SIZE_TARGET_DIR)/$(TARGET)/release/flower-init $(SIZE_ARGS)
