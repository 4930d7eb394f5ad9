#!/usr/bin/env python3
"""The e2e's Prometheus steps (federation.start_prometheus, check_prometheus_rounds) with a
real Prometheus on loopback, without the federation: three stand-in nodes on 127.0.0.2-4 serve
/metrics pages whose counters advance with each scrape, as a training SuperLink's round and
the SuperNodes' participation do. Part of `make metrics-test`; `make e2e` runs the same steps
against the real nodes from the bridge namespace.
"""
import http.server
import os
import socket
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import federation  # noqa: E402
import prom  # noqa: E402

ROUNDS = 3


def page(kind, scrapes):
    if kind == "superlink":
        return ("# HELP flower_init_run_round r\n# TYPE flower_init_run_round gauge\n"
                f"flower_init_run_round {min(scrapes, ROUNDS)}\n")
    return ("# HELP flower_init_supernode_rounds_participated_total p\n"
            "# TYPE flower_init_supernode_rounds_participated_total counter\n"
            f"flower_init_supernode_rounds_participated_total {min(scrapes, ROUNDS)}\n")


def serve(ip, port, kind):
    scrapes = [0]

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            scrapes[0] += 1 if self.path == "/metrics" else 0
            body = page(kind, scrapes[0]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    srv = http.server.ThreadingHTTPServer((ip, port), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def free_port(ips):
    """A port free on every one of `ips` (the stand-ins share it, as the nodes share 8081)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        try:
            for ip in ips[1:]:
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def main():
    t0 = time.monotonic()
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    federation.HEALTH = free_port(ips)
    federation.BUILD = os.path.join(ROOT, "build", "metrics-e2e-prometheus")
    servers = [serve(ip, federation.HEALTH, kind) for ip, kind in zip(ips, ["superlink", "supernode", "supernode"])]
    nodes = [types.SimpleNamespace(name=f"n{i}", vm=types.SimpleNamespace(ip=ip, role=kind))
             for i, (ip, kind) in enumerate(zip(ips, ["superlink", "supernode", "supernode"]))]
    fed = types.SimpleNamespace(nodes=nodes, topo=types.SimpleNamespace(exec_prefix=lambda: []),
                                in_bridge_fetch=prom.fetch_here, t_wall_train=time.time())
    fed.superlink = lambda: nodes[0]
    fed.supernodes = lambda: nodes[1:]
    try:
        federation.Federation.start_prometheus(fed)
        federation.Federation.check_prometheus_rounds(fed, {"round": ROUNDS})
    finally:
        if fed.__dict__.get("prometheus"):
            fed.prometheus.stop()
        for s in servers:
            s.shutdown()
    print(f"test_prom: the e2e's Prometheus steps passed against stand-ins in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
