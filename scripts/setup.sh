#!/usr/bin/env bash
# One-time machine set-up for building and testing flower-init (Debian 12). Idempotent:
# installs only what is missing. Called by `make setup`, which every top-level target runs.
set -euo pipefail
pkgs=(
    musl-tools        # musl-gcc: ring's C code for the static binary
    gcc-aarch64-linux-gnu  # ring's C and assembly for the aarch64 binary (make build ARCH=aarch64)
    libc6-dev-arm64-cross  # the C headers that compiler looks for (ring includes a few)
    qemu-user-static  # runs the aarch64 binary and its unit tests here (make cross-test), and the arm64 image's build steps
    qemu-system-arm   # the aarch64 VM (make edge-test, make edge): qemu-system-aarch64 -M virt
    qemu-efi-aarch64  # its UEFI firmware (AAVMF), as OpenNebula boots aarch64 VMs
    file              # checks that the binary is statically linked
    python3-yaml      # the marketplace metadata test reads back the YAML it generates
    cpio              # the initramfs archive
    busybox-static    # /init of the small test VMs (static: it runs alone in an initramfs)
    xorriso           # context CD images, as OpenNebula builds them
    qemu-system-x86   # VM tests (KVM when usable, else TCG)
    qemu-utils        # qemu-img for state/data disks
    e2fsprogs         # mkfs.ext4 -d for state/data disks
    squashfs-tools    # the read-only appliance image
    erofs-utils       # (alternative image format, measured in BENCHMARKS.md)
    mmdebstrap        # the Debian base of the container rootfs
    arch-test         # mmdebstrap --arch arm64 checks with it that arm64 programs run here
    runc              # the OCI runtime flower-init drives
    iproute2          # network namespaces and veth pairs for host tests
    nftables          # make multisite: the sites' routers (NAT, a port-forward)
    ethtool           # make multisite: offloads off on the WAN link's interfaces
    util-linux        # unshare and nsenter: PID/mount namespaces of host tests, joining a netns
    openssl           # the e2e wrong-CA drill makes a CA flower-init never saw
    kmod              # depmod: modules.dep/modules.alias of the pinned kernel package
    python3-venv      # Debian's python for the image's venv tooling
    gdisk             # sgdisk: the appliance disk's GPT (make appliance), checked by the tests
    dosfstools        # mkfs.vfat: the appliance disk's EFI system partition
    mtools            # mcopy/mmd: files into that FAT without mounting it
    grub-pc-bin       # GRUB for BIOS (i386-pc modules, boot.img); not grub-pc, which installs on this host's disk
    grub-efi-amd64-bin  # GRUB for UEFI (x86_64-efi modules)
    ovmf              # UEFI firmware for the qcow2 boot tests (OpenNebula's OS/FIRMWARE=UEFI)
    prometheus        # promtool: every /metrics page the tests produce is checked (make metrics-test)
    chromium          # headless: the HTML report opens in a real browser with its charts (make report-test)
)
missing() {
    local p
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}
sudo=; [ "$(id -u)" -eq 0 ] || sudo=sudo
updated=
# Twice: installing one package may remove another. On the machines this project is built on,
# a backported qemu-utils 10.0 is preinstalled, and Debian 12's qemu-system-x86 7.2 removes it
# (so qemu-img vanished halfway through set-up); the second pass installs the matching 7.2.
for pass in 1 2; do
    mapfile -t todo < <(missing)
    [ ${#todo[@]} -gt 0 ] || break
    echo "setup: installing ${todo[*]}"
    [ -n "$updated" ] || { $sudo apt-get update -qq; updated=1; }
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${todo[@]}" >/dev/null
done
mapfile -t todo < <(missing)
if [ ${#todo[@]} -gt 0 ]; then
    echo "setup: still not installed after two passes: ${todo[*]}" >&2
    exit 1
fi
for cmd in qemu-img qemu-system-x86_64 qemu-system-aarch64 runc mmdebstrap mksquashfs xorriso sgdisk; do
    command -v "$cmd" >/dev/null || { echo "setup: $cmd is missing after installing its package" >&2; exit 1; }
done
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "setup: adding the musl target"
    rustup target add x86_64-unknown-linux-musl
fi
# rust-src: make build rebuilds std for size from it (scripts/cargo-release.sh); from rustup's
# server like the aarch64 target. Without it the build still works, 0.4 MB larger, and says so.
if ! [ -d "$(rustc --print sysroot)/lib/rustlib/src/rust/library/std" ]; then
    echo "setup: adding the rust-src component"
    rustup component add rust-src \
        || echo "setup: warning: could not add rust-src (make build then links the precompiled std: a larger binary)"
fi
# The aarch64 target (make build ARCH=aarch64, make cross-test) comes from rustup's server:
# where it cannot be fetched, everything else still works and cross-test says why it fails.
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-musl; then
    echo "setup: adding the aarch64-unknown-linux-musl target"
    rustup target add aarch64-unknown-linux-musl \
        || echo "setup: warning: could not add the aarch64-unknown-linux-musl target (make build ARCH=aarch64 and make cross-test need it)"
fi
