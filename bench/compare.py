#!/usr/bin/env python3
"""Qemu start -> SuperLink /health: flower-init against the Debian + systemd baseline,
interleaved (baseline, flower-init, baseline, …) so both see the same machine load.

    bench/compare.py [--runs 3] [--smp 1]      (make bench-boot; needs make baseline initramfs image)

Prints one JSON line per boot (bench/boot.py) and then the medians, their ratio, and
flower-init's per-step medians taken from its console ("step NAME: ok (S s)").
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEP = re.compile(r"flower-init: info: step (\w+): \w+ \(([0-9.]+)s\)")


def boot(profile, label, smp):
    argv = [sys.executable, os.path.join(HERE, "boot.py")]
    argv += ["baseline"] if profile == "baseline" else ["flower-init", "--variant", profile.split("/")[1]]
    out = subprocess.run(argv + [label, "--smp", smp], capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(res), flush=True)
    return res


def steps(label):
    found = {}
    with open(os.path.join(ROOT, "build", "bench", "logs", f"{label}.log"), errors="replace") as f:
        for line in f:
            m = STEP.search(line)
            if m and m.group(1) not in found:
                found[m.group(1)] = float(m.group(2))
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--smp", default="1")
    ap.add_argument("--split", action="store_true",
                    help="also boot flower-init/tls (TLS, state in memory) and flower-init/db (--insecure, state on "
                         "the disk): where the appliance defaults' extra time goes")
    a = ap.parse_args()
    profiles = ("baseline", "flower-init/same") + (("flower-init/tls", "flower-init/db") if a.split else ()) + ("flower-init/default",)
    res = {p: [] for p in profiles}
    per_step = {p: {} for p in profiles[1:]}
    for i in range(a.runs):
        for profile in profiles:
            label = f"{profile.replace('/', '-')}-{i}"
            r = boot(profile, label, a.smp)
            if r["marker"] is None:
                sys.exit(f"{label}: no marker (log build/bench/logs/{label}.log)")
            res[profile].append(r)
            if profile != "baseline":
                for k, v in steps(label).items():
                    per_step[profile].setdefault(k, []).append(v)
    med = {p: statistics.median(r["marker"] for r in rs) for p, rs in res.items()}
    summary = {"runs": a.runs, "smp": a.smp, "accel": res["baseline"][0]["accel"],
               "qemu_start_to_health_s": {p: {"median": med[p], "all": [r["marker"] for r in rs]} for p, rs in res.items()}}
    for p in profiles[1:]:
        fi = res[p]
        summary[p] = {
            "ratio_to_baseline": round(med[p] / med["baseline"], 3),
            "kernel_start_to_init_s": statistics.median(r["marks"]["run_init"] - r["marks"]["kernel"] for r in fi if "run_init" in r["marks"]),
            "power_button_to_off_s": statistics.median(
                r["marks"]["power_off"] - r["marks"]["power_button"] for r in fi if {"power_off", "power_button"} <= r["marks"].keys()),
            "steps_median_s": {k: statistics.median(v) for k, v in per_step[p].items()},
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
