#!/usr/bin/env python3
"""make metrics-test (issue #21): every /metrics page the tests produce passes
`promtool check metrics`, and every metric the Grafana dashboard queries exists on them.

Pages:
- DIR/*.prom, written by the lib test `write_metrics_pages` from the real report types
  (a SuperLink mid-run with its gateway, the same waiting for nodes, a SuperNode with a GPU,
  a failed boot);
- one page served live over HTTP by the built binary's `supervise` (the health port's own
  renderer and headers), fetched from 127.0.0.1 and written to DIR/supervise.prom.
The Prometheus scrape example is checked with `promtool check config`. A real Prometheus
server (tests/e2e/prom.py, what `make e2e` runs too) scrapes the live page: every target up,
the phase queryable, the health port's answered counter seen rising through its query API.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import prom  # noqa: E402

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def fail(msg):
    print(f"metrics-test: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live(binary, out, workdir):
    """Start `supervise` on a free loopback port, fetch /metrics into `out`, let a real
    Prometheus scrape it; stop both by their pids."""
    proc = subprocess.Popen(
        [binary, "supervise", "--health-addr", "127.0.0.1", "--health-port", "0", "--", "sleep", "600"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        addr = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"health: listening on (\S+)", line)
            if m:
                addr = m.group(1)
                break
        if addr is None:
            fail("supervise did not say where it listens:\n" + "".join(lines))
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
            ctype = r.headers.get("Content-Type")
            body = r.read().decode()
        if ctype != "text/plain; version=0.0.4; charset=utf-8":
            fail(f"/metrics Content-Type {ctype!r}")
        out.write_text(body)
        if not re.search(r'^flower_init_info\{version="flower-init [^"]+",role=""\} 1$', body, re.M):
            fail(f"supervise's page names no version:\n{body[:400]}")
        server = prom.Prometheus(str(workdir), [addr], interval=1, port=free_port()).start()
        t0 = time.time()
        server.all_up()
        answered = 'flower_init_health_connections_total{job="flower-init",result="answered"}'
        server.wait("three scrapes answered", lambda: [v for _, v in server.query(answered) if v >= 3], 60)
        ((_, values),) = server.series(answered, t0 - 1, time.time(), step=1)
        if not prom.rising(values):
            fail(f"the answered counter did not rise in Prometheus: {values}")
        ready = server.query('flower_init_phase{phase="ready"}')
        if [v for _, v in ready] != [1.0]:
            fail(f"Prometheus sees the phase {ready}")
        print(f"metrics-test: a real Prometheus scraped {addr}/metrics: up, phase ready, answered counter {values[0]:g} -> {values[-1]:g}")
        return body
    finally:
        if server:
            server.stop()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def promtool_metrics(page_path):
    r = subprocess.run(["promtool", "check", "metrics"], stdin=open(page_path), capture_output=True, text=True)
    problems = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or problems:
        fail(f"promtool check metrics {page_path}: rc {r.returncode}\n{problems}")


def sample_names(page):
    return {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and not line.startswith("#")}


def dashboard_metrics(dashboard):
    exprs = []

    def walk(v):
        if isinstance(v, dict):
            for k, x in v.items():
                if k in ("expr", "query") and isinstance(x, str):
                    exprs.append(x)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(dashboard)
    names = set()
    for e in exprs:
        names |= set(re.findall(r"\bflower_init_[a-z0-9_]+", e))
    return exprs, names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", required=True, type=Path)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--dashboard", required=True, type=Path)
    ap.add_argument("--prometheus-config", required=True, type=Path)
    a = ap.parse_args()
    t0 = time.monotonic()
    live(a.binary, a.pages / "supervise.prom", a.pages.parent / "metrics-prometheus")
    pages = sorted(a.pages.glob("*.prom"))
    want = {"superlink.prom", "superlink-waiting.prom", "supernode.prom", "failed.prom", "supervise.prom"}
    if not want <= {p.name for p in pages}:
        fail(f"pages missing: {sorted(want - {p.name for p in pages})} in {a.pages}")
    present = set()
    for p in pages:
        promtool_metrics(p)
        present |= sample_names(p.read_text())
        print(f"metrics-test: promtool check metrics {p}: ok ({p.stat().st_size} bytes)")
    exprs, used = dashboard_metrics(json.loads(a.dashboard.read_text()))
    if not exprs:
        fail(f"no queries in {a.dashboard}")
    missing = sorted(n for n in used if n not in present)
    if missing:
        fail(f"the dashboard queries metrics no page has: {missing}")
    print(f"metrics-test: {a.dashboard}: {len(exprs)} queries over {len(used)} metrics, all on the pages")
    r = subprocess.run(["promtool", "check", "config", "--syntax-only", str(a.prometheus_config)], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"promtool check config {a.prometheus_config}:\n{r.stdout}{r.stderr}")
    print(f"metrics-test: promtool check config {a.prometheus_config}: ok")
    print(f"metrics-test: all passed in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
