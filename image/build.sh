#!/usr/bin/env bash
# Build the appliance image of one framework variant (issue #6): a Debian bookworm rootfs with
# Debian's python3, runc, tini and ca-certificates, a venv at /opt/flower/venv with the pinned
# Flower + the framework, the bundled Flower app, user app (49999), the mountpoints the VM and
# the container need, a manifest /etc/flower-init/image.json; then a read-only disk image.
#
#   [ARCH=x86_64|aarch64] image/build.sh FRAMEWORK APP_DIR OUT_DIR
#
# ARCH=aarch64 (issue #22) builds the arm64 image on this x86_64 machine: mmdebstrap --arch arm64
# and the chroot steps run their arm64 programs through qemu-user-static (binfmt_misc,
# scripts/binfmt-aarch64.sh), the wheels are PyPI's manylinux aarch64 ones.
#
# Inputs only from the checkout, Debian (deb.debian.org) and PyPI (wheels cached in $WHEELS).
# Runs as root (mmdebstrap, chroot); every chroot runs in a private mount namespace, so nothing
# is mounted on the host afterwards even when the build fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
framework=$1; app=$(cd "$2" && pwd); out=$3
arch=${ARCH:-x86_64}
case $arch in
    x86_64) darch=amd64; abuild=$root/build ;;
    aarch64) darch=arm64; abuild=$root/build/aarch64 ;;
    *) echo "image/build.sh: ARCH=$arch: x86_64 or aarch64"; exit 1 ;;
esac
wheels=${WHEELS:-$abuild/wheels}
base=${IMAGE_BASE:-$abuild/image/base}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
formats=${IMAGE_FORMATS:-squashfs}
suite=bookworm
t0=$(date +%s)
say() { echo "image[$framework/$arch] +$(( $(date +%s) - t0 ))s: $*"; }

[ "$(id -u)" -eq 0 ] || { echo "image/build.sh: must run as root (mmdebstrap, chroot)"; exit 1; }
[ -f "$app/pyproject.toml" ] || { echo "image/build.sh: APP=$app has no pyproject.toml"; exit 1; }
reqs=("$root/python/requirements-flwr-deps.txt" "$root/python/requirements-$framework.txt")
[ -f "${reqs[1]}" ] || { echo "image/build.sh: unknown FRAMEWORK=$framework (no ${reqs[1]})"; exit 1; }
# An architecture's own closure where it differs: PyPI's aarch64 torch is the CPU build, which
# needs neither the nvidia-* wheels nor triton (python/requirements-pytorch-aarch64.txt).
[ ! -f "$root/python/requirements-$framework-$arch.txt" ] || reqs[1]=$root/python/requirements-$framework-$arch.txt
case $framework in   # the use cases this variant can run; mirrors UseCase::frameworks() in src/config.rs
    sklearn) use_cases='["tabular-classification", "image-classification"]' ;;
    pytorch) use_cases='["image-classification", "llm-fine-tuning"]' ;;
    tensorflow) use_cases='["image-classification"]' ;;
    *) echo "image/build.sh: no use-case list for FRAMEWORK=$framework"; exit 1 ;;
esac

# Another architecture's programs run through qemu-user: registered with binfmt_misc first.
if [ "$arch" != "$(uname -m)" ]; then
    "$root/scripts/binfmt-$arch.sh"
fi

# 1. Debian base, shared by every variant; rebuilt only when the package list changes.
debs=$(grep -v '^#' "$here/debian-packages.txt" | xargs | tr ' ' ,)
if [ "$(cat "$base/.packages" 2>/dev/null)" != "$suite $darch $debs" ]; then
    say "mmdebstrap $suite minbase + $debs"
    rm -rf "$base"; mkdir -p "$base"
    mmdebstrap --quiet --variant=minbase --architectures="$darch" --include="$debs" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --aptopt='Acquire::Retries "3"' \
        "$suite" "$base/rootfs" \
        "deb $mirror $suite main" "deb $mirror $suite-updates main" \
        "deb ${mirror%/debian}/debian-security $suite-security main"
    rm -rf "$base"/rootfs/var/lib/apt/lists/* "$base"/rootfs/var/cache/apt/*
    echo "$suite $darch $debs" > "$base/.packages"
fi

# The build machine's pip (Debian's python3 has none unless python3-pip is installed: then a
# small venv's, whose pip comes with python3-venv).
hostpip=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
    [ -x "$root/build/pip-venv/bin/python" ] || python3 -m venv "$root/build/pip-venv"
    hostpip=("$root/build/pip-venv/bin/python" -m pip)
fi

# 2. Wheels: the pinned closure (flwr's deps + the framework's), downloaded once for the
# rootfs's Python (cp311, manylinux of the architecture); flwr itself without deps (see
# python/install.sh).
pyver=$(chroot "$base/rootfs" python3 -c 'import sys; print("%d%d" % sys.version_info[:2])')
mkdir -p "$wheels"
say "wheels for cp$pyver in $wheels"
rargs=(); for r in "${reqs[@]}"; do rargs+=(-r "$r"); done
# bookworm's glibc is 2.36: every manylinux tag up to it (aarch64 wheels start at 2_17).
plats=(); for t in 2_36 2_35 2_34 2_28 2_27 2_24 2_17 2014 1 2_5; do
    case $t in 2014|1) plats+=(--platform "manylinux${t}_$arch") ;; *) plats+=(--platform "manylinux_${t}_$arch") ;; esac
done
"${hostpip[@]}" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$pyver" --implementation cp --abi "cp$pyver" --abi abi3 --abi none \
    "${plats[@]}" --platform any \
    -d "$wheels" "${rargs[@]}" "$(cat "$root/python/flwr-version.txt")"

# 3. The app as a wheel, built from a copy (the build backend must not write into the checkout);
# the backend its pyproject names comes from PyPI (build isolation).
stage=$out/stage
rm -rf "$stage"; mkdir -p "$stage/app" "$stage/appwheel"
tar -C "$app" --exclude=__pycache__ --exclude='*.pyc' --exclude=.venv --exclude=build --exclude=dist \
    -cf - . | tar -C "$stage/app" -xf -
say "app wheel from $app"
"${hostpip[@]}" wheel -q --disable-pip-version-check --no-deps -w "$stage/appwheel" "$stage/app"
rm -rf "$stage/app/build" "$stage/app"/*.egg-info

# 4. The variant's rootfs: a fresh copy of the base, then everything installed with the
# rootfs's own python (image/in-rootfs.sh) inside a chroot in a private mount namespace.
new=$out/rootfs.new
rm -rf "$new"; mkdir -p "$out"
cp -a "$base/rootfs" "$new"
mkdir -p "$new/opt/flower" "$new/tmp/build/wheels"
cp -a "$stage/app" "$new/opt/flower/app"
cp "$here/in-rootfs.sh" "$here/manifest.py" "$root/python/flwr-version.txt" "${reqs[@]}" \
    "$stage"/appwheel/*.whl "$new/tmp/build/"
cp -r "$here/appstart" "$new/tmp/build/appstart"
# The GPU image (issue #18): NVIDIA_DRIVER names image/nvidia-driver.sh's output (mk/image.mk sets
# it for FRAMEWORK=pytorch): modules for the pinned kernel and the userspace, at /opt/nvidia-driver.
if [ -n "${NVIDIA_DRIVER:-}" ]; then
    [ -f "$NVIDIA_DRIVER/driver.json" ] || { echo "image/build.sh: NVIDIA_DRIVER=$NVIDIA_DRIVER has no driver.json"; exit 1; }
    say "NVIDIA driver $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["version"], "for", d["kernel"])' "$NVIDIA_DRIVER/driver.json")"
    cp -a "$NVIDIA_DRIVER" "$new/opt/nvidia-driver"
fi
# Bytecode for another architecture's image: Debian's python3 here when it is the image's
# version (the same bytes, without emulating the compiler); else inside, emulated.
compile=here
if [ "$arch" != "$(uname -m)" ] && [ "$(/usr/bin/python3 -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null)" = "$pyver" ]; then
    compile=host
fi
say "venv, app, user, mountpoints, manifest (chroot; bytecode: $compile)"
COMPILE=$compile unshare --mount --fork --propagation private /bin/sh -ec '
    mount --bind "$2" "$1/tmp/build/wheels"
    mount -t proc proc "$1/proc"
    mount --bind /dev "$1/dev"
    shift 2
    exec chroot "$0" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 COMPILE="$COMPILE" \
        /bin/sh /tmp/build/in-rootfs.sh "$@"' \
    "$new" "$new" "$wheels" "$framework" "$use_cases" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(basename "${reqs[0]}")" "$(basename "${reqs[1]}")" < /dev/null
rm -rf "$new/tmp/build" "$new/root/.cache"
if [ "$compile" = host ]; then
    say "bytecode with $(/usr/bin/python3 --version) here, paths as in the image"
    r=$(realpath "$new")
    /usr/bin/python3 -m compileall -q -j0 -s "$r" -p / "$r/usr/lib/python3" "$r/usr/lib/python3.$(echo "$pyver" | cut -c2-)" "$r/opt/flower" >/dev/null
    # The manifest's sizes were measured inside, before the bytecode: measure again.
    /usr/bin/python3 - "$r" <<'PY'
import json, os, subprocess, sys
root = sys.argv[1]
du = lambda p: int(subprocess.run(["du", "-sbx", p], capture_output=True, text=True, check=True).stdout.split()[0])
path = os.path.join(root, "etc/flower-init/image.json")
m = json.load(open(path))
m["sizes"] = {"rootfs_bytes": du(root), "venv_bytes": du(os.path.join(root, "opt/flower/venv"))}
with open(path, "w") as f:
    json.dump(m, f, indent=2)
    f.write("\n")
PY
fi
dpkg-query --admindir="$new/var/lib/dpkg" -W -f='${Package}=${Version}\n' > "$out/debian-packages.lock"

# 5. Swap the finished tree in, then pack it read-only.
rm -rf "$out/rootfs"; mv "$new" "$out/rootfs"
rootfs_b=$(du -sb "$out/rootfs" | cut -f1)
venv_b=$(du -sb "$out/rootfs/opt/flower/venv" | cut -f1)
sizes="\"rootfs_bytes\": $rootfs_b, \"venv_bytes\": $venv_b"
for f in $formats; do
    say "pack $f"
    rm -f "$out/image.$f"
    s=$(date +%s%N)
    case $f in
        # lz4 in 128 KiB blocks: Flower's start reads thousands of small files, and under TCG
        # every cache miss decompresses a whole block. Measured (BENCHMARKS.md): qemu start ->
        # /health 25.5 s with lz4/128K, 28 s zstd/128K, 36 s zstd-19/1M (170 MB, the old default).
        squashfs) mksquashfs "$out/rootfs" "$out/image.squashfs" -quiet -no-progress -comp lz4 -b 128K \
                      -noappend -xattrs >/dev/null ;;
        squashfs-zstd) mksquashfs "$out/rootfs" "$out/image.squashfs-zstd" -quiet -no-progress -comp zstd \
                      -Xcompression-level 19 -b 1M -noappend -xattrs >/dev/null ;;
        squashfs-xz) mksquashfs "$out/rootfs" "$out/image.squashfs-xz" -quiet -no-progress -comp xz -b 1M -noappend >/dev/null ;;
        erofs) mkfs.erofs --quiet -zlz4hc,12 -L flower-image "$out/image.erofs" "$out/rootfs" >/dev/null ;;
        erofs-plain) mkfs.erofs --quiet -L flower-image "$out/image.erofs-plain" "$out/rootfs" >/dev/null ;;
        *) echo "image/build.sh: unknown format $f"; exit 1 ;;
    esac
    took=$(( ($(date +%s%N) - s) / 1000000 ))
    sizes="$sizes, \"$f\": {\"bytes\": $(stat -c %s "$out/image.$f"), \"pack_ms\": $took}"
done
echo "{$sizes}" > "$out/sizes.json"
say "done: $(cat "$out/sizes.json")"
