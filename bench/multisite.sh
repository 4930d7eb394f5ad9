#!/usr/bin/env bash
# Round time of the multi-site federation on the simulated WAN next to the same topology without
# delay or loss (BENCHMARKS.md, issue #20). Interleaved LAN, WAN, LAN, WAN… N pairs (default 3),
# no cut; prints each run's round times and the medians. Needs `make build image`; root.
#   bench/multisite.sh [PAIRS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-3}; rounds=${2:-3}
out=build/bench-multisite; rm -rf "$out"; mkdir -p "$out"
for i in $(seq 1 "$pairs"); do
    for kind in lan wan; do
        if [ "$kind" = lan ]; then args=(--delay-ms 0 --loss 0 --cut-s 0); else args=(--delay-ms 40 --loss 0.01 --cut-s 0); fi
        echo "bench: pair $i $kind (load $(cut -d' ' -f1-3 /proc/loadavg))"
        python3 tests/e2e/multisite.py --rounds "$rounds" "${args[@]}" > "$out/$kind-$i.log" 2>&1 || { tail -20 "$out/$kind-$i.log"; exit 1; }
        cp build/multisite/rounds.json "$out/$kind-$i.json"
    done
done
python3 - "$out" "$pairs" <<'PY'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
res = {}
for kind in ("lan", "wan"):
    runs = [json.load(open(f"{out}/{kind}-{i}.json")) for i in range(1, pairs + 1)]
    per_round = [r["took_s"] for run in runs for r in run["rounds"]]
    total = [run["rounds"][-1]["done_after_s"] for run in runs]
    ready = [max(run["supernodes_ready_s"]) for run in runs]
    res[kind] = (statistics.median(per_round), statistics.median(total), statistics.median(ready))
    print(f"{kind}: round times {per_round}; median round {res[kind][0]:.1f} s; median training {res[kind][1]:.1f} s; "
          f"median last SuperNode READY {res[kind][2]:.1f} s")
print(f"WAN/LAN: round {res['wan'][0] / res['lan'][0]:.2f}, training {res['wan'][1] / res['lan'][1]:.2f}")
PY
