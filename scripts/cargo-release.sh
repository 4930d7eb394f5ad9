#!/usr/bin/env bash
# The static release binary for one target: `scripts/cargo-release.sh TARGET [cargo options]`.
# Used by `make build` and `make size`, so both measure the same build.
#
# Rust's std is rebuilt for size from the toolchain's own sources (rust-src, added by
# scripts/setup.sh): `-Z build-std` with std's `optimize_for_size` feature and without its
# `backtrace` feature (a panic=abort binary prints the panic message and location, never a
# backtrace). That is 380 KB less than the precompiled std. `-Z` options need a nightly compiler
# or RUSTC_BOOTSTRAP=1 on the pinned stable one; set only for this command, the way the Linux
# kernel builds its Rust code with a stable rustc. Without rust-src the precompiled std is used,
# with a warning (the binary is then ~0.4 MB larger; nothing else changes).
set -euo pipefail
target=${1:?usage: scripts/cargo-release.sh TARGET [cargo options]}
shift
src="$(rustc --print sysroot)/lib/rustlib/src/rust/library/std"
if [ -d "$src" ]; then
    # CARGO_CACHE_RUSTC_INFO=0: cargo caches `rustc --print cfg` in the target dir without
    # RUSTC_BOOTSTRAP in its key; a cache from an ordinary build lacks the cfgs std's
    # compiler_builtins reads (target_has_reliable_f128), and the aarch64 link then misses
    # __netf2 (musl's long double printf).
    CARGO_CACHE_RUSTC_INFO=0 RUSTC_BOOTSTRAP=1 exec cargo build --release --locked --target "$target" \
        -Z build-std=std,panic_abort -Z build-std-features=optimize_for_size "$@"
fi
echo "cargo-release: warning: no rust-src in $(rustc --print sysroot) (rustup component add rust-src):" \
     "building with the precompiled std, ~0.4 MB larger" >&2
exec cargo build --release --locked --target "$target" "$@"
