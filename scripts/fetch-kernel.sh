#!/usr/bin/env bash
# Fetch the pinned Debian kernel package, extract it with dpkg -x and index its modules with
# depmod:
#   ARCH=x86_64 (default): build/kernel/{vmlinuz,lib/modules/<version>/}
#   ARCH=aarch64:          build/aarch64/kernel/… (the same kernel release built for arm64)
# Pinned: linux-image-6.1.0-56-amd64 / -arm64 (bookworm-security; the amd64 one is also the kernel
# of the systemd baseline in BENCHMARKS.md). Debian's mirror keeps only current packages: if the
# pinned one is gone, the one linux-image-<arch> depends on now is used, with a warning.
# The arm64 package comes through a private apt state (scripts/apt-arm64.sh), so the host's
# dpkg architectures are left as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${ARCH:-x86_64}
case $ARCH in
    x86_64) darch=amd64; out=build/kernel; apt=() ;;
    aarch64) darch=arm64; out=build/aarch64/kernel ;;
    *) echo "fetch-kernel: ARCH=$ARCH: x86_64 or aarch64" >&2; exit 1 ;;
esac
PINNED=${KERNEL_PACKAGE:-linux-image-6.1.0-56-$darch}
[ -f "$out/.done" ] && exit 0
rm -rf "$out" && mkdir -p "$out"
if [ "$ARCH" = aarch64 ]; then
    . scripts/apt-arm64.sh
    apt=("${APT_ARM64[@]}")
fi
pkg=$PINNED
if ! apt-cache "${apt[@]}" show "$pkg" >/dev/null 2>&1; then
    apt-get "${apt[@]}" update -qq || true
fi
if ! apt-cache "${apt[@]}" show "$pkg" >/dev/null 2>&1; then
    pkg=$(apt-cache "${apt[@]}" depends "linux-image-$darch" | awk '/Depends: linux-image-/{print $2; exit}')
    echo "fetch-kernel: WARNING: $PINNED is no longer on the mirror; using $pkg" >&2
fi
# apt-get download writes as _apt where it can; the output directory is root's.
(cd "$out" && apt-get "${apt[@]}" -o APT::Sandbox::User=root download -q "$pkg" >/dev/null \
    && dpkg -x ./"$pkg"_*.deb . && rm -f ./*.deb)
ver=${pkg#linux-image-}
# The package ships no modules.dep/modules.alias: depmod makes them at install time.
depmod -b "$out" "$ver"
cp "$out/boot/vmlinuz-$ver" "$out/vmlinuz"
echo "$ver" > "$out/version"
touch "$out/.done"
echo "fetch-kernel: $pkg ($darch) -> $out ($(du -sh "$out/lib/modules" | cut -f1) of modules)"
