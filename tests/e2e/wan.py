#!/usr/bin/env python3
"""A WAN link in user space: every Ethernet frame that arrives on one interface leaves on the
other after a fixed one-way delay, and a share of them is lost, in both directions. What
`tc qdisc ... netem delay D loss L` would do on the link, for kernels built without sch_netem
(this project's build machines: CONFIG_NET_SCH_NETEM is not set, so `tc` answers "Specified
qdisc kind is unknown").

    wan.py IF_A IF_B [--delay-ms 40] [--loss 0.01] [--seed 1]

Run it in the namespace that holds IF_A and IF_B (two veth ends, no addresses). It prints one
JSON line when the link is up ({"up": true}), then works until SIGTERM, and prints its counters
as one JSON line on the way out. SIGUSR1 cuts the link (every frame is dropped, as when a WAN
link goes dark: no reset, no ICMP), SIGUSR2 restores it; each prints a JSON line.

The interfaces on both sides must not hand it frames bigger than the MTU or with checksums left
to the hardware (`ethtool -K IF tx off tso off gso off gro off` on the routers' WAN interfaces
and on IF_A/IF_B): frames are forwarded as they are read. A frame it cannot send (too big) is
counted in `oversize`, so a misconfigured link shows up in the counters, not as a hang.
"""
import argparse
import errno
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # <linux/if_packet.h>: a frame this host sent, seen by the tap


def open_if(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind((name, 0))
    s.setblocking(False)
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("if_a")
    ap.add_argument("if_b")
    ap.add_argument("--delay-ms", type=float, default=40.0, help="one-way delay, each direction")
    ap.add_argument("--loss", type=float, default=0.01, help="share of frames lost, each direction (0..1)")
    ap.add_argument("--seed", type=int, default=1, help="the loss pattern's seed (the same run loses the same frames)")
    args = ap.parse_args()
    if not 0 <= args.loss < 1 or args.delay_ms < 0:
        raise SystemExit("wan: --loss must be in [0, 1) and --delay-ms >= 0")
    rng = random.Random(args.seed)
    delay = args.delay_ms / 1000.0
    a, b = open_if(args.if_a), open_if(args.if_b)
    peer = {a.fileno(): b, b.fileno(): a}
    names = {a.fileno(): args.if_a, b.fileno(): args.if_b}
    counters = {"forwarded": 0, "lost": 0, "cut": 0, "oversize": 0, "send_errors": 0}
    state = {"cut": False, "stop": False}
    queue = []  # (due, seq, out socket, frame): a fixed delay keeps each direction in order
    seq = 0

    # Signals only set flags (and wake poll through the self-pipe); the loop does the work.
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    os.set_blocking(rfd, False)

    def on(sig, _):
        if sig == signal.SIGUSR1:
            state["cut"] = True
        elif sig == signal.SIGUSR2:
            state["cut"] = False
        else:
            state["stop"] = True
        try:
            os.write(wfd, bytes([sig]))
        except OSError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, on)

    poller = select.poll()
    for s in (a, b):
        poller.register(s.fileno(), select.POLLIN)
    poller.register(rfd, select.POLLIN)
    print(json.dumps({"up": True, "if_a": args.if_a, "if_b": args.if_b, "delay_ms": args.delay_ms, "loss": args.loss}), flush=True)
    while not state["stop"]:
        timeout = None
        if queue:
            timeout = max(0, int((queue[0][0] - time.monotonic()) * 1000) + 1)
        for fd, _ in poller.poll(timeout):
            if fd == rfd:
                for sig in os.read(rfd, 64):
                    if sig in (signal.SIGUSR1, signal.SIGUSR2):
                        print(json.dumps({"cut": sig == signal.SIGUSR1, "at": time.time()}), flush=True)
                continue
            src = a if fd == a.fileno() else b
            while True:
                try:
                    frame, addr = src.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own sends, seen on the way out
                if state["cut"]:
                    counters["cut"] += 1
                elif args.loss and rng.random() < args.loss:
                    counters["lost"] += 1
                else:
                    seq += 1
                    heapq.heappush(queue, (time.monotonic() + delay, seq, peer[fd], frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            if state["cut"]:
                counters["cut"] += 1  # in flight when the link went dark
                continue
            try:
                out.send(frame)
                counters["forwarded"] += 1
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    counters["oversize"] += 1
                else:
                    counters["send_errors"] += 1
                    print(json.dumps({"send_error": str(e), "to": names[out.fileno()]}), file=sys.stderr, flush=True)
    print(json.dumps(counters), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
