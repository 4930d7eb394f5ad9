#!/usr/bin/env python3
"""Build flower-init's initramfs: a cpio (newc) archive holding

    /init                          the static flower-init binary
    /lib/modules/<ver>/…           only the modules the appliance needs, with their dependencies
    /lib/modules/<ver>/modules.{dep,alias,builtin}   trimmed to those modules
    /dev/console, /dev/null        (the kernel opens /dev/console for init before devtmpfs exists)
    /proc /sys /dev /run /tmp /newroot   empty mountpoints

usage: initramfs/mkinitramfs.py --kernel build/kernel --init build/flower-init --out FILE
                                [--arch x86_64|aarch64] [--compress none|gzip]

The module list is initramfs/modules.txt (one name per line, `#` comments; a line ending in
`[ARCH ...]` is for those architectures only). A listed module the kernel has built in is
skipped; one it has neither built in nor as a file is an error. Compression: none
by default — under TCG the kernel's decompressor runs emulated and costs more than copying the
few extra megabytes through fw_cfg (measured in BENCHMARKS.md).
"""
import argparse, gzip, io, os, stat, sys

HERE = os.path.dirname(os.path.abspath(__file__))


ARCHES = ("x86_64", "aarch64")


def read_list(path, arch="x86_64"):
    """Module names of modules.txt for one architecture: `name` (every one) or `name [a b]`."""
    names = []
    for no, line in enumerate(open(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, tag = line.partition("[")
        only = tag.rstrip("]").split() if tag else list(ARCHES)
        bad = [a for a in only if a not in ARCHES] + ([] if not tag or tag.endswith("]") else ["(no closing ])"])
        if bad or len(name.split()) != 1:
            sys.exit(f"mkinitramfs: {path}:{no}: {line!r}: expected `module` or `module [arch ...]` with arch in {', '.join(ARCHES)}")
        if arch in only:
            names.append(name.strip().replace("-", "_"))
    return names


def modname(path):
    base = os.path.basename(path)
    return base.split(".ko")[0].replace("-", "_")


def closure(moddir, wanted):
    deps = {}
    paths = {}
    for line in open(os.path.join(moddir, "modules.dep")):
        if ":" not in line:
            continue
        p, rest = line.split(":", 1)
        n = modname(p)
        paths[n] = p.strip()
        deps[n] = [modname(d) for d in rest.split()]
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        builtin = {modname(l.strip()) for l in open(bpath) if l.strip()}
    out, missing = [], []

    def visit(n):
        if n in out or n in builtin:
            return
        if n not in deps:
            missing.append(n)
            return
        for d in deps[n]:
            visit(d)
        out.append(n)

    for n in wanted:
        visit(n)
    return out, paths, deps, builtin, missing


class Cpio:
    """newc writer (cpio -H newc), enough for files, directories, symlinks and device nodes."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08X}" for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\0" * ((4 - (110 + len(name_b)) % 4) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * ((4 - len(data) % 4) % 4))

    def dir(self, name, perm=0o755):
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name, data, perm=0o644):
        self._entry(name, stat.S_IFREG | perm, data)

    def chardev(self, name, major, minor, perm=0o600):
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", required=True, help="extracted kernel package (lib/modules/<ver>)")
    ap.add_argument("--init", required=True, help="the static flower-init binary")
    ap.add_argument("--out", required=True)
    ap.add_argument("--modules", default=os.path.join(HERE, "modules.txt"))
    ap.add_argument("--arch", choices=ARCHES, default="x86_64", help="the kernel's architecture (modules.txt tags)")
    ap.add_argument("--compress", choices=["none", "gzip"], default="none")
    a = ap.parse_args()
    mroot = os.path.join(a.kernel, "lib", "modules")
    (ver,) = os.listdir(mroot)
    moddir = os.path.join(mroot, ver)
    mods, paths, deps, builtin, missing = closure(moddir, read_list(a.modules, a.arch))
    if missing:
        sys.exit(f"mkinitramfs: modules not in {moddir}/modules.dep: {', '.join(missing)}")
    c = Cpio()
    for d in ["dev", "proc", "sys", "run", "tmp", "newroot", "lib", "lib/modules", f"lib/modules/{ver}"]:
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    made = set()
    total = 0
    for n in mods:
        rel = paths[n]
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = f"lib/modules/{ver}/" + "/".join(parts[:i])
            if d not in made:
                c.dir(d)
                made.add(d)
        data = open(os.path.join(moddir, rel), "rb").read()
        total += len(data)
        c.file(f"lib/modules/{ver}/{rel}", data)
    keep = set(mods)
    dep_lines = "".join(f"{paths[n]}: {' '.join(paths[d] for d in deps[n])}\n".replace(": \n", ":\n") for n in mods)
    c.file(f"lib/modules/{ver}/modules.dep", dep_lines.encode())
    alias_lines = "".join(l for l in open(os.path.join(moddir, "modules.alias"))
                          if l.startswith("alias ") and len(l.split()) >= 3 and l.split()[2].replace("-", "_") in keep)
    c.file(f"lib/modules/{ver}/modules.alias", alias_lines.encode())
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        c.file(f"lib/modules/{ver}/modules.builtin", open(bpath, "rb").read())
    init = open(a.init, "rb").read()
    c.file("init", init, 0o755)
    data = c.finish()
    if a.compress == "gzip":
        data = gzip.compress(data, compresslevel=6)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, a.out)
    print(f"mkinitramfs: {a.out}: {len(data)} bytes ({len(mods)} modules, {total} bytes; init {len(init)} bytes; kernel {ver})")


if __name__ == "__main__":
    main()
