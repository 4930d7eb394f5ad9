#!/usr/bin/env python3
"""Where the bytes of a static binary go, per crate (`make size`; BENCHMARKS.md "Sizes").

Reads an *unstripped* build (the release profile with `strip = false`): `nm -S -C` gives
every function and named datum with its size; each symbol is charged to the crate that
owns it:
- a Rust path `krate::…` to `krate`;
- a trait impl `<T as Trait>::f` to T's crate, or to Trait's crate when T belongs to
  core/alloc/std (`<&T as core::fmt::Debug>` stays std; `<u8 as rustls::Codec>` is rustls);
- generic instances are charged to the crate of their path (`core::ptr::drop_in_place::<X>`
  is core): the heuristics cargo-bloat uses, with the same blind spot (inlined code counts
  where it was inlined, LTO merges crates);
- C and assembly symbols: ring's (`ring_core_*`, `ecp_nistz256_*`, …) to ring, libunwind's
  (C++ names) to libunwind, the rest to musl libc.
Bytes no symbol covers (string literals, anonymous constant tables, unwind tables) are
listed per section as "no symbol". The stripped binary's size is the sum of its allocated
sections, so the table adds up to it within the ELF headers and alignment.

Usage: size_by_crate.py UNSTRIPPED_BINARY [--top N] [--markdown]
"""

import argparse
import collections
import re
import subprocess
import sys

STD = {"core", "alloc", "std", "std_detect", "compiler_builtins", "panic_abort", "panic_unwind", "rustc_demangle"}
RING_C = re.compile(
    r"^(ring_core_|ecp_nistz256|GFp_|aes_|gcm_|ChaCha20|chacha20|poly1305|x25519|sha256_|sha512_|bn_|LIMB|limbs_|"
    r"OPENSSL_|CRYPTO_|nistz|p256_|p384_|k25519|fiat_)"
)
# Sections the loader maps (a stripped binary is these plus headers).
ALLOC_SECTIONS = (".text", ".rodata", ".data.rel.ro", ".eh_frame", ".eh_frame_hdr", ".gcc_except_table", ".data",
                  ".init_array", ".fini_array", ".got", ".got.plt", ".tdata", ".init", ".fini", ".plt", ".rela.dyn")


def split_top(s: str, sep: str) -> tuple[str, str] | None:
    """`s` split at the first `sep` outside <>, (), []: for `<A as B>::f`."""
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c in "<([":
            depth += 1
        elif c in ">)]":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            return s[:i], s[i + len(sep):]
        i += 1
    return None


def first_crate(path: str) -> str | None:
    """The crate of a type or path: its first `::` segment, after `&`, `*const`, `dyn`, `[`, `(`."""
    p = path.strip()
    while True:
        for pre in ("&mut ", "&", "*const ", "*mut ", "dyn ", "impl ", "[", "(", "unsafe ", "extern ", "for<'a> "):
            if p.startswith(pre):
                p = p[len(pre):].lstrip()
                break
        else:
            break
    if p.startswith("<"):
        return crate_of(p)
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", p)
    return m.group(1) if m else None


def crate_of(name: str) -> str:
    """The crate a demangled symbol belongs to (see the module doc)."""
    if name.startswith("<"):
        # `<A as B>::rest` or `<A>::rest`: find the matching '>'.
        depth = 0
        for i, c in enumerate(name):
            if c == "<":
                depth += 1
            elif c == ">":
                depth -= 1
                if depth == 0:
                    inner = name[1:i]
                    break
        else:
            return "?"
        parts = split_top(inner, " as ")
        if parts:
            self_crate = first_crate(parts[0])
            trait_crate = first_crate(parts[1])
            if self_crate in STD or self_crate is None:
                return trait_crate or self_crate or "std"
            return self_crate
        return first_crate(inner) or "std"
    if "::" in name and not re.search(r"[ (]", name.split("::")[0]):
        return name.split("::")[0]
    if RING_C.match(name):
        return "ring (C/asm)"
    if "libunwind" in name or name.startswith("_Unwind") or name.startswith("__unw_"):
        return "libunwind"
    if "(" in name or " " in name:
        return "libunwind"  # the only C++ in the binary
    return "musl libc (C)"


V0_CRATE = re.compile(r"C(?:s([0-9A-Za-z]*)_)?(\d+)_?")


def v0_crates(raw: str) -> list[tuple[str, str]]:
    """(crate, disambiguator) of each crate root in a v0-mangled name (`Cs<dis>_<len><name>`)."""
    out = []
    for m in V0_CRATE.finditer(raw):
        n = int(m.group(2))
        out.append((raw[m.end():m.end() + n], m.group(1) or ""))
    return out


def symbols(binary: str):
    """(size, kind, demangled name, raw name) of each sized symbol, once per address."""
    def nm(*flags):
        out = subprocess.run(["nm", "-S", "--size-sort", "--radix=d", *flags, binary], check=True, capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4:
                yield parts
    raw = {(a, k): n for a, _, k, n in nm()}
    seen = set()
    for addr, size, kind, name in nm("-C"):
        if addr in seen:
            continue  # aliases (one body, several names) count once
        seen.add(addr)
        yield int(size), kind, name, raw.get((addr, kind), name)


def sections(binary: str) -> dict[str, int]:
    out = subprocess.run(["size", "-A", binary], check=True, capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].startswith(".") and f[1].isdigit():
            sizes[f[0]] = int(f[1])
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--top", type=int, default=25, help="crates listed by name; the rest are summed")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()

    by_crate = collections.Counter()
    code = collections.Counter()
    data = collections.Counter()
    syms = list(symbols(a.binary))
    # Two versions of one crate (v0 mangling: `RUSTFLAGS=-C symbol-mangling-version=v0`) are told
    # apart by their disambiguators, and each copy named by a module only it has.
    copies = collections.defaultdict(collections.Counter)
    modules = collections.defaultdict(set)
    owner = []
    for size, kind, name, raw in syms:
        c = crate_of(name)
        dis = next((d for k, d in v0_crates(raw) if k == c), "")
        copies[c][dis] += size
        m = re.match(re.escape(c) + r"::([a-z_0-9]+)::", name)
        if m:
            modules[(c, dis)].add(m.group(1))
        owner.append((size, kind, c, dis))
    label = {}
    for c, ds in copies.items():
        # Generic code instantiated in another crate may carry a stray disambiguator: only
        # copies of 4 KiB or more count as versions; smaller ones join the largest.
        # The precompiled std, core and alloc use legacy mangling (no disambiguator): "" is
        # never a copy of its own.
        big = [d for d, n in ds.items() if n >= 4096 and d]
        main = max(big or ds, key=ds.get)
        for d in ds:
            if d not in big:
                label[(c, d)] = c
        if len(big) > 1:
            for d in big:
                own = sorted(modules[(c, d)] - set().union(*(modules[(c, o)] for o in big if o != d)))
                label[(c, d)] = f"{c} (copy with {', '.join(own[:2]) or 'no own module'})"
            for d in ds:
                if d not in big:
                    label[(c, d)] = label[(c, main)]
    for size, kind, c, dis in owner:
        key = label.get((c, dis), c)
        by_crate[key] += size
        (code if kind in "tTwW" else data)[key] += size
    secs = sections(a.binary)
    named_text = sum(s for s, k, _, _ in syms if k in "tTwW")
    named_data = sum(s for s, k, _, _ in syms if k not in "tTwW")
    mapped = {s: n for s, n in secs.items() if s in ALLOC_SECTIONS}
    total = sum(mapped.values())

    rows = by_crate.most_common()
    top, rest = rows[: a.top], rows[a.top:]
    lines = []
    if a.markdown:
        lines.append("| crate | bytes | code | data | share |")
        lines.append("|---|---:|---:|---:|---:|")
        fmt = "| {} | {:,} | {:,} | {:,} | {:.1f} % |"
    else:
        fmt = "{:<28} {:>10,} {:>10,} {:>10,} {:>6.1f} %"
        lines.append(f"{'crate':<28} {'bytes':>10} {'code':>10} {'data':>10}  share")
    for c, n in top:
        lines.append(fmt.format(c, n, code[c], data[c], 100 * n / total))
    if rest:
        n = sum(v for _, v in rest)
        lines.append(fmt.format(f"{len(rest)} other crates", n, sum(code[c] for c, _ in rest),
                                sum(data[c] for c, _ in rest), 100 * n / total))
    unnamed_text = secs.get(".text", 0) - named_text
    unnamed_ro = sum(mapped.get(s, 0) for s in (".rodata", ".data.rel.ro", ".data", ".tdata")) - named_data
    unwind = sum(mapped.get(s, 0) for s in (".eh_frame", ".eh_frame_hdr", ".gcc_except_table"))
    other = total - named_text - named_data - unnamed_text - unnamed_ro - unwind
    for label, n, is_code in (("no symbol: .rodata/.data (literals, anonymous tables)", unnamed_ro, False),
                              ("no symbol: .text (padding, stubs)", unnamed_text, True),
                              ("unwind tables (.eh_frame, .gcc_except_table)", unwind, False),
                              ("other sections", other, False)):
        c, d = (n, 0) if is_code else (0, n)
        lines.append(fmt.format(label, n, c, d, 100 * n / total) if a.markdown else
                     f"{label:<28} {n:>10,} {c:>10,} {d:>10,} {100 * n / total:>6.1f} %")
    lines.append(fmt.format("**mapped sections, total**" if a.markdown else "mapped sections, total", total,
                            secs.get(".text", 0), total - secs.get(".text", 0), 100.0))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
