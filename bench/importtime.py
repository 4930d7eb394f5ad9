#!/usr/bin/env python3
"""Where Flower's own start goes, inside the appliance image, under the VM harness (issue #17).

    python3 bench/importtime.py [--image build/image/sklearn/image.squashfs] [--json OUT]
    make bench-importtime

Boots the pinned kernel (build/kernel) under qemu with the accelerator tests/vm/qemu.py picks
(TCG here) and the same machine as bench/boot.py (`-m 2048 -smp 1`, the image as a read-only
virtio disk). A busybox /init mounts the squashfs image, chroots into it and runs the image's own
Python with `-X importtime` for what each Flower process imports before it does any work:

  superlink   `flower-superlink`'s entry (flwr.superlink.cli.flower_superlink), page cache cold,
              as at a boot
  superlink-warm  the same again, its files now in the page cache: the difference is reading
              and decompressing the squashfs blocks; the rest is the CPU (unmarshalling the
              .pyc files and running the modules' top-level code)
  serverapp   `flwr-serverapp`'s entry and the bundled app's ServerApp module
  clientapp   `flwr-clientapp`'s entry and the bundled app's ClientApp module
  supernode   `flower-supernode`'s entry

For each it prints the wall time (host clock, from the console's stamps), Python's own import
total, and the top-level packages by self time. Nothing is asserted: it is a measurement.
"""
import argparse
import json
import os
import re
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
from qemu import PINNED_KERNEL_DIR, Disk, Vm, accelerator, busybox_initramfs, kernel_path  # noqa: E402
from mkinitramfs import closure  # noqa: E402

PY = "/opt/flower/venv/bin/python"
APP = "/opt/flower/app"
CASES = [
    ("superlink", "from flwr.superlink.cli import flower_superlink"),
    ("superlink-warm", "from flwr.superlink.cli import flower_superlink"),
    ("serverapp", "from flwr.superlink.cli import flwr_serverapp; import appliance_app.server_app"),
    ("clientapp", "from flwr.supernode.cli import flwr_clientapp; import appliance_app.client_app"),
    ("supernode", "from flwr.supernode.cli import flower_supernode"),
    # With --prefetch LIST: the same cold start while a background reader pulls LIST's files
    # (paths inside the image, one per line) into the page cache, as a boot could.
    ("superlink-prefetch", "from flwr.superlink.cli import flower_superlink"),
]
MODULES = ["virtio_pci", "virtio_blk", "squashfs"]
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def initramfs(work, cases, prefetch=None):
    mroot = os.path.join(PINNED_KERNEL_DIR, "lib", "modules")
    (ver,) = os.listdir(mroot)
    moddir = os.path.join(mroot, ver)
    mods, paths, _, _, missing = closure(moddir, MODULES)
    if missing:
        sys.exit(f"importtime: modules not in {moddir}/modules.dep: {', '.join(missing)}")
    files = [(f"mod/{m}.ko", open(os.path.join(moddir, paths[m]), "rb").read(), 0o644) for m in mods]
    if prefetch:
        files.append(("prefetch.list", open(prefetch, "rb").read(), 0o644))

    def before(name):
        if name != "superlink-prefetch":
            return ""
        return ("/bin/busybox sync; /bin/busybox echo 3 > /proc/sys/vm/drop_caches\n"
                "(cd /mnt && /bin/busybox xargs /bin/busybox cat < /prefetch.list > /dev/null) &\n")
    runs = "".join(
        before(name) +
        f"/bin/busybox echo \"IMPORTTIME-BEGIN {name} io=$(/bin/busybox cat /sys/block/vda/stat)\"\n"
        f"PYTHONPATH={APP} /bin/busybox chroot /mnt {PY} -X importtime -c '{code}' 2>&1\n"
        f"/bin/busybox echo \"IMPORTTIME-END {name} rc=$? io=$(/bin/busybox cat /sys/block/vda/stat)\"\n"
        for name, code in cases)
    script = ("/bin/busybox dmesg -n 1\n"
              "/bin/busybox mount -t proc proc /proc\n"
              "/bin/busybox mount -t sysfs sys /sys\n"
              "/bin/busybox mount -t devtmpfs dev /dev\n"
              + "".join(f"/bin/busybox insmod /mod/{m}.ko\n" for m in mods)
              + "/bin/busybox mkdir -p /mnt\n"
              "n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do /bin/busybox sleep 0.1; n=$((n+1)); done\n"
              "/bin/busybox mount -t squashfs -o ro /dev/vda /mnt || /bin/busybox echo 'IMPORTTIME-FAIL mount'\n"
              "/bin/busybox mount -t proc proc /mnt/proc\n"
              "/bin/busybox mount -t devtmpfs dev /mnt/dev\n"
              "/bin/busybox mount -t tmpfs tmp /mnt/tmp\n"
              "/bin/busybox echo 3 > /proc/sys/vm/drop_caches\n"
              + runs +
              "/bin/busybox echo IMPORTTIME-DONE\n"
              "/bin/busybox poweroff -f\n")
    return busybox_initramfs(os.path.join(work, "initrd.cpio"), script, files)


def summarize(lines):
    """Python's import total (the outermost imports' cumulative times) and self time per
    top-level package, in seconds."""
    total, per = 0, Counter()
    for line in lines:
        m = LINE.search(line)
        if not m:
            continue
        self_us, cum_us, indent, name = int(m.group(1)), int(m.group(2)), len(m.group(3)), m.group(4)
        per[name.split(".")[0]] += self_us
        if indent == 1:  # `import time: self | cumulative | name`: one space before a top-level one
            total += cum_us
    return total / 1e6, {k: round(v / 1e6, 3) for k, v in per.most_common()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default=os.path.join(ROOT, "build", "image", "sklearn", "image.squashfs"))
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--prefetch", help="a list of files inside the image (relative paths) for the superlink-prefetch case")
    ap.add_argument("--cases", default=",".join(n for n, _ in CASES if n != "superlink-prefetch"), help="which, comma-separated, in the order given")
    a = ap.parse_args()
    if not os.path.exists(a.image):
        sys.exit(f"importtime: no image at {a.image} (make image)")
    work = os.path.join(ROOT, "build", "bench", "importtime")
    os.makedirs(work, exist_ok=True)
    kernel = kernel_path(PINNED_KERNEL_DIR)
    accel, _ = accelerator()
    known = dict(CASES)
    wanted = a.cases.split(",")
    if unknown := [c for c in wanted if c not in known]:
        sys.exit(f"importtime: unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if "superlink-prefetch" in wanted and not a.prefetch:
        sys.exit("importtime: the superlink-prefetch case needs --prefetch LIST")
    initrd = initramfs(work, [(c, known[c]) for c in wanted], a.prefetch)
    vm = Vm("importtime", kernel, initrd, "console=ttyS0 panic=-1", machine="pc", memory=2048,
            disks=[Disk(a.image, readonly=True)], logdir=os.path.join(ROOT, "build", "vm-logs"))
    vm.start()
    try:
        vm.wait_for(r"IMPORTTIME-(DONE|FAIL)", a.timeout)
        vm.wait_exit(60)
    finally:
        vm.kill()
    results, cur, begin, body, io_before = {}, None, 0.0, [], (0, 0)
    for t, line in list(vm.lines):
        if (m := re.search(r"IMPORTTIME-BEGIN (\S+) io=\s*(\d+)\s+\d+\s+(\d+)", line)):
            cur, begin, body, io_before = m.group(1), t, [], (int(m.group(2)), int(m.group(3)))
        elif (m := re.search(r"IMPORTTIME-END (\S+) rc=(\d+) io=\s*(\d+)\s+\d+\s+(\d+)", line)) and cur:
            total, per = summarize(body)
            # /sys/block/vda/stat: reads completed, merged, sectors read, ... (cumulative)
            ios, sectors = int(m.group(3)), int(m.group(4))
            prev_ios, prev_sectors = io_before
            results[cur] = {"wall_s": round(t - begin, 2), "rc": int(m.group(2)), "imports_s": round(total, 2),
                            "disk_reads": ios - prev_ios, "disk_mb_read": round((sectors - prev_sectors) * 512 / 1e6, 1),
                            "modules": sum(1 for b in body if LINE.search(b)), "self_s_by_package": per}
            cur = None
        elif cur:
            body.append(line)
    print(f"importtime: {accel}, image {os.path.relpath(a.image, ROOT)}")
    for name, r in results.items():
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(r["self_s_by_package"].items())[:a.top])
        print(f"{name:15} wall {r['wall_s']:6.1f} s  imports {r['imports_s']:6.1f} s  {r['modules']} modules"
              f"  read {r['disk_mb_read']} MB in {r['disk_reads']} requests"
              f"  rc={r['rc']}\n{'':15} {top}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"accel": accel, "image": a.image, "cases": results}, f, indent=1)
    return 0 if results and all(r["rc"] == 0 for r in results.values()) else 1



if __name__ == "__main__":
    sys.exit(main())
