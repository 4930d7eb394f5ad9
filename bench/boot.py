#!/usr/bin/env python3
"""Boot one VM under qemu and timestamp every console line on the host clock.

The harness of ../shared/research/baseline-systemd-vm.md (run-vm.py), generalised to the two
profiles compared in BENCHMARKS.md:
  baseline     Debian 12 + systemd + Flower from bench/baseline/build.sh (marker: the probe's line)
  flower-init  the pinned kernel + flower-init's initramfs + the appliance image + a context CD
               (marker: flower-init's "flower is healthy" line)
Both boot through tests/vm/qemu.py's Vm (the one place that builds qemu command lines), with
the same flags: -accel tcg -cpu max (--accel auto: KVM when a real guest runs under it) -m 2048
-smp N -M pc, serial console on stdout, -nodefaults.

usage: bench/boot.py PROFILE LABEL [--smp N] [--boot direct|bios|uefi] [--extra-qemu ...]   -> one summary line (JSON)

--boot bios|uefi boots the appliance qcow2 (`make appliance`) through its firmware and GRUB
instead of -kernel/-initrd; `make bench-qcow2` interleaves the three.
"""
import argparse, json, os, re, shutil, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import contextsh  # noqa: E402
from qemu import PINNED_KERNEL_DIR, Disk, GuestSilent, Nic, Vm, kernel_path, make_ext4, make_iso  # noqa: E402
B = os.path.join(ROOT, "build")

MARKS = {
    "kernel": re.compile(r"Linux version"),
    "run_init": re.compile(r"Run /init as init process"),
    "marker_baseline": re.compile(r"\[probe up=[0-9.]+\] SUPERLINK-HEALTHY"),
    "marker_flower_init": re.compile(r"flower-init: info: flower healthy"),
    "power_button": re.compile(r"flower-init: .*shutdown requested"),
    "power_off": re.compile(r"reboot: Power down"),
}
MAC = "02:00:c0:a8:96:0a"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile", choices=["baseline", "flower-init"])
    ap.add_argument("label")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--image", default=os.path.join(B, "image", "sklearn", "image.squashfs"),
                    help="flower-init profile: the appliance image disk")
    ap.add_argument("--initramfs", default=os.path.join(B, "initramfs.cpio"),
                    help="flower-init profile, --boot direct: the initramfs (flower-init and its modules)")
    ap.add_argument("--variant", choices=["same", "tls", "db", "default"], default="default",
                    help="flower-init profile: 'same' runs Flower as the baseline does (--insecure, in-memory "
                         "state); 'default' as the appliance does (TLS with its own CA, --database on the state disk); "
                         "'tls' and 'db' are the two halves of the difference (TLS with in-memory state; --insecure "
                         "with the database on the disk)")
    ap.add_argument("--boot", choices=["direct", "bios", "uefi"], default="direct",
                    help="flower-init profile: direct = qemu -kernel/-initrd with the image and a state disk; "
                         "bios/uefi = the appliance qcow2 (make appliance) booted by SeaBIOS/OVMF through GRUB, "
                         "a fresh qcow2 overlay on it per run (OpenNebula's non-persistent image)")
    ap.add_argument("--disk", default=os.path.join(B, "appliance", "flower-sklearn.qcow2"),
                    help="--boot bios|uefi: the appliance disk")
    ap.add_argument("--machine", default="pc", help="qemu machine type (pc: context CD on IDE; q35: on SATA)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--accel", choices=["tcg", "kvm", "auto"], default="tcg",
                    help="the published comparison is TCG on both sides; auto: FLOWER_INIT_ACCEL, else KVM "
                         "only when a real guest runs under it (tests/vm/qemu.py)")
    ap.add_argument("--logdir", default=os.path.join(B, "bench", "logs"))
    ap.add_argument("--qemu-extra", nargs=argparse.REMAINDER, default=[])
    a = ap.parse_args()
    tmp = os.path.join(B, "bench", "run")
    os.makedirs(tmp, exist_ok=True)
    same = dict(memory=2048, smp=a.smp, accel=a.accel, extra=a.qemu_extra, logdir=a.logdir, machine=a.machine)
    if a.profile == "baseline":
        img = os.path.join(tmp, f"{a.label}.img")
        subprocess.run(["cp", "--sparse=always", os.path.join(B, "baseline", "appliance.img"), img], check=True)
        vm = Vm(a.label, os.path.join(B, "baseline", "vmlinuz"), os.path.join(B, "baseline", "initrd.img"),
                "console=ttyS0 root=/dev/vda rw", disks=[Disk(img)], nics=[Nic(MAC)], **same)
        marker = "marker_baseline"
    else:
        # A SuperLink with TLS on and a static IP, as tests/vm/vm_test.py boots it; a fresh
        # state disk each run (first boot: the CA is generated), like the baseline's fresh copy.
        ctx = os.path.join(tmp, f"{a.label}-context")
        shutil.rmtree(ctx, ignore_errors=True)
        variables = {"FL_ROLE": "superlink", "NETWORK": "YES", "ETH0_MAC": MAC,
                     "ETH0_IP": "192.168.150.10", "ETH0_MASK": "255.255.255.0", "ETH0_GATEWAY": "192.168.150.2"}
        if a.variant == "same":
            # The baseline's Flower: --insecure, state in memory.
            variables.update({"FL_TLS_ENABLED": "NO", "FL_DATABASE": ":flwr-in-memory:"})
        elif a.variant == "tls":
            variables.update({"FL_TLS_ENABLED": "YES", "FL_DATABASE": ":flwr-in-memory:"})
        elif a.variant == "db":
            variables.update({"FL_TLS_ENABLED": "NO"})
        else:
            # The appliance's defaults: TLS (its own CA, made at first boot), state on the disk.
            variables.update({"FL_TLS_ENABLED": "YES"})
        contextsh.write(ctx, variables)
        iso = make_iso(ctx, os.path.join(tmp, f"{a.label}.iso"))
        nic = Nic(MAC, user_net="192.168.150.0/24")
        if a.boot == "direct":
            img = make_ext4(os.path.join(tmp, f"{a.label}.img"), "FL_STATE", 256)
            vm = Vm(a.label, kernel_path(PINNED_KERNEL_DIR), a.initramfs, "console=ttyS0 panic=-1",
                    disks=[Disk(a.image, readonly=True), Disk(img)], cdrom=iso, nics=[nic], **same)
        else:
            img = os.path.join(tmp, f"{a.label}.qcow2")
            if os.path.exists(img):
                os.unlink(img)
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", os.path.abspath(a.disk), img], check=True)
            vm = Vm(a.label, None, None, None, disks=[Disk(img, fmt="qcow2", boot=True)], cdrom=iso, nics=[nic],
                    firmware=a.boot, **same)
        marker = "marker_flower_init"
    load0 = os.getloadavg()[0]
    vm.start()
    try:
        vm.wait_for(MARKS[marker].pattern, a.timeout)
        if marker == "marker_flower_init":
            # flower-init stays up after the marker (the baseline's probe powers its VM off):
            # press the ACPI button, as `onevm terminate` does, and time the shutdown too.
            try:
                vm.powerdown()
            except OSError as e:
                print(f"boot.py: power button: {e}", file=sys.stderr)
        vm.wait_exit(max(1.0, a.timeout - vm.elapsed()))
    except (TimeoutError, GuestSilent) as e:
        print(f"boot.py: {e}", file=sys.stderr)
    vm.kill()
    rc = vm.proc.returncode
    os.unlink(img)
    seen = {}
    for t, line in vm.lines:
        for k, rx in MARKS.items():
            if k not in seen and rx.search(line):
                seen[k] = round(t, 3)
    res = {"profile": a.profile if a.profile == "baseline" else f"flower-init/{a.variant}", "label": a.label, "smp": a.smp,
           "boot": a.boot if a.profile == "flower-init" else None,
           "accel": vm.accel_used, "marker": seen.get(marker), "marks": seen, "qemu_exit": round(vm.elapsed(), 3), "rc": rc,
           "hostload": round(load0, 2)}
    print(json.dumps(res))
    return 0 if res["marker"] else 1


if __name__ == "__main__":
    sys.exit(main())
