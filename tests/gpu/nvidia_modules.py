#!/usr/bin/env python3
"""The GPU image's NVIDIA modules against the pinned kernel, without booting (issue #18):

  * `vermagic` of nvidia.ko and nvidia-uvm.ko equals that of the pinned kernel's own modules
    (build/kernel, `make kernel`);
  * every symbol the modules import with a version (`__versions`, `modprobe --dump-modversions`)
    is exported by that kernel with the same CRC: in the headers' Module.symvers of the builder
    (the same kernel build), and, where one of the pinned kernel's own modules imports the same
    symbol, with the CRC that module records;
  * `modinfo -F depends` names only modules the pinned kernel has (nvidia-uvm: nvidia).

    tests/gpu/nvidia_modules.py [build/nvidia/driver]

`make nvidia-vm-test` runs this, then loads nvidia.ko into the pinned kernel under qemu.
"""
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def modinfo(field, path):
    return subprocess.run(["modinfo", "-F", field, path], capture_output=True, text=True, check=True).stdout.strip()


def versions(path):
    """{symbol: crc} a module imports (`modprobe --dump-modversions`)."""
    out = subprocess.run(["modprobe", "--dump-modversions", path], capture_output=True, text=True, check=True).stdout
    return {sym: int(crc, 16) for crc, sym in (l.split() for l in out.splitlines() if l.strip())}


def main():
    driver = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "nvidia", "driver")
    d = json.load(open(os.path.join(driver, "driver.json")))
    kver = d["kernel"]
    kdir = os.path.join(ROOT, "build", "kernel", "lib", "modules", kver)
    if not os.path.isdir(kdir):
        sys.exit(f"nvidia-modules: the pinned kernel {kver} is not in build/kernel (make kernel)")
    own = sorted(glob.glob(os.path.join(kdir, "kernel", "**", "*.ko*"), recursive=True))
    want_magic = modinfo("vermagic", next(p for p in own if p.endswith("/isofs.ko") or p.endswith("/isofs.ko.xz")))
    symvers = {}
    sv = os.path.join(ROOT, "build", "nvidia", "builder", "rootfs", "usr", "src", f"linux-headers-{kver}", "Module.symvers")
    for line in open(sv):
        crc, sym = line.split("\t")[:2]
        symvers[sym] = int(crc, 16)
    # CRCs the pinned kernel's own modules record for what they import (the kernel as shipped).
    seen = {}
    for p in own[::7]:  # a sample is plenty: the common symbols are imported by hundreds
        seen.update(versions(p))
    names = {os.path.basename(p).split(".ko")[0].replace("-", "_") for p in own}
    # What the driver's own modules export (nvidia.ko for nvidia-uvm.ko): `__crc_SYM` values.
    # Since Linux 5.19 a `__crc_SYM` symbol is the offset of SYM's CRC (4 bytes, little endian)
    # in the module's __kcrctab section.
    exported = {}
    for m in d["modules"]:
        ko = os.path.join(driver, "modules", kver, f"{m}.ko")
        out = subprocess.run(["nm", ko], capture_output=True, text=True, check=True).stdout
        tab = ko + ".kcrctab"
        subprocess.run(["objcopy", "-O", "binary", "--only-section=__kcrctab", ko, tab], check=True)
        crcs = open(tab, "rb").read()
        os.unlink(tab)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2].startswith("__crc_"):
                off = int(parts[0], 16)
                exported[parts[2][len("__crc_"):]] = int.from_bytes(crcs[off:off + 4], "little")
            elif len(parts) == 3 and parts[2].startswith("__ksymtab_"):
                exported.setdefault(parts[2][len("__ksymtab_"):], None)
    failures = []
    for m in d["modules"]:
        path = os.path.join(driver, "modules", kver, f"{m}.ko")
        magic = modinfo("vermagic", path)
        if magic != want_magic:
            failures.append(f"{m}.ko: vermagic {magic!r}, the pinned kernel's {want_magic!r}")
        imp = versions(path)
        missing = [s for s in imp if s not in symvers and s not in exported]
        differ = [s for s, c in imp.items() if s in symvers and symvers[s] != c]
        differ_drv = [s for s, c in imp.items() if s not in symvers and exported.get(s) not in (None, c)]
        differ_own = [s for s, c in imp.items() if s in seen and seen[s] != c]
        failures += [f"{m}.ko imports {s}, which {kver} does not export" for s in missing[:5]]
        failures += [f"{m}.ko: {s} CRC differs from Module.symvers" for s in differ[:5]]
        failures += [f"{m}.ko: {s} CRC differs from what the driver's own module exports" for s in differ_drv[:5]]
        failures += [f"{m}.ko: {s} CRC differs from the pinned kernel's modules" for s in differ_own[:5]]
        deps = [x for x in modinfo("depends", path).split(",") if x]
        bad = [x for x in deps if x.replace("-", "_") not in names and x not in [n.replace("-", "_") for n in d["modules"]]]
        failures += [f"{m}.ko depends on {x}, not in the pinned kernel" for x in bad]
        order = [f.split(".ko")[0] for f in d["load_order"]]
        late = [x for x in deps if x not in order[:order.index(m)]]
        failures += [f"{m}.ko depends on {x}, which load_order does not put before it" for x in late]
        print(f"nvidia-modules: {m}.ko: vermagic {magic!r}; {len(imp)} versioned symbols, "
              f"{len([s for s in imp if s in seen])} cross-checked against the pinned kernel's own modules; "
              f"depends: {','.join(deps) or '-'}")
    if failures:
        for f in failures:
            print(f"nvidia-modules: FAILED: {f}")
        sys.exit(1)
    print(f"nvidia-modules: driver {d['version']} fits {kver}")


if __name__ == "__main__":
    main()
