#!/usr/bin/env python3
"""Assemble the appliance disk: build/appliance/flower-<framework>.qcow2 (`make appliance`).

One GPT disk that boots with no -kernel/-initrd, under SeaBIOS and under UEFI (OVMF):

    LBA 0        protective MBR holding GRUB's boot.img (BIOS)
    p1  1 MiB    BIOS boot partition (EF02): GRUB's core.img for BIOS (i386-pc)
    p2  64 MiB   EFI system partition (EF00, FAT32 "FLOWER-ESP"):
                   /EFI/BOOT/BOOTX64.EFI   GRUB for UEFI (x86_64-efi), the removable-media path
                   /boot/grub/grub.cfg     read by both GRUBs
                   /boot/vmlinuz           the pinned Debian kernel (build/kernel)
                   /boot/initramfs.cpio    /init = flower-init (build/initramfs.cpio)
    p3  squashfs the read-only appliance image (build/image/<framework>/image.squashfs), found
                 by flower-init by its magic, as the separate image disk was
    p4  ext4     FL_STATE (STATE_MB, default 1024 MiB): the CA, Flower's database, checkpoints;
                 the last partition, so flower-init can grow it into a resized disk

Both GRUBs are single images with their modules built in (grub-mkimage), so the ESP holds no
module directory and nothing is looked up on the network. Nothing here needs root or a loop
device: sgdisk writes the GPT into a file, mkfs.vfat + mtools fill the FAT, mkfs.ext4 makes the
state filesystem in a file, and the BIOS loader is installed by this script (what
grub-bios-setup does, which Debian ships only in grub-pc, a package that installs GRUB on the
host's own disk). docs/image.md has the reasons.

--arch aarch64 (issue #22) makes the arm64 disk: the same layout, UEFI only (every aarch64 VM
OpenNebula starts boots through UEFI): /EFI/BOOT/BOOTAA64.EFI is GRUB for arm64-efi, built here
by the host's grub-mkimage from Debian's grub-efi-arm64-bin modules (--grub-dir; the package is
arm64's, fetched and unpacked by scripts/fetch-grub-arm64.sh), the console is the PL011
(ttyAMA0), and p1 stays an empty BIOS boot partition so the partitions are where flower-init
finds them on x86_64.

usage: appliance/mkdisk.py --kernel build/kernel/vmlinuz --initrd build/initramfs.cpio \\
           --image build/image/sklearn/image.squashfs --out build/appliance/flower-sklearn.qcow2 \\
           [--state-mb 1024] [--keep-raw] [--arch aarch64 --grub-dir build/aarch64/grub/arm64-efi]
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

MIB = 1 << 20
SECTOR = 512
GRUB_PC = "/usr/lib/grub/i386-pc"
GRUB_EFI = "/usr/lib/grub/x86_64-efi"
ESP_MB = 64
BIOS_BOOT_MB = 1
ESP_LABEL = "FLOWER-ESP"
STATE_LABEL = "FL_STATE"  # src/mount.rs STATE_LABEL
# The kernel command line: kernel and flower-init lines on the VNC console (tty0) and on the
# serial port (ttyS0, last: /dev/console, what OpenNebula's serial log and the tests read);
# panic=-1: a panicking VM reboots instead of hanging (there is nobody at its console).
CMDLINE = "console=tty0 console=ttyS0,115200n8 panic=-1"
# arm64 `virt`: the PL011 UART is the serial console.
CMDLINE_AARCH64 = "console=tty0 console=ttyAMA0 panic=-1"
# Modules built into both GRUB images. No network modules: the boot reads only this disk.
GRUB_MODULES = ["part_gpt", "fat", "normal", "linux", "configfile", "echo", "test", "search",
                "search_fs_uuid", "minicmd"]
GRUB_PC_MODULES = ["biosdisk"]
GRUB_EFI_MODULES = ["efi_gop"]
GRUB_CFG = """# flower-init appliance (appliance/mkdisk.py). Read by GRUB for BIOS and for UEFI.
set timeout=0
set default=0
menuentry "flower-init" {{
    echo "flower-init: loading the kernel and the initramfs"
    linux /boot/vmlinuz {cmdline}
    initrd /boot/initramfs.cpio
}}
"""

# GRUB 2.06 include/grub/i386/pc/boot.h and util/setup.c: where grub-bios-setup patches.
BOOT_BPB_START, BOOT_BPB_END = 0x03, 0x5A  # keep the disk's own BPB bytes
BOOT_KERNEL_SECTOR = 0x5C  # u64: first sector of core.img
BOOT_DRIVE_CHECK = 0x66  # 2-byte jmp replaced by NOPs for hard disks (buggy-BIOS workaround)
BOOT_PART_START, BOOT_PART_END = 0x1B8, 0x1FE  # disk signature + partition table: keep
BLOCKLIST = SECTOR - 12  # diskboot.img's first blocklist: u64 start, u16 sectors, u16 segment


def run(*cmd, **kw):
    """Run a build tool; its stderr goes to the user on failure."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"appliance: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def need(path, hint):
    if not os.path.exists(path):
        sys.exit(f"appliance: {path} missing ({hint})")


def mib_up(n):
    return (n + MIB - 1) // MIB * MIB


def write_at(disk, offset, src):
    """Copy file `src` into `disk` at byte `offset`, leaving holes where src has zero blocks."""
    with open(src, "rb") as s, open(disk, "r+b") as d:
        d.seek(offset)
        while chunk := s.read(4 * MIB):
            if chunk.count(0) == len(chunk):
                d.seek(len(chunk), os.SEEK_CUR)
            else:
                d.write(chunk)


def grub_images(tmp, arch="x86_64", grub_dir=None):
    """(core.img for BIOS, BOOTX64.EFI): single images with their modules built in. The BIOS
    one finds its config on the boot drive's second GPT partition (the ESP); the UEFI one on
    the partition it was loaded from. aarch64: (None, BOOTAA64.EFI)."""
    if arch == "aarch64":
        efi = os.path.join(tmp, "BOOTAA64.EFI")
        run("grub-mkimage", "-O", "arm64-efi", "-d", grub_dir, "-o", efi, "-p", "/boot/grub",
            *GRUB_MODULES, *GRUB_EFI_MODULES)
        return None, efi
    core = os.path.join(tmp, "core.img")
    run("grub-mkimage", "-O", "i386-pc", "-d", GRUB_PC, "-o", core, "-p", "(,gpt2)/boot/grub",
        *GRUB_MODULES, *GRUB_PC_MODULES)
    efi = os.path.join(tmp, "BOOTX64.EFI")
    run("grub-mkimage", "-O", "x86_64-efi", "-d", GRUB_EFI, "-o", efi, "-p", "/boot/grub",
        *GRUB_MODULES, *GRUB_EFI_MODULES)
    return core, efi


def install_bios_grub(disk, core_img, first_sector, max_sectors):
    """What grub-bios-setup does for a GPT disk with a BIOS boot partition (GRUB 2.06
    util/setup.c): boot.img into the MBR's code area (the disk's BPB, signature and protective
    partition table kept), pointing at core.img's first sector; core.img into the partition,
    its blocklist naming the sectors that follow. Returns core.img's size in sectors."""
    with open(os.path.join(GRUB_PC, "boot.img"), "rb") as f:
        boot = bytearray(f.read())
    with open(core_img, "rb") as f:
        core = bytearray(f.read())
    if len(boot) != SECTOR:
        sys.exit(f"appliance: {GRUB_PC}/boot.img is {len(boot)} bytes, not one sector")
    nsec = (len(core) + SECTOR - 1) // SECTOR
    if nsec > max_sectors:
        sys.exit(f"appliance: core.img needs {nsec} sectors, the BIOS boot partition has {max_sectors}")
    with open(disk, "r+b") as d:
        mbr = bytearray(d.read(SECTOR))
        boot[BOOT_BPB_START:BOOT_BPB_END] = mbr[BOOT_BPB_START:BOOT_BPB_END]
        boot[BOOT_PART_START:BOOT_PART_END] = mbr[BOOT_PART_START:BOOT_PART_END]
        boot[BOOT_KERNEL_SECTOR:BOOT_KERNEL_SECTOR + 8] = struct.pack("<Q", first_sector)
        boot[BOOT_DRIVE_CHECK:BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
        if boot[510:512] != b"\x55\xaa":
            sys.exit("appliance: the MBR has no 55 AA signature after sgdisk")
        # diskboot.img (core.img's first sector) loads the rest: start, count; segment kept.
        core[BLOCKLIST:BLOCKLIST + 10] = struct.pack("<QH", first_sector + 1, nsec - 1)
        d.seek(0)
        d.write(boot)
        d.seek(first_sector * SECTOR)
        d.write(core)
    return nsec


def make_esp(path, kernel, initrd, efi, arch="x86_64"):
    """The FAT32 ESP: GRUB for UEFI at the removable-media path, grub.cfg, kernel, initramfs."""
    with open(path, "wb") as f:
        f.truncate(ESP_MB * MIB)
    # A fixed volume id: the same inputs give the same ESP.
    run("mkfs.vfat", "-F", "32", "-n", ESP_LABEL, "-i", "f10e1417", path)
    cfg = os.path.join(os.path.dirname(path), "grub.cfg")
    with open(cfg, "w") as f:
        f.write(GRUB_CFG.format(cmdline=CMDLINE_AARCH64 if arch == "aarch64" else CMDLINE))
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run("mmd", "-i", path, "::/EFI", "::/EFI/BOOT", "::/boot", "::/boot/grub", env=env)
    for src, dst in ((efi, "::/EFI/BOOT/" + os.path.basename(efi)), (cfg, "::/boot/grub/grub.cfg"),
                     (kernel, "::/boot/vmlinuz"), (initrd, "::/boot/initramfs.cpio")):
        run("mcopy", "-i", path, src, dst, env=env)


def make_state(path, size_mb):
    """The state filesystem: ext4 labelled FL_STATE, inode tables written now (the kernel's
    lazy init would otherwise write them in every VM's first minutes)."""
    run("mkfs.ext4", "-q", "-F", "-L", STATE_LABEL, "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard",
        path, f"{size_mb}M")


def assemble(args):
    arm = args.arch == "aarch64"
    grub = [(os.path.join(args.grub_dir or "", "linux.mod"), "scripts/fetch-grub-arm64.sh (make appliance ARCH=aarch64)")] if arm else [
        (os.path.join(GRUB_PC, "boot.img"), "apt install grub-pc-bin (scripts/setup.sh)"),
        (GRUB_EFI, "apt install grub-efi-amd64-bin (scripts/setup.sh)")]
    for p, hint in ((args.kernel, "make kernel"), (args.initrd, "make initramfs"), (args.image, "make image"), *grub):
        need(p, hint)
    t0 = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="appliance-", dir=os.path.dirname(out))
    try:
        image_bytes = mib_up(os.path.getsize(args.image))
        # Partitions on 1 MiB boundaries; the backup GPT takes the disk's last 33 sectors,
        # hence the MiB after the state partition.
        parts = [("bios", BIOS_BOOT_MB * MIB, "EF02", "BIOS boot"),
                 ("esp", ESP_MB * MIB, "EF00", "EFI system"),
                 ("image", image_bytes, "8300", "flower-image"),
                 ("state", args.state_mb * MIB, "8300", STATE_LABEL)]
        offset = MIB
        layout = []
        for name, size, code, label in parts:
            layout.append((name, offset, size, code, label))
            offset += size
        disk_bytes = offset + MIB
        raw = os.path.join(tmp, "disk.raw")
        with open(raw, "wb") as f:
            f.truncate(disk_bytes)
        sg = ["sgdisk", "-o", "-U", "f10e1417-0000-4000-8000-000000000000"]
        for i, (name, off, size, code, label) in enumerate(layout, 1):
            sg += [f"-n{i}:{off // SECTOR}:{(off + size) // SECTOR - 1}", f"-t{i}:{code}", f"-c{i}:{label}"]
        run(*sg, raw)
        core, efi = grub_images(tmp, args.arch, args.grub_dir)
        esp = os.path.join(tmp, "esp.img")
        make_esp(esp, args.kernel, args.initrd, efi, args.arch)
        state = os.path.join(tmp, "state.img")
        make_state(state, args.state_mb)
        at = {name: (off, size) for name, off, size, _, _ in layout}
        write_at(raw, at["esp"][0], esp)
        write_at(raw, at["image"][0], args.image)
        write_at(raw, at["state"][0], state)
        core_sectors = install_bios_grub(raw, core, at["bios"][0] // SECTOR, at["bios"][1] // SECTOR) if core else 0
        run("sgdisk", "-v", raw)  # the table as written is consistent
        tmp_out = os.path.join(tmp, "out.qcow2")
        # Compressed clusters (zlib: every qemu reads it); squashfs data does not shrink further.
        run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, tmp_out)
        if args.keep_raw:
            os.replace(raw, out[:-len(".qcow2")] + ".raw" if out.endswith(".qcow2") else out + ".raw")
        os.replace(tmp_out, out)
        info = json.loads(run("qemu-img", "info", "--output=json", out))
        report = {
            "file": os.path.basename(out),
            "file_bytes": os.path.getsize(out),
            "virtual_bytes": info["virtual-size"],
            "partitions": {name: {"offset": off, "bytes": size, "type": code} for name, off, size, code, _ in layout},
            "grub_core_sectors": core_sectors,
            "state_mb": args.state_mb,
            "arch": args.arch,
            "firmware": ["uefi"] if arm else ["bios", "uefi"],
            "seconds": round(time.monotonic() - t0, 1),
        }
        with open(out[:-len(".qcow2")] + ".json" if out.endswith(".qcow2") else out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        print(f"appliance: {out}: {report['file_bytes'] / MIB:.0f} MiB file, "
              f"{report['virtual_bytes'] / MIB:.0f} MiB virtual, {report['seconds']} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--state-mb", type=int, default=1024)
    ap.add_argument("--keep-raw", action="store_true", help="also leave the raw disk next to the qcow2")
    ap.add_argument("--arch", choices=["x86_64", "aarch64"], default="x86_64")
    ap.add_argument("--grub-dir", help="aarch64: GRUB's arm64-efi module directory (build/aarch64/grub/arm64-efi)")
    assemble(ap.parse_args())


if __name__ == "__main__":
    main()
