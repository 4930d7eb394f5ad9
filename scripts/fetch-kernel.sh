#!/usr/bin/env bash
# Fetch the pinned Debian kernel package, extract it with dpkg -x and index its modules with
# depmod, into build/kernel/:
#   build/kernel/vmlinuz, build/kernel/lib/modules/<version>/
# Pinned: linux-image-6.1.0-56-amd64 (bookworm-security; also the kernel of the systemd
# baseline in BENCHMARKS.md). Debian's mirror keeps only current packages: if the pinned one is
# gone, the one linux-image-amd64 depends on now is used, with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
PINNED=${KERNEL_PACKAGE:-linux-image-6.1.0-56-amd64}
out=build/kernel
[ -f "$out/.done" ] && exit 0
rm -rf "$out" && mkdir -p "$out"
pkg=$PINNED
if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    apt-get update -qq || true
fi
if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    echo "fetch-kernel: WARNING: $PINNED is no longer on the mirror; using $pkg" >&2
fi
(cd "$out" && apt-get download -q "$pkg" >/dev/null && dpkg -x ./"$pkg"_*.deb . && rm -f ./*.deb)
ver=${pkg#linux-image-}
# The package ships no modules.dep/modules.alias: depmod makes them at install time.
depmod -b "$out" "$ver"
cp "$out/boot/vmlinuz-$ver" "$out/vmlinuz"
echo "$ver" > "$out/version"
touch "$out/.done"
echo "fetch-kernel: $pkg -> $out ($(du -sh "$out/lib/modules" | cut -f1) of modules)"
