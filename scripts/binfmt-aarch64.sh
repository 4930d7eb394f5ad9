#!/usr/bin/env bash
# Let this x86_64 machine run arm64 programs (the arm64 image's mmdebstrap and chroot steps,
# issue #22): register Debian's qemu-user-static interpreter for aarch64 ELF files with the
# kernel's binfmt_misc, as systemd-binfmt does on a machine running systemd. Idempotent.
# Flags from Debian's /usr/lib/binfmt.d/qemu-aarch64.conf: F (the interpreter is opened now, so
# it works inside a chroot), O, P. This changes the machine (not only this checkout) until reboot:
# `echo -1 > /proc/sys/fs/binfmt_misc/qemu-aarch64` undoes it.
set -euo pipefail
conf=/usr/lib/binfmt.d/qemu-aarch64.conf
dir=/proc/sys/fs/binfmt_misc
[ -f "$conf" ] || { echo "binfmt-aarch64: $conf is missing: apt-get install qemu-user-static" >&2; exit 1; }
if [ ! -e "$dir/register" ]; then
    mount -t binfmt_misc binfmt_misc "$dir" \
        || { echo "binfmt-aarch64: cannot mount binfmt_misc on $dir (needs root and CONFIG_BINFMT_MISC)" >&2; exit 1; }
fi
if [ -e "$dir/qemu-aarch64" ] && grep -q '^enabled' "$dir/qemu-aarch64"; then
    exit 0
fi
[ -e "$dir/qemu-aarch64" ] && echo -1 > "$dir/qemu-aarch64"
grep -v '^#' "$conf" | head -1 > "$dir/register"
echo "binfmt-aarch64: registered $(sed -n 's/^interpreter //p' "$dir/qemu-aarch64") for aarch64 ELF files"
