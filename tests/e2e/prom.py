"""A real Prometheus server (Debian's `prometheus`) scraping flower-init's /metrics, for the
tests (issue #21): `make e2e` runs one in the bridge namespace scraping the three nodes and asks
its HTTP query API whether the round counter rose during training; `make metrics-test` runs one
on loopback against a live `flower-init supervise`.

Everything goes through `fetch(url) -> (code, body)`, so the same code queries from the host or
from inside a namespace (federation.in_bridge).
"""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

PORT = 9090


def fetch_here(url):
    """GET from this namespace: (code, body); (None, why) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


class Prometheus:
    """One server: `targets` (host:port of health ports) scraped every `interval` seconds."""

    def __init__(self, workdir, targets, interval=1, prefix=(), fetch=fetch_here, port=PORT):
        if shutil.which("prometheus") is None:
            raise RuntimeError("prometheus is not installed (Debian's `prometheus`; scripts/setup.sh installs it)")
        self.dir, self.targets, self.interval = workdir, list(targets), interval
        self.prefix, self.fetch, self.port = list(prefix), fetch, port
        self.base = f"http://127.0.0.1:{port}"
        self.proc = None

    def config(self):
        """The scrape configuration (the shape of monitoring/prometheus.yml's static job)."""
        return ("global:\n"
                f"  scrape_interval: {self.interval}s\n"
                f"  scrape_timeout: {self.interval}s\n"
                "scrape_configs:\n"
                "  - job_name: flower-init\n"
                "    metrics_path: /metrics\n"
                "    static_configs:\n"
                f"      - targets: {json.dumps(self.targets)}\n")

    def start(self, within=60):
        # A fresh database: series of an earlier run's targets would answer the queries.
        shutil.rmtree(os.path.join(self.dir, "data"), ignore_errors=True)
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(self.config())
        self.log_path = os.path.join(self.dir, "prometheus.log")
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.prefix + [
            "prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.wait("Prometheus ready", lambda: self.fetch(self.base + "/-/ready")[0] == 200, within)
        return self

    def wait(self, what, cond, within, every=0.5):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}): {self.log_tail()}")
            v = cond()
            if v:
                return v
            time.sleep(every)
        raise AssertionError(f"{what}: not within {within}s; prometheus log: {self.log_tail()}")

    def log_tail(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-2000:]
        except OSError:
            return "-"

    def api(self, path, **params):
        code, body = self.fetch(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        if code != 200:
            raise AssertionError(f"prometheus {path} {params}: {code} {body[:500]}")
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {doc}")
        return doc["data"]["result"]

    def query(self, expr):
        """Instant vector: [(labels, value)]."""
        return [(r["metric"], float(r["value"][1])) for r in self.api("query", query=expr)]

    def series(self, expr, start, end, step=1):
        """Range query: [(labels, [values in time order])]."""
        res = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))
        return [(r["metric"], [float(v) for _, v in r["values"]]) for r in res]

    def all_up(self, within=60):
        """Every target scraped successfully (up == 1)."""
        def check():
            up = self.query('up{job="flower-init"}')
            return up if len(up) == len(self.targets) and all(v == 1 for _, v in up) else None
        return self.wait(f"every target up ({self.targets})", check, within)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rising(values):
    """Non-decreasing with at least two distinct values: a counter seen to rise."""
    return len(set(values)) >= 2 and all(a <= b for a, b in zip(values, values[1:]))
