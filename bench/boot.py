#!/usr/bin/env python3
"""Boot one VM under qemu and timestamp every console line on the host clock.

The harness of ../shared/research/baseline-systemd-vm.md (run-vm.py), generalised to the two
profiles compared in BENCHMARKS.md:
  baseline     Debian 12 + systemd + Flower from bench/baseline/build.sh (marker: the probe's line)
  flower-init  the pinned kernel + flower-init's initramfs + the appliance image + a context CD
               (marker: flower-init's "flower is healthy" line)
Both use the same qemu flags: -accel tcg (KVM when usable) -cpu max -m 2048 -smp N -M pc.

usage: bench/boot.py PROFILE LABEL [--smp N] [--extra-qemu ...]   -> one summary line (JSON)
"""
import argparse, json, os, re, select, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import contextsh  # noqa: E402
from qemu import kernel_path, kvm_usable, make_ext4, make_iso  # noqa: E402
B = os.path.join(ROOT, "build")

MARKS = {
    "kernel": re.compile(rb"Linux version"),
    "run_init": re.compile(rb"Run /init as init process"),
    "marker_baseline": re.compile(rb"\[probe up=[0-9.]+\] SUPERLINK-HEALTHY"),
    "marker_flower_init": re.compile(rb"flower-init: info: flower healthy"),
    "power_button": re.compile(rb"flower-init: .*shutdown requested"),
    "power_off": re.compile(rb"reboot: Power down"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile", choices=["baseline", "flower-init"])
    ap.add_argument("label")
    ap.add_argument("--smp", default="1")
    ap.add_argument("--image", default=os.path.join(B, "image", "sklearn", "image.squashfs"),
                    help="flower-init profile: the appliance image disk")
    ap.add_argument("--variant", choices=["same", "default"], default="default",
                    help="flower-init profile: 'same' runs Flower as the baseline does (--insecure, in-memory "
                         "state); 'default' as the appliance does (TLS with its own CA, --database on the state disk)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--accel", choices=["tcg", "kvm", "auto"], default="tcg",
                    help="the published comparison is TCG on both sides; auto uses KVM when it works")
    ap.add_argument("--logdir", default=os.path.join(B, "bench", "logs"))
    ap.add_argument("--qemu-extra", nargs=argparse.REMAINDER, default=[])
    a = ap.parse_args()
    os.makedirs(a.logdir, exist_ok=True)
    use_kvm = a.accel == "kvm" or (a.accel == "auto" and kvm_usable())
    accel = ["-accel", "kvm"] if use_kvm else ["-accel", "tcg"]
    cmd = ["qemu-system-x86_64", *accel, "-cpu", "max", "-m", "2048", "-smp", a.smp,
           "-nographic", "-no-reboot"]
    tmp = os.path.join(B, "bench", "run")
    os.makedirs(tmp, exist_ok=True)
    if a.profile == "baseline":
        img = os.path.join(tmp, f"{a.label}.img")
        subprocess.run(["cp", "--sparse=always", os.path.join(B, "baseline", "appliance.img"), img], check=True)
        cmd += ["-kernel", os.path.join(B, "baseline", "vmlinuz"), "-initrd", os.path.join(B, "baseline", "initrd.img"),
                "-append", "console=ttyS0 root=/dev/vda rw",
                "-drive", f"file={img},format=raw,if=virtio",
                "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
        marker = "marker_baseline"
    else:
        # A SuperLink with TLS on and a static IP, as tests/vm/vm_test.py boots it; a fresh
        # state disk each run (first boot: the CA is generated), like the baseline's fresh copy.
        ctx = os.path.join(tmp, f"{a.label}-context")
        shutil.rmtree(ctx, ignore_errors=True)
        variables = {"FL_ROLE": "superlink", "NETWORK": "YES", "ETH0_MAC": "02:00:c0:a8:96:0a",
                     "ETH0_IP": "192.168.150.10", "ETH0_MASK": "255.255.255.0", "ETH0_GATEWAY": "192.168.150.2"}
        if a.variant == "same":
            # The baseline's Flower: --insecure, state in memory.
            variables.update({"FL_TLS_ENABLED": "NO", "FL_DATABASE": ":flwr-in-memory:"})
        else:
            # The appliance's defaults: TLS (its own CA, made at first boot), state on the disk.
            variables.update({"FL_TLS_ENABLED": "YES"})
        contextsh.write(ctx, variables)
        iso = make_iso(ctx, os.path.join(tmp, f"{a.label}.iso"))
        img = make_ext4(os.path.join(tmp, f"{a.label}.img"), "FL_STATE", 256)
        kernel = kernel_path(os.path.join(B, "kernel"))
        monitor = os.path.join(tmp, f"{a.label}.monitor")
        cmd += ["-kernel", kernel, "-initrd", os.path.join(B, "initramfs.cpio"), "-append", "console=ttyS0 panic=-1",
                "-drive", f"file={a.image},format=raw,if=virtio,readonly=on",
                "-drive", f"file={img},format=raw,if=virtio",
                "-drive", f"file={iso},if=ide,index=2,media=cdrom,readonly=on",
                "-netdev", "user,id=n0,restrict=on,net=192.168.150.0/24",
                "-device", "virtio-net-pci,netdev=n0,mac=02:00:c0:a8:96:0a",
                "-monitor", f"unix:{monitor},server,nowait"]
        marker = "marker_flower_init"
    cmd += a.qemu_extra
    seen = {}
    log = open(os.path.join(a.logdir, f"{a.label}.log"), "wb", buffering=0)
    log.write(("# cmd: " + " ".join(cmd) + "\n").encode())
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    buf = b""

    def handle(line):
        t = time.monotonic() - t0
        log.write(b"%9.3f " % t + line.rstrip(b"\r\n") + b"\n")
        for k, rx in MARKS.items():
            if k not in seen and rx.search(line):
                seen[k] = round(t, 3)
                if k == "marker_flower_init":
                    power_button()

    def power_button():
        """flower-init stays up after the marker (the baseline's probe powers its VM off):
        press the ACPI button, as `onevm terminate` does, and time the shutdown too."""
        import socket
        try:
            with socket.socket(socket.AF_UNIX) as m:
                m.settimeout(5)
                m.connect(monitor)
                m.sendall(b"system_powerdown\n")
                time.sleep(0.2)
        except OSError as e:
            print(f"boot.py: power button: {e}", file=sys.stderr)

    deadline = t0 + a.timeout
    while True:
        r, _, _ = select.select([p.stdout], [], [], 1.0)
        if r:
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                handle(line)
        if time.monotonic() > deadline:
            p.kill()
            break
    if buf:
        handle(buf)
    rc = p.wait()
    os.unlink(img)
    res = {"profile": a.profile if a.profile == "baseline" else f"flower-init/{a.variant}", "label": a.label, "smp": a.smp, "accel": accel[1], "marker": seen.get(marker),
           "marks": seen, "qemu_exit": round(time.monotonic() - t0, 3), "rc": rc, "hostload": round(load0, 2)}
    print(json.dumps(res))
    return 0 if res["marker"] else 1


if __name__ == "__main__":
    sys.exit(main())
