#!/usr/bin/env bash
# The NVIDIA driver for the GPU image (issue #18): kernel modules built for the pinned kernel by
# Debian's non-free nvidia-kernel-dkms, and the matching userspace (libcuda, NVML, the PTX JIT,
# nvidia-smi), laid out as docs/gpu.md's "NVIDIA driver directory":
#
#   image/nvidia-driver.sh KVER OUT_DIR
#
#   OUT_DIR/modules/KVER/nvidia.ko, nvidia-uvm.ko   (renamed from Debian's nvidia-current*.ko),
#                        and the pinned kernel's modules nvidia.ko needs (drm and its dependencies)
#   OUT_DIR/lib/    libcuda.so.1, libnvidia-ml.so.1, libnvidia-ptxjitcompiler.so.1, ... (+ links)
#   OUT_DIR/bin/    nvidia-smi
#   OUT_DIR/driver.json   {"version", "kernel", "vermagic", "modules", "load_order"}
#
# The modules are compiled in a throwaway chroot (build/nvidia/builder: bookworm with contrib and
# non-free, linux-headers-KVER, nvidia-kernel-dkms and its compiler), never in the image, which
# gets only the results. The userspace comes from the same driver release's .deb files, unpacked
# (dpkg -x): Debian installs them behind update-alternatives, whose links are made here. Runs as
# root (mmdebstrap, chroot). Inputs: Debian's mirror only.
set -euo pipefail
kver=${1:?usage: image/nvidia-driver.sh KVER OUT_DIR}
out=${2:?usage: image/nvidia-driver.sh KVER OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
work=${NVIDIA_WORK:-$root/build/nvidia}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
comps="main contrib non-free non-free-firmware"
t0=$(date +%s)
say() { echo "nvidia-driver[$kver] +$(( $(date +%s) - t0 ))s: $*"; }
[ "$(id -u)" -eq 0 ] || { echo "image/nvidia-driver.sh: must run as root (mmdebstrap, chroot)"; exit 1; }

sources="deb $mirror $suite $comps
deb $mirror $suite-updates $comps
deb ${mirror%/debian}/debian-security $suite-security $comps"

# 1. The modules, built by DKMS in the builder chroot for KVER (not the build machine's kernel).
builder=$work/builder
if [ "$(cat "$builder/.kver" 2>/dev/null)" != "$kver" ]; then
    say "mmdebstrap the builder: linux-headers-$kver, nvidia-kernel-dkms (contrib, non-free)"
    rm -rf "$builder"; mkdir -p "$builder"
    printf '%s\n' "$sources" > "$work/sources.list"
    mmdebstrap --quiet --variant=minbase --include="linux-headers-$kver,nvidia-kernel-dkms" \
        --aptopt='Acquire::Retries "3"' --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        "$suite" "$builder/rootfs" "$work/sources.list"
    echo "$kver" > "$builder/.kver"
fi
r=$builder/rootfs
dkms_ver=$(chroot "$r" dpkg-query -W -f='${Version}' nvidia-kernel-dkms)
version=${dkms_ver%%-*}
modsrc=$(cd "$r/usr/src" && ls -d nvidia-current-* | head -n 1)
mod=${modsrc%-*}
if ! ls "$r/var/lib/dkms/$mod/$version/$kver/x86_64/module/"*.ko* >/dev/null 2>&1; then
    say "dkms build $mod/$version for $kver"
    # The build machine's kernel is not KVER: name it (-k) and its architecture; no install.
    unshare --mount --fork sh -ec "mount -t proc proc '$r/proc'; chroot '$r' dkms build -m '$mod' -v '$version' -k '$kver' -a x86_64" \
        > "$work/dkms.log" 2>&1 || { tail -40 "$work/dkms.log"; cat "$r/var/lib/dkms/$mod/$version/build/make.log" 2>/dev/null | tail -40; exit 1; }
fi
built=$r/var/lib/dkms/$mod/$version/$kver/x86_64/module

# 2. The userspace of the same release, unpacked from its packages.
debs=$work/debs-$version
if [ ! -f "$debs/.done" ]; then
    say "download the userspace $version (libcuda1, libnvidia-ml1, nvidia-smi, PTX JIT, NVVM, pkcs11)"
    rm -rf "$debs"; mkdir -p "$debs"
    unshare --mount --fork sh -ec "mount -t proc proc '$r/proc'; chroot '$r' sh -ec '
        mkdir -p /tmp/debs && cd /tmp/debs && apt-get -qq update &&
        apt-get -o APT::Sandbox::User=root download -qq \
            libcuda1=$dkms_ver libnvidia-ml1=$dkms_ver nvidia-smi=$dkms_ver \
            libnvidia-ptxjitcompiler1=$dkms_ver libnvidia-nvvm4=$dkms_ver libnvidia-pkcs11-openssl3=$dkms_ver'"
    mv "$r"/tmp/debs/*.deb "$debs/"
    rm -rf "$r/tmp/debs" "$r"/var/lib/apt/lists/*
    touch "$debs/.done"
fi

say "lay out $out"
rm -rf "$out"; mkdir -p "$out/modules/$kver" "$out/lib" "$out/bin"
# Debian names the modules nvidia-current*.ko (its modprobe.d aliases them); flower-init loads
# them by file: the names docs/gpu.md uses. CUDA needs nvidia and nvidia-uvm only.
for m in "" -uvm; do
    src=
    for f in "$built/nvidia-current$m.ko" "$built/nvidia-current$m.ko.xz"; do [ -z "$src" ] && [ -f "$f" ] && src=$f; done
    [ -n "$src" ] || { echo "image/nvidia-driver.sh: DKMS built no nvidia-current$m.ko in $built"; exit 1; }
    case $src in
        *.xz) xz -dc "$src" > "$out/modules/$kver/nvidia$m.ko" ;;
        *) cp "$src" "$out/modules/$kver/nvidia$m.ko" ;;
    esac
    # Debug sections only (what `make modules_install INSTALL_MOD_STRIP=1` drops): 65 -> ~40 MB.
    strip --strip-debug "$out/modules/$kver/nvidia$m.ko"
done
x=$(mktemp -d); trap 'rm -rf "$x"' EXIT
for d in "$debs"/*.deb; do dpkg -x "$d" "$x"; done
lib=$x/usr/lib/x86_64-linux-gnu
for f in "$lib"/nvidia/current/lib*.so.* "$lib"/lib*nvidia*.so.* "$lib"/libcuda*.so.*; do
    [ -f "$f" ] && [ ! -L "$f" ] && cp "$f" "$out/lib/"
done
# The sonames the CUDA runtime and NVML open (update-alternatives' links in Debian).
(cd "$out/lib" && for f in lib*.so.*.*; do
    so=$(objdump -p "$f" 2>/dev/null | awk '/SONAME/ {print $2}')
    [ -n "$so" ] && [ "$so" != "$f" ] && ln -sf "$f" "$so"
    case $so in libcuda.so.1) ln -sf "$so" libcuda.so ;; esac
done)
smi=
for f in "$x"/usr/lib/nvidia/current/nvidia-smi "$x"/usr/bin/nvidia-smi; do
    [ -z "$smi" ] && [ -f "$f" ] && [ ! -L "$f" ] && smi=$f
done
[ -n "$smi" ] || { echo "image/nvidia-driver.sh: nvidia-smi missing from the unpacked nvidia-smi package"; exit 1; }
cp "$smi" "$out/bin/nvidia-smi"
for need in libcuda.so.1 libnvidia-ml.so.1 libnvidia-ptxjitcompiler.so.1; do
    [ -e "$out/lib/$need" ] || { echo "image/nvidia-driver.sh: $need missing from the unpacked userspace"; ls -la "$out/lib"; exit 1; }
done
# What nvidia.ko needs from the kernel's own tree (drm and its dependencies: the initramfs
# carries none of it), copied from the pinned kernel (build/kernel), so the GPU step loads the
# whole list from this directory in order, dependencies first.
kmods=${KERNEL_MODULES:-$root/build/kernel/lib/modules/$kver}
[ -f "$kmods/modules.dep" ] || { echo "image/nvidia-driver.sh: no $kmods/modules.dep (make kernel)"; exit 1; }
vermagic=$(modinfo -F vermagic "$out/modules/$kver/nvidia.ko")
python3 - "$out" "$version" "$kver" "$vermagic" "$kmods" "$root/initramfs" <<'EOF'
import json, os, shutil, subprocess, sys
out, version, kver, vermagic, kmods, initramfs = sys.argv[1:]
sys.path.insert(0, initramfs)
from mkinitramfs import closure  # the initramfs builder's modules.dep reader
mdir = os.path.join(out, "modules", kver)
need = [d.replace("-", "_") for d in subprocess.run(["modinfo", "-F", "depends", os.path.join(mdir, "nvidia.ko")],
        capture_output=True, text=True, check=True).stdout.strip().split(",") if d]
mods, paths, _, _, missing = closure(kmods, need)
if missing:
    sys.exit(f"image/nvidia-driver.sh: nvidia.ko needs {missing}, which {kver} does not have")
for m in mods:
    src = os.path.join(kmods, paths[m])
    dst = os.path.join(mdir, m + ".ko" + (".xz" if src.endswith(".xz") else ""))
    shutil.copyfile(src, dst)
order = [m + (".ko.xz" if os.path.exists(os.path.join(mdir, m + ".ko.xz")) else ".ko") for m in mods]
order += ["nvidia.ko", "nvidia-uvm.ko"]
json.dump({"version": version, "kernel": kver, "vermagic": vermagic, "modules": ["nvidia", "nvidia-uvm"],
           "load_order": order}, open(os.path.join(out, "driver.json"), "w"), indent=1)
print(f"load order: {' '.join(order)}")
EOF
say "done: $version for $kver ($vermagic), $(du -sm "$out" | cut -f1) MiB"
