#!/bin/sh
# Marketplace metadata of built appliance disks (issue #15), for `make appliance-meta`:
#   appliance/meta.sh [--arch x86_64|aarch64] FLOWER_INIT OUT_DIR URL_BASE VERSION DISK.qcow2...
# measures each flower-FRAMEWORK.qcow2 (virtual size from `qemu-img info`, md5 and sha256 of the
# file, its modification time as creation_time) and has `flower-init marketplace` write
# OUT_DIR/flower-FRAMEWORK{,-superlink,-supernode}.yaml. URL_BASE is where the disks will be
# published (the marketplace downloads URL_BASE/flower-FRAMEWORK.qcow2).
# --arch aarch64: the arm64 disks (build/aarch64/appliance), published as flower-FRAMEWORK-aarch64.qcow2.
set -eu
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:?--arch needs x86_64 or aarch64}; shift 2; fi
[ $# -ge 5 ] || { echo "usage: $0 [--arch x86_64|aarch64] FLOWER_INIT OUT_DIR URL_BASE VERSION DISK.qcow2..." >&2; exit 2; }
flower_init=$1 out=$2 url_base=${3%/} version=$4
shift 4
for disk in "$@"; do
    name=$(basename "$disk" .qcow2)
    framework=${name#flower-}
    [ "$arch" = x86_64 ] || name=$name-$arch
    info=$(qemu-img info --output=json "$disk")
    format=$(printf '%s\n' "$info" | sed -n 's/^ *"format": "\(.*\)",*$/\1/p' | head -n 1)
    [ "$format" = qcow2 ] || { echo "$disk: format '$format', not qcow2" >&2; exit 1; }
    vsize=$(printf '%s\n' "$info" | sed -n 's/^ *"virtual-size": \([0-9]*\),*$/\1/p' | head -n 1)
    [ -n "$vsize" ] || { echo "$disk: no virtual-size in qemu-img info" >&2; exit 1; }
    md5=$(md5sum "$disk" | cut -d' ' -f1)
    sha256=$(sha256sum "$disk" | cut -d' ' -f1)
    "$flower_init" marketplace --framework "$framework" --version "$version" \
        --url "$url_base/$name.qcow2" --virtual-size "$vsize" --md5 "$md5" --sha256 "$sha256" \
        --creation-time "$(stat -c %Y "$disk")" --arch "$arch" --out "$out"
done
