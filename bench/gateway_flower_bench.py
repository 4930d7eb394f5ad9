#!/usr/bin/env python3
"""Gateway vs direct, with Flower's own Fleet client (flwr 1.42: httpx, node-auth signatures).

Registers one SuperNode identity, then alternates direct and gateway calls:
  poll   : POST /v1/fleet/pull-messages, what every SuperNode sends every 3 s when idle;
  upload : POST /v1/fleet/push-object with a 10 MB object_content, the size of a 10 MB
           model update (Flower 1.42 sends arrays in 5 MiB chunks by default; one 10 MB
           object is the larger, harder case for the gateway). The SuperLink reads, parses
           and authenticates the whole body, then refuses the object (no such run): the
           transfer is what is timed.
Each client keeps its connection alive (as a SuperNode does); the first calls warm up.
Prints one JSON object: per kind and path, median and p90 in ms, plus the gateway's added
latency and the upload throughput.

Run by `make gateway-bench` (tests/gateway_flower.rs bench_gateway_vs_direct), which starts
a TLS SuperLink on 127.0.0.1 and the gateway on 127.0.0.2.
"""
import argparse
import json
import os
import statistics
import time

import httpx
from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL
from flwr.proto.fleet_pb2 import ActivateNodeRequest, PullMessagesRequest, RegisterNodeFleetRequest
from flwr.proto.message_pb2 import PushObjectRequest
from flwr.proto.node_pb2 import Node
from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes
from flwr.supernode.fleet_http_client import FleetHttpClient
from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

UPLOAD = 10 * 1000 * 1000


def timed(fn):
    t = time.perf_counter()
    status = 200
    try:
        fn()
    except httpx.HTTPStatusError as e:  # the SuperLink refuses the object after reading it
        status = e.response.status_code
    return (time.perf_counter() - t) * 1000.0, status


def summary(ms):
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 3), "n": len(ms)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--direct", required=True)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()

    priv, pub = generate_key_pairs()
    pk = public_key_to_bytes(pub)
    clients = {
        path: FleetHttpClient.from_server_address(addr, False, args.ca, interceptors=[NodeAuthHttpInterceptor(priv, pub)])
        for path, addr in (("direct", args.direct), ("gateway", args.gateway))
    }
    clients["direct"].RegisterNode(RegisterNodeFleetRequest(public_key=pk))
    node = Node(node_id=clients["direct"].ActivateNode(ActivateNodeRequest(public_key=pk, heartbeat_interval=HEARTBEAT_DEFAULT_INTERVAL)).node_id)
    payload = os.urandom(UPLOAD)

    def poll(c):
        return lambda: c.PullMessages(PullMessagesRequest(node=node))

    def upload(c):
        return lambda: c.PushObject(PushObjectRequest(node=node, run_id=1, object_id="0" * 64, object_content=payload))

    results = {k: {"direct": [], "gateway": []} for k in ("poll", "upload")}
    statuses = {}
    for path, c in clients.items():  # warm-up: connections, TLS, Flower's first-call costs
        for _ in range(3):
            timed(poll(c))
        timed(upload(c))
    for _ in range(args.rounds):
        for _ in range(10):
            for path, c in clients.items():
                ms, st = timed(poll(c))
                results["poll"][path].append(ms)
                statuses[("poll", path)] = st
        for path, c in clients.items():
            ms, st = timed(upload(c))
            results["upload"][path].append(ms)
            statuses[("upload", path)] = st
    out = {"load": open("/proc/loadavg").read().split()[:3], "upload_bytes": UPLOAD}
    for kind, by_path in results.items():
        out[kind] = {path: summary(ms) for path, ms in by_path.items()}
        out[kind]["added_median_ms"] = round(out[kind]["gateway"]["median_ms"] - out[kind]["direct"]["median_ms"], 3)
        out[kind]["status"] = {path: statuses[(kind, path)] for path in by_path}
    for path in ("direct", "gateway"):
        out["upload"][path]["mb_per_s"] = round(UPLOAD / 1e6 / (out["upload"][path]["median_ms"] / 1000.0), 1)
    print(json.dumps(out, indent=1))
    for c in clients.values():
        c.close()


if __name__ == "__main__":
    main()
