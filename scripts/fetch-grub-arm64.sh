#!/usr/bin/env bash
# GRUB's arm64-efi modules for the arm64 appliance disk (make appliance ARCH=aarch64, issue #22):
# Debian's grub-efi-arm64-bin is an arm64 package, so it is fetched through the private arm64 apt
# state of scripts/fetch-kernel.sh and unpacked into build/aarch64/grub/; this machine's own
# grub-mkimage (grub-common, the same GRUB version) builds the EFI image from it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/aarch64/grub
[ -f "$out/.done" ] && exit 0
. scripts/apt-arm64.sh
apt=("${APT_ARM64[@]}")
# The same version as this machine's grub-mkimage, when the mirror has it.
ver=$(dpkg-query -W -f='${Version}' grub-common)
pkg=grub-efi-arm64-bin
apt-cache "${apt[@]}" show "$pkg=$ver" >/dev/null 2>&1 && pkg="$pkg=$ver" \
    || echo "fetch-grub-arm64: WARNING: $pkg $ver (this machine's grub-common) is not on the mirror; using the current one" >&2
rm -rf "$out" && mkdir -p "$out/deb"
(cd "$out/deb" && apt-get "${apt[@]}" download -q "$pkg" >/dev/null)
dpkg -x "$out"/deb/*.deb "$out/root"
mv "$out/root/usr/lib/grub/arm64-efi" "$out/arm64-efi"
rm -rf "$out/deb" "$out/root"
touch "$out/.done"
echo "fetch-grub-arm64: $(ls "$out/arm64-efi" | grep -c '\.mod$') modules in $out/arm64-efi"
