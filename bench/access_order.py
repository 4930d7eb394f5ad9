#!/usr/bin/env python3
"""An image packed in Flower's start order, to measure whether the order matters (issue #17).

    python3 bench/access_order.py [--rootfs build/image/sklearn/rootfs] [--out build/bench/sorted.squashfs]
    python3 bench/importtime.py --image build/bench/sorted.squashfs --cases superlink,superlink-warm

Runs the image's own Python in ROOTFS (chroot, read-only bind mount, in a private mount
namespace: nothing is written to the image, nothing stays mounted) under `strace -f` (apt
install strace) for what each Flower process imports before it does any work:
flower-superlink's and flower-supernode's entry modules, then flwr-serverapp's and
flwr-clientapp's with the bundled app's modules. The files they open (regular files inside the
image, symbolic links resolved inside it), first access first, become a `mksquashfs -sort`
file (the highest priority first), and the rootfs is packed as image/build.sh packs it plus
`-sort`: Flower's start then reads consecutive blocks, and its small files (the .pyc of ~1,500
modules) share squashfs fragment blocks with the files read next to them.

Measured (BENCHMARKS.md, "Flower's start under TCG"): 32 % fewer bytes read at a cold start,
no gain in wall time under TCG; image/build.sh does not sort.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import deque

ENTRIES = [
    "from flwr.superlink.cli import flower_superlink",
    "from flwr.supernode.cli import flower_supernode",
    "from flwr.superlink.cli import flwr_serverapp; import appliance_app.server_app",
    "from flwr.supernode.cli import flwr_clientapp; import appliance_app.client_app",
]
OPEN = re.compile(r'open(?:at)?\((?:AT_FDCWD, )?"((?:[^"\\]|\\.)*)", ([^)]*)\) = \d+')
# mksquashfs priorities are -32768..32767: listed files get 32767 down, the rest keeps 0.
TOP = 32767


def trace(rootfs, code, out):
    """strace -f the image's Python importing `code`, chrooted into a read-only ROOTFS."""
    script = r'''
        set -e
        root=$1; out=$2; code=$3
        mount --bind "$root" "$root"
        mount -o remount,bind,ro "$root"
        mount -t proc proc "$root/proc"
        mount --bind /dev "$root/dev"
        mount -t tmpfs tmp "$root/tmp"
        exec strace -f -qq -e trace=open,openat -e status=successful -o "$out" \
            chroot "$root" /usr/bin/env -i PATH=/opt/flower/venv/bin:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 \
            PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/flower/app /opt/flower/venv/bin/python -c "$code"
    '''
    r = subprocess.run(["unshare", "--mount", "--fork", "--propagation", "private", "/bin/sh", "-c", script,
                        "sh", rootfs, out, code], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"access_order: `{code}` failed in {rootfs} (exit {r.returncode}):\n{r.stderr[-2000:]}")


def resolve(rootfs, path):
    """`path` as seen inside the image -> the regular file it names there (symbolic links
    followed inside ROOTFS, as the chrooted process saw them), relative to ROOTFS; None for
    anything else."""
    parts, cur, hops = deque(path.split("/")), [], 0
    while parts:
        part = parts.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            cur = cur[:-1]
            continue
        full = os.path.join(rootfs, *cur, part)
        if os.path.islink(full):
            hops += 1
            if hops > 40:
                return None
            target = os.readlink(full)
            if target.startswith("/"):
                cur = []
            parts.extendleft(reversed(target.split("/")))
            continue
        cur.append(part)
    rel = "/".join(cur)
    # mksquashfs reads a sort file's lines as `PATH PRIORITY`: no whitespace in PATH.
    return rel if rel and not any(c.isspace() for c in rel) and os.path.isfile(os.path.join(rootfs, rel)) else None


def order(rootfs, traces):
    files, seen = [], set()
    for t in traces:
        for line in open(t, errors="replace"):
            m = OPEN.search(line)
            if not m or "O_DIRECTORY" in m.group(2):
                continue
            path = m.group(1)
            if not path.startswith("/") or path.startswith(("/proc/", "/dev/", "/sys/", "/tmp/")):
                continue
            rel = resolve(rootfs, path)
            if rel and rel not in seen:
                seen.add(rel)
                files.append(rel)
    return files


def main():
    import argparse
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rootfs", default=os.path.join(root, "build", "image", "sklearn", "rootfs"))
    ap.add_argument("--out", default=os.path.join(root, "build", "bench", "sorted.squashfs"))
    a = ap.parse_args()
    if not shutil.which("strace"):
        sys.exit("access_order: needs strace (apt install strace)")
    rootfs = os.path.realpath(a.rootfs)
    if not os.path.isdir(os.path.join(rootfs, "opt", "flower", "venv")):
        sys.exit(f"access_order: no image rootfs at {rootfs} (make image)")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    sort_file = a.out + ".sort"
    with tempfile.TemporaryDirectory() as tmp:
        traces = []
        for i, code in enumerate(ENTRIES):
            traces.append(os.path.join(tmp, f"{i}.strace"))
            trace(rootfs, code, traces[-1])
        files = order(rootfs, traces)[:TOP]
    if len(files) < 100:
        sys.exit(f"access_order: only {len(files)} files seen: is Flower installed in {rootfs}?")
    # mksquashfs matches sort entries by the file's inode: absolute paths of this build's tree.
    with open(sort_file, "w") as f:
        for i, rel in enumerate(files):
            f.write(f"{os.path.join(rootfs, rel)} {TOP - i}\n")
    size = sum(os.path.getsize(os.path.join(rootfs, r)) for r in files)
    print(f"access_order: {len(files)} files ({size / 1e6:.1f} MB) in start order -> {sort_file}")
    # image/build.sh's squashfs flags, plus -sort.
    subprocess.run(["mksquashfs", rootfs, a.out, "-quiet", "-no-progress", "-comp", "lz4", "-b", "128K",
                    "-noappend", "-xattrs", "-sort", sort_file], check=True, stdout=subprocess.DEVNULL)
    print(f"access_order: {a.out} ({os.path.getsize(a.out):,} bytes)")


if __name__ == "__main__":
    main()
