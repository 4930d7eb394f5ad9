#!/usr/bin/env python3
"""The product disk under qemu, started as OpenNebula's KVM driver starts it (issue #15).

build/appliance/flower-sklearn.qcow2 (`make appliance`) is given to qemu the way libvirt
gets it from OpenNebula for a non-persistent image: a per-VM qcow2 overlay on the imported
image, a virtio disk the firmware boots (bootindex, no -kernel/-initrd), the context ISO
labelled CONTEXT on IDE (machine pc) or SATA (q35), a virtio NIC with OpenNebula's MAC
02:00:<IPv4>. Two boots of one VM (one disk) by default, the state carried between them:

  1. SeaBIOS, pc: GRUB in the BIOS boot partition boots the kernel and initramfs from the ESP;
     flower-init finds the squashfs partition and FL_STATE; Flower healthy, /health 200,
     /status ready, READY published; the ACPI power button powers off.
  2. the disk grown by 1 GiB (`onevm disk-resize` is `qemu-img resize` on the VM's disk), then
     OVMF (UEFI), q35: GRUB from the ESP; the CA and the server certificate are the ones of
     boot 1 (the state survived the reboot); the state partition and its ext4 grew into the
     new space (checked from outside after power-off: sgdisk -v, the ext4 block count, e2fsck);
     ACPI power-off.

    tests/vm/appliance_test.py [--matrix] [--framework sklearn]

--matrix boots a fresh disk once more under SeaBIOS on q35 (`make appliance-vm-test-matrix`,
about 3 minutes more under TCG). OVMF on machine pc is left out: there Linux sees no device on
the PIIX IDE channel holding the context CD (measured here under TCG; docs/image.md), so UEFI
templates use q35. Console logs: build/vm-logs/appliance-*.log.
"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import contextsh  # noqa: E402
from qemu import GuestSilent, Disk, Nic, Vm, accelerator, free_port, http_get, make_iso  # noqa: E402
from vm_test import GUEST_IP, GUEST_MAC, NET, check, log, wait_http, FAILURES  # noqa: E402

BUILD = os.path.join(ROOT, "build", "appliance-test")
LOGS = os.path.join(ROOT, "build", "vm-logs")
HEALTHY_WITHIN = 600  # TCG on the shared machine: ~60 s idle, ~140 s at load 6 (firmware + GRUB included)
GROW = 1 << 30
STATE_MB = None  # FL_STATE's built size, from the disk's .json (make appliance STATE_MB=…)
SECTOR = 512


def overlay(image, path):
    """The VM's disk for a non-persistent image: a qcow2 overlay on the imported image."""
    if os.path.exists(path):
        os.unlink(path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", os.path.abspath(image), path],
                   check=True)
    return path


def server_certificate(port):
    """DER of the certificate Flower's port (through the gateway) presents."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        c = ssl.create_default_context()
        c.check_hostname = False
        c.verify_mode = ssl.CERT_NONE  # the CA lives in the VM; compared across boots, not trusted
        with c.wrap_socket(s) as tls:
            return tls.getpeercert(binary_form=True)


def boot(name, disk, ctx, firmware, machine):
    """Start one VM on `disk`; returns it with its forwarded ports."""
    ports = {gp: free_port() for gp in (8081, 8000)}
    nic = Nic(GUEST_MAC, user_net="192.168.150.0/24", hostfwd=[(hp, GUEST_IP, gp) for gp, hp in ports.items()])
    vm = Vm(name, None, None, None, disks=[Disk(disk, fmt="qcow2", boot=True)], cdrom=ctx, nics=[nic],
            machine=machine, firmware=firmware, memory=2048, logdir=LOGS)
    vm.ports = ports
    vm.start()
    return vm


def ready(vm, label):
    """Flower healthy, /health 200, /status ready; returns (seconds to healthy, CA fingerprint,
    server certificate DER, the disks step's line)."""
    cmd = " ".join(vm.command_line)
    check("-kernel" not in cmd and "-initrd" not in cmd and "bootindex=1" in cmd,
          f"{label}: qemu boots the disk itself (no -kernel/-initrd, bootindex on the virtio disk)")
    t, line, _ = vm.wait_for(r"flower-init: info: flower healthy", HEALTHY_WITHIN)
    check(True, f"{label}: Flower healthy {t:.1f}s after qemu started ({vm.accel_used})")
    status, body = wait_http(vm.ports[8081], "/health", 200, 60)
    check(status == 200, f"{label}: /health answers 200 (got {status} {body[:200]!r})")
    status, body = http_get("127.0.0.1", vm.ports[8081], "/status")
    st = json.loads(body) if status == 200 else {}
    check(st.get("phase") == "ready", f"{label}: /status phase is ready (got {st.get('phase')!r})")
    image = vm.wait_for(r"step image: ok", 0)[1]
    check("/dev/vda3 (squashfs)" in image, f"{label}: the image is the disk's squashfs partition ({image.split('step ')[-1]})")
    disks = vm.wait_for(r"step disks: ", 0)[1]
    check("state /dev/vda4 on /var/lib/flower" in disks, f"{label}: the state is the disk's FL_STATE partition ({disks.split('step ')[-1]})")
    tls = vm.wait_for(r"step tls: ok", 0)[1]
    ca = tls.split("CA SHA-256 ")[1].split(";")[0] if "CA SHA-256 " in tls else None
    cert = server_certificate(vm.ports[8000])
    return t, ca, cert, tls, disks


def power_off(vm, label, within=90):
    """The ACPI power button (`onevm terminate`): flower-init powers off within the bound."""
    t = time.monotonic()
    vm.powerdown()
    rc = vm.wait_exit(within)
    check(rc is not None, f"{label}: powered off {time.monotonic() - t:.1f}s after the ACPI power button (bound {within}s)")
    if rc is None:
        vm.kill()
        return
    try:
        vm.wait_for(r"flower-init: info: powering off", 1)
        check(True, f"{label}: console says 'powering off'")
    except TimeoutError:
        check(False, f"{label}: console says 'powering off'")
    vm.kill()


def gpt_partitions(raw):
    """[(first LBA, last LBA, name)] of the used entries of a raw disk's primary GPT."""
    with open(raw, "rb") as f:
        f.seek(SECTOR)
        h = f.read(92)
        entries_lba, n, size = struct.unpack_from("<QII", h, 72)
        f.seek(entries_lba * SECTOR)
        table = f.read(n * size)
    out = []
    for i in range(n):
        e = table[i * size:(i + 1) * size]
        if any(e[:16]):
            first, last = struct.unpack_from("<QQ", e, 32)
            out.append((first, last, e[56:128].decode("utf-16-le").rstrip("\0")))
    return out


def check_grown(disk, label):
    """From outside, after power-off: the table is valid and its last partition reaches the
    disk's end, the ext4 in it fills it and is clean."""
    raw = os.path.join(BUILD, "grown.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", disk, raw], check=True)
    try:
        v = subprocess.run(["sgdisk", "-v", raw], capture_output=True, text=True)
        check("No problems found" in v.stdout, f"{label}: sgdisk -v finds no problem in the grown table ({v.stdout.strip()[-120:]!r})")
        lbas = os.path.getsize(raw) // SECTOR
        first, last, name = gpt_partitions(raw)[-1]
        check(name == "FL_STATE" and last == lbas - 34,
              f"{label}: FL_STATE (partition 4) ends at the last usable sector {lbas - 34} (got {name} ending at {last})")
        part = os.path.join(BUILD, "state.ext4")
        subprocess.run(["dd", f"if={raw}", f"of={part}", "bs=1M", f"skip={first * SECTOR}", f"count={(last + 1 - first) * SECTOR}",
                        "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"], check=True)
        with open(part, "rb") as f:
            f.seek(1024)
            sb = f.read(1024)
        blocks = struct.unpack_from("<I", sb, 4)[0] | (struct.unpack_from("<I", sb, 0x150)[0] << 32 if struct.unpack_from("<I", sb, 0x60)[0] & 0x80 else 0)
        bsize = 1024 << struct.unpack_from("<I", sb, 0x18)[0]
        per_group = struct.unpack_from("<I", sb, 0x20)[0]
        size = (last + 1 - first) * SECTOR
        # ext4 leaves out a last block group too small for its own bitmaps and inode table.
        check(blocks * bsize > STATE_MB << 20 and size // bsize - blocks < per_group,
              f"{label}: the ext4 grew past {STATE_MB} MiB and fills the partition but for less than one block group "
              f"({blocks} blocks of {bsize}: {blocks * bsize >> 20} MiB of {size >> 20} MiB; {per_group} blocks per group)")
        fsck = subprocess.run(["e2fsck", "-fn", part], capture_output=True, text=True)
        check(fsck.returncode == 0, f"{label}: e2fsck -fn finds the grown filesystem clean (rc {fsck.returncode}: {fsck.stdout.strip().splitlines()[-1:]})")
    finally:
        for p in (raw, os.path.join(BUILD, "state.ext4")):
            if os.path.exists(p):
                os.unlink(p)


def context(name):
    d = os.path.join(BUILD, name, "context")
    shutil.rmtree(d, ignore_errors=True)
    # /status answers loopback and FL_STATUS_ALLOW only: the forwarded port arrives from qemu's
    # user-mode gateway, as an operator's monitoring host would from its network.
    contextsh.write(d, {**NET, "FL_ROLE": "superlink", "FL_TLS_ENABLED": "YES", "SET_HOSTNAME": "superlink-0",
                        "FL_STATUS_ALLOW": "192.168.150.0/24"})
    return make_iso(d, os.path.join(BUILD, name, "context.iso"))


def reboot_and_grow(image):
    """Boot 1 (SeaBIOS, pc), resize, boot 2 (OVMF, q35) on the same disk."""
    os.makedirs(os.path.join(BUILD, "vm"), exist_ok=True)
    disk = overlay(image, os.path.join(BUILD, "vm", "disk.qcow2"))
    ctx = context("vm")
    log("boot 1: SeaBIOS, machine pc (context CD on IDE), a fresh per-VM disk")
    vm = boot("appliance-bios-pc", disk, ctx, "bios", "pc")
    try:
        t1, ca1, cert1, tls1, _ = ready(vm, "bios/pc")
        check("own CA created" in tls1, f"bios/pc: first boot creates the CA ({tls1.split('tls: ')[-1][:60]})")
        power_off(vm, "bios/pc")
    finally:
        vm.kill()
    before = json.loads(subprocess.run(["qemu-img", "info", "--output=json", disk], capture_output=True, text=True, check=True).stdout)["virtual-size"]
    subprocess.run(["qemu-img", "resize", "-q", disk, f"+{GROW}"], check=True)
    log(f"disk resized from {before >> 20} to {(before + GROW) >> 20} MiB (what onevm disk-resize does to a qcow2)")
    log("boot 2: OVMF (UEFI), machine q35 (context CD on SATA), the same disk")
    vm = boot("appliance-uefi-q35", disk, ctx, "uefi", "q35")
    try:
        t2, ca2, cert2, tls2, disks = ready(vm, "uefi/q35")
        check(ca1 is not None and ca1 == ca2 and "own CA reused" in tls2,
              f"uefi/q35: the CA of boot 1 survived the reboot (SHA-256 {ca2}; {tls2.split('tls: ')[-1][:40]})")
        check(cert1 == cert2, f"uefi/q35: Flower's port presents boot 1's server certificate (SHA-256 {hashlib.sha256(cert2).hexdigest()[:16]}…)")
        check(f"partition grown from {STATE_MB} to" in disks and f"ext4 grown from {STATE_MB} to" in disks,
              f"uefi/q35: the disks step grew the state partition and its ext4 ({disks.split('step disks: ')[-1]})")
        power_off(vm, "uefi/q35")
    finally:
        vm.kill()
    check_grown(disk, "after boot 2")
    return t1, t2


def one_boot(image, firmware, machine):
    """A fresh disk in one firmware/machine pair: healthy, then the power button."""
    name = f"appliance-{firmware}-{machine}"
    os.makedirs(os.path.join(BUILD, name), exist_ok=True)
    disk = overlay(image, os.path.join(BUILD, name, "disk.qcow2"))
    log(f"{firmware}/{machine}: a fresh disk")
    vm = boot(name, disk, context(name), firmware, machine)
    try:
        ready(vm, f"{firmware}/{machine}")
        power_off(vm, f"{firmware}/{machine}")
    finally:
        vm.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--framework", default="sklearn")
    ap.add_argument("--matrix", action="store_true", help="also SeaBIOS/q35, one fresh boot")
    args = ap.parse_args()
    image = os.path.join(ROOT, "build", "appliance", f"flower-{args.framework}.qcow2")
    if not os.path.exists(image):
        sys.exit(f"appliance-test: {image} missing (make appliance FRAMEWORK={args.framework})")
    global STATE_MB
    with open(image[:-len(".qcow2")] + ".json") as f:
        STATE_MB = json.load(f)["state_mb"]
    os.makedirs(BUILD, exist_ok=True)
    try:
        accelerator()
    except ValueError as e:
        sys.exit(f"appliance-test: {e}")
    try:
        reboot_and_grow(image)
        if args.matrix:
            one_boot(image, "bios", "q35")
    except (GuestSilent, TimeoutError) as e:
        FAILURES.append(str(e))
        log(f"  FAILED: {e}")
    if FAILURES:
        log(f"{len(FAILURES)} check(s) failed:")
        for f in FAILURES:
            log(f"  - {f}")
        sys.exit(1)
    log("all checks passed")


if __name__ == "__main__":
    main()
