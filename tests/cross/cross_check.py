#!/usr/bin/env python3
"""The aarch64 binary against the x86_64 one (issue #22), on this x86_64 machine:

    tests/cross/cross_check.py build/flower-init build/aarch64/flower-init

- the aarch64 file is a static ARM aarch64 executable, no bigger than the x86_64 one;
- run under qemu-aarch64-static (Debian's qemu-user-static), every operator command gives
  byte-identical output and exit status on both architectures: `check` of every example
  context, the OneFlow and VM templates, `join` decoding and re-pointing a join value;
- a SuperNode key made by one architecture is read by the other (same public line), both ways.

Same output on both is the point: validation, templates and key files do not depend on the
machine's word layout, byte order of structs or `char` signedness (unsigned on aarch64).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(argv, cwd=ROOT, stdin=None):
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, input=stdin, timeout=120)
    return p.returncode, p.stdout, p.stderr


def main():
    x86, arm = (os.path.abspath(p) for p in sys.argv[1:3])
    if not QEMU:
        raise SystemExit("cross: qemu-aarch64-static is missing (make setup installs qemu-user-static)")
    desc = subprocess.run(["file", "-b", arm], capture_output=True, text=True, check=True).stdout
    check("ARM aarch64" in desc and "statically linked" in desc, f"{arm}: {desc.strip()}")
    sx, sa = os.path.getsize(x86), os.path.getsize(arm)
    check(sa <= sx, f"aarch64 {sa:,} bytes, x86_64 {sx:,} bytes")
    a = [QEMU, arm]
    code, out, err = run(a + ["version"])
    check(code == 0 and out.startswith("flower-init "), f"version under qemu-aarch64: {out.strip() or err.strip()}")

    cases = []
    for ex in sorted(os.listdir(os.path.join(ROOT, "examples"))):
        if os.path.isdir(os.path.join(ROOT, "examples", ex)):
            cases.append(["check", f"examples/{ex}"])
    cases += [["oneflow-template"], ["oneflow-template", "--one6"], ["oneflow-template", "--vm-context"],
              ["vm-template", "--role", "superlink"], ["vm-template", "--role", "supernode", "--firmware", "UEFI"],
              ["vm-template", "--role", "supernode", "--arch", "aarch64"]]
    ctx = open(os.path.join(ROOT, "examples", "supernode-join", "context.sh")).read()
    m = re.search(r"^FL_JOIN='([^']+)'", ctx, re.M)
    check(m is not None, "examples/supernode-join has an FL_JOIN value")
    if m:
        cases += [["join", m.group(1)], ["join", "--ca-pem", m.group(1)],
                  ["join", "--endpoint", "198.51.100.4:18000", m.group(1)], ["join", "flwr1:cut"]]
    for argv in cases:
        rx, ra = run([x86] + argv), run(a + argv)
        label = " ".join(x if len(x) < 40 else x[:20] + "…" for x in argv)
        same = rx == ra
        check(same, f"{label}: exit {rx[0]}, {len(rx[1])} + {len(rx[2])} bytes of output, identical on both")
        if not same:
            for i, name in ((0, "exit"), (1, "stdout"), (2, "stderr")):
                if rx[i] != ra[i]:
                    print(f"     {name} differs:\n     x86_64:  {str(rx[i])[:300]!r}\n     aarch64: {str(ra[i])[:300]!r}")

    with tempfile.TemporaryDirectory() as d:
        for maker, reader, name in ((a, [x86], "aarch64 → x86_64"), ([x86], a, "x86_64 → aarch64")):
            k = os.path.join(d, f"{len(maker)}.key")
            c1, made, e1 = run(maker + ["node-auth", "--key-file", k, "--comment", "cross"])
            c2, read, e2 = run(reader + ["node-auth", "--key-file", k, "--comment", "cross"])
            check(c1 == 0 and c2 == 0 and made == read and made.startswith("ecdsa-sha2-nistp256 "),
                  f"node key {name}: the same public line ({made.strip()[:40]}…) {e1.strip()} {e2.strip()}")
    if failures:
        print(f"cross: {len(failures)} check(s) failed")
        return 1
    print("cross: the aarch64 binary agrees with the x86_64 one")
    return 0


if __name__ == "__main__":
    sys.exit(main())
