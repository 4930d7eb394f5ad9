#!/usr/bin/env python3
"""A federation across two sites and a WAN (issue #20): `make multisite`.

    site A (10.92.1.0/24)            WAN (203.0.113.0/24)            site B (10.92.2.0/24)
    SuperLink .10 ── router A ══ 80 ms RTT, 1% loss each way ══ router B ── SuperNodes .10 .11
                     NAT: forwards 203.0.113.10:8000              NAT: masquerade only
                     to the SuperLink, drops the rest

Each node is `flower-init boot` as PID 1 of its own namespaces (as in `make e2e`), running the
appliance image with the host's runc, TLS on, SuperNode authentication on (the default). The
routers are the two sites' bridge namespaces with nftables NAT; the WAN between them is
tests/e2e/wan.py, a user-space link with delay and loss (this machine's kernel has no netem).

What is checked, in the order an operator would meet it:
1. The SuperLink (no OneGate: another site cannot read it) gets its public address in
   FL_CERT_EXTRA_SANS; its /status `join.value` lists that address first and `flower-init join`
   decodes it (the CA's SHA-256 matches /status).
2. Site B's operator makes each SuperNode's key ahead (`flower-init node-auth --key-file`) and
   sends the public lines; the SuperLink's operator lists them in FL_SUPERNODE_KEYS.
3. Each SuperNode is configured with FL_JOIN alone (no address, no CA, no OneGate), connects to
   the SuperLink's public address through both NATs, verifies the certificate against that
   address, and is let in by its key (the SuperLink sees it from router B's public address).
4. Training runs; after round 1 the WAN goes dark for --cut-s seconds (every frame dropped, no
   reset), comes back, and the run completes with accuracy printed per round.
5. No private key in any log or /status; every node stops cleanly.

    tests/e2e/multisite.py [--rounds 3] [--delay-ms 40] [--loss 0.01] [--cut-s 30] [--keep]

`--delay-ms 0 --loss 0 --cut-s 0` is the same topology as a LAN (BENCHMARKS.md's baseline).
Round times go to build/multisite/rounds.json. Runs as root; everything it creates is named
fi-ms-* (FI_MS_PREFIX) and removed at the end, also on failure or Ctrl-C.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import federation as fe  # noqa: E402
import netns  # noqa: E402
import one  # noqa: E402

PREFIX = os.environ.get("FI_MS_PREFIX") or "fi-ms"
NET = os.environ.get("FI_MS_NET") or "10.92"  # site A NET.1.0/24, site B NET.2.0/24
BUILD = os.path.join(ROOT, "build", "multisite")
fe.PREFIX, fe.BUILD, fe.TAG = PREFIX, BUILD, "multisite"
log, wait, sh = fe.log, fe.wait, netns.sh

WAN_NET = "203.0.113"  # TEST-NET-3: exists only inside this test's WAN namespace
WAN_A, WAN_B = f"{WAN_NET}.10", f"{WAN_NET}.20"
PORT = 8000  # the SuperLink's Fleet endpoint (flower::SUPERLINK_PORT)
FIRST_VMID = 301  # apart from make e2e's 100+, whose temporary veth names share the host namespace


def router_rules(forward_to=None, proto="tcp", port=PORT):
    """nftables for a site's router: masquerade out of the WAN; from the WAN only replies and
    (site A) the one port forwarded to the SuperLink."""
    dnat = f'iifname "wan0" {proto} dport {port} dnat to {forward_to}:{port}' if forward_to else ""
    return f"""
table ip fi_router {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "br0" oifname "wan0" accept
    iifname "wan0" ct status dnat accept
  }}
}}
"""


class Sites:
    """Two sites (netns.Topology each: a bridge namespace that is also the site's router) and a
    WAN namespace between the routers, where wan.py carries the frames."""

    def __init__(self, prefix, net, delay_ms, loss, forward=("tcp", PORT)):
        self.forward = forward  # what router A forwards to the SuperLink (.10)
        self.wan_ns = f"{prefix}-wan"
        self.wan = self.a = self.b = None
        sh("ip", "netns", "del", self.wan_ns, check=False)
        try:
            self.a = netns.Topology(f"{prefix}-a", f"{net}.1")
            self.b = netns.Topology(f"{prefix}-b", f"{net}.2")
            self.cable(net, delay_ms, loss)
        except BaseException:
            self.destroy()
            raise

    def cable(self, net, delay_ms, loss):
        sh("ip", "netns", "add", self.wan_ns)
        w = ["ip", "netns", "exec", self.wan_ns]
        sh(*w, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", self.wan_ns, "link", "set", "lo", "up")
        self.router(self.a, "la", WAN_A, forward_to=f"{net}.1.10")
        self.router(self.b, "lb", WAN_B)
        self.wan = subprocess.Popen(w + [sys.executable, os.path.join(HERE, "wan.py"), "la", "lb",
                                         "--delay-ms", str(delay_ms), "--loss", str(loss)],
                                    stdout=subprocess.PIPE, stderr=open(os.path.join(BUILD, "wan.log"), "w"),
                                    text=True, start_new_session=True)
        up = json.loads(self.wan.stdout.readline() or "{}")
        if not up.get("up"):
            raise AssertionError(f"the WAN link did not come up; see {BUILD}/wan.log")
        log(f"WAN up: {WAN_A} (router A) <-> {WAN_B} (router B), {delay_ms} ms each way, {loss:.1%} loss each way")

    def router(self, topo, wan_if, addr, forward_to=None):
        ns = topo.bridge_ns
        tmp = f"{PREFIX[:8]}-{wan_if}"
        sh("ip", "link", "add", tmp, "type", "veth", "peer", "name", wan_if)
        sh("ip", "link", "set", tmp, "netns", ns)
        sh("ip", "link", "set", wan_if, "netns", self.wan_ns)
        sh("ip", "-n", ns, "link", "set", tmp, "name", "wan0")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "wan0")
        for n, i in ((ns, "wan0"), (self.wan_ns, wan_if)):
            sh("ip", "-n", n, "link", "set", i, "up")
            # wan.py forwards frames as read: whole, checksummed, at most the MTU.
            sh("ip", "netns", "exec", n, "ethtool", "-K", i, "tx", "off", "tso", "off", "gso", "off", "gro", "off")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = router_rules(forward_to, *self.forward) if forward_to else router_rules()
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True,
                       check=True, capture_output=True)

    def site(self, ip):
        return self.a if ip.startswith(self.a.subnet + ".") else self.b

    def cut(self, dark):
        self.wan.send_signal(signal.SIGUSR1 if dark else signal.SIGUSR2)

    def destroy(self, keep=False):
        counters = None
        if self.wan and self.wan.poll() is None:
            self.wan.send_signal(signal.SIGTERM)
            try:
                out, _ = self.wan.communicate(timeout=10)
                lines = [l for l in out.splitlines() if l.startswith("{")]
                counters = json.loads(lines[-1]) if lines else None
            except subprocess.TimeoutExpired:
                self.wan.kill()
        if not keep:
            for t in (self.a, self.b):
                if t:
                    t.destroy()
            sh("ip", "netns", "del", self.wan_ns, check=False)
        return counters


class MultiSite(fe.Federation):
    OUTSIDE_KEY = False

    def __init__(self, args):
        super().__init__(args)
        self.sites = None
        self.wan_counters = None

    def setup(self):
        for path in (self.binary, os.path.join(self.rootfs, "etc/flower-init/image.json")):
            if not os.path.exists(path):
                raise SystemExit(f"multisite: {path} is missing: run `make build image` first")
        subprocess.run(["rm", "-rf", BUILD], check=True)
        os.makedirs(BUILD)
        self.sites = Sites(PREFIX, NET, self.args.delay_ms, self.args.loss)

    def in_bridge(self, url):
        """Nodes answer /status to their own site's router (FL_STATUS_ALLOW)."""
        ip = url.split("//", 1)[1].split(":", 1)[0]
        self.topo = self.sites.site(ip)
        return super().in_bridge(url)

    def node(self, vmid, role, ip, context):
        topo = self.sites.site(ip)
        vm = one.Vm(vmid, role, 1, ip, 7)
        vm.name = f"{role}_{vmid}_(site_{'a' if topo is self.sites.a else 'b'})"
        vm.token = None
        vm.context = {"NETWORK": "YES", "ETH0_MAC": vm.mac, "ETH0_IP": ip, "ETH0_MASK": "255.255.255.0",
                      "ETH0_GATEWAY": topo.gateway, "SET_HOSTNAME": vm.name.split("_(")[0].replace("_", "-"),
                      "FL_LOG_LEVEL": "INFO", **context}
        n = fe.Node(self, vm)
        n.ns = topo.ns(str(vmid))
        n.site = topo
        return n

    def ready(self, n, timeout=600):
        st = wait(f"{n.name} ready", lambda: (lambda s: s if s["phase"] == "ready" else None)(self.status(n)), timeout, every=2)
        n.ready_after = time.monotonic() - n.t_start
        n.timeline, n.status_doc = st["timeline"]["steps"], st
        log(f"{n.name}: ready {n.ready_after:.1f}s after flower-init started")
        return st

    def run(self):
        a, b = self.sites.a, self.sites.b
        # 2. Site B's operator makes the SuperNodes' keys ahead and sends the public lines.
        keys, pubs = {}, []
        for i, vmid in enumerate((FIRST_VMID + 1, FIRST_VMID + 2)):
            k = os.path.join(BUILD, "keys", f"site-b-{vmid}.key")
            os.makedirs(os.path.dirname(k), exist_ok=True)
            pub = subprocess.run([self.binary, "node-auth", "--key-file", k, "--comment", f"site-b-{vmid}"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            keys[vmid] = (k, pub)
            pubs.append(pub)
        # 1. The SuperLink at site A, its public address in its certificate.
        sl = self.node(FIRST_VMID, "superlink", f"{a.subnet}.10", {
            "FL_ROLE": "superlink", "FL_TLS_ENABLED": "YES", "FL_CERT_EXTRA_SANS": WAN_A,
            "FL_USE_CASE": self.args.use_case, "FL_NUM_ROUNDS": str(self.args.rounds),
            "FL_MIN_FIT_CLIENTS": "2", "FL_MIN_EVALUATE_CLIENTS": "2", "FL_MIN_AVAILABLE_CLIENTS": "2",
            "FL_SUPERNODE_KEYS": "\n".join(pubs), "FL_STATUS_ALLOW": a.gateway})
        sl.prepare(a)
        self.nodes.append(sl)
        sl.start()
        st = self.ready(sl)
        join = st["sections"]["join"]
        value = join["value"]
        decoded = json.loads(subprocess.run([self.binary, "join", value], capture_output=True, text=True, check=True).stdout)
        assert decoded["endpoints"][0] == f"{WAN_A}:{PORT}", f"the join value's first endpoint: {decoded['endpoints']}"
        ca_sha = st["sections"]["tls"]["ca_sha256"]
        assert ca_sha in json.dumps(decoded), f"the join value's CA is not the SuperLink's ({ca_sha}): {decoded}"
        log(f"join value: {len(value)} characters, endpoints {decoded['endpoints']}, CA sha256 {ca_sha[:16]}…")
        # 3. SuperNodes at site B with FL_JOIN alone (and their data partition).
        sns = []
        for i, vmid in enumerate(sorted(keys)):
            n = self.node(vmid, "supernode", f"{b.subnet}.{10 + i}", {
                "FL_ROLE": "supernode", "FL_JOIN": value, "FL_NODE_CONFIG": f"partition-id={i} num-partitions=2",
                "FL_STATUS_ALLOW": b.gateway})
            n.prepare(b)
            os.makedirs(os.path.join(n.dir, "state", "node-auth"))
            subprocess.run(["cp", keys[vmid][0], os.path.join(n.dir, "state", "node-auth", "node.key")], check=True)
            self.nodes.append(n)
            sns.append(n)
        self.t_sn = time.monotonic()
        for n in sns:
            n.start()
        for n in sns:
            st = self.ready(n)
            na = st["sections"].get("node_auth") or {}
            want = " ".join(keys[n.vm.vmid][1].split()[:2])
            assert na.get("public_key", "").startswith(want), f"{n.name}: /status node_auth: {na}"
            assert not na.get("refused"), f"{n.name}: refused by the SuperLink: {na}"
        # The SuperLink saw them come from router B's public address (through both NATs).
        sl_log = self.node_log(sl)
        wait("the SuperNodes activated from site B's public address",
             lambda: open(sl_log).read().count(f'{WAN_B}:0 - "POST /v1/fleet/activate-node HTTP/1.1" 200') >= 2,
             180, every=2)
        log(f"both SuperNodes let in by their keys, seen from {WAN_B} (router B's NAT)")
        # 4. Training, with the WAN dark for a while after round 1.
        if self.args.cut_s:
            self.follow_run(until_round=1, timeout=900)
            log(f"WAN cut: every frame dropped for {self.args.cut_s}s")
            self.sites.cut(True)
            time.sleep(self.args.cut_s)
            self.sites.cut(False)
            log("WAN back")
        final = self.follow_run(timeout=1200)
        assert final["status"] == "completed" and final["round"] == self.args.rounds, final
        # 5. No private key anywhere a user reads.
        self.check_no_private_key()
        return final

    def check_no_private_key(self):
        secret_lines = []
        for n in self.nodes:
            k = os.path.join(n.dir, "state", "node-auth", "node.key")
            if os.path.exists(k):
                secret_lines += fe.private_lines(open(k).read())
        assert secret_lines, "no SuperNode key on any state disk"
        outputs = [open(os.path.join(BUILD, f)).read() for f in os.listdir(BUILD) if f.endswith(".log")]
        outputs += [json.dumps(self.status(n)) for n in self.nodes]
        for o in outputs:
            assert "OPENSSH PRIVATE KEY" not in o, "a SuperNode's private key file reached an output"
            assert not any(line in o for line in secret_lines), "a SuperNode's private key reached an output"

    def record(self, final):
        times = sorted((rnd, t) for (_, rnd), t in self.round_times.items())
        durations = [round(t - (times[i - 1][1] if i else 0.0), 1) for i, (_, t) in enumerate(times)]
        rec = {"delay_ms": self.args.delay_ms, "loss": self.args.loss, "cut_s": self.args.cut_s,
               "rounds": [{"round": r, "done_after_s": round(t, 1), "took_s": d,
                           "accuracy": self.rounds_seen[next(k for k in self.rounds_seen if k[1] == r)].get("accuracy")}
                          for (r, t), d in zip(times, durations)],
               "supernodes_ready_s": [round(n.ready_after, 1) for n in self.nodes if n.vm.role == "supernode"],
               "superlink_ready_s": round(self.superlink().ready_after, 1),
               "final": {k: final.get(k) for k in ("status", "round", "loss", "accuracy")}}
        json.dump(rec, open(os.path.join(BUILD, "rounds.json"), "w"), indent=1)
        print("\n=== flower-init multi-site federation ===")
        print(f"WAN: {self.args.delay_ms} ms each way, {self.args.loss:.1%} loss each way, cut {self.args.cut_s}s after round 1")
        for n in self.nodes:
            print(f"{n.name:26} ready {n.ready_after:6.1f}s")
        for r in rec["rounds"]:
            print(f"round {r['round']}: done {r['done_after_s']:6.1f}s into training, took {r['took_s']:5.1f}s, accuracy {r['accuracy']}")
        print(f"final: {final['status']} after round {final['round']}; logs in {BUILD}/")

    def shutdown(self, check=True):
        problems = []
        for n in reversed(self.nodes):
            try:
                rc = n.stop()
                if check and rc not in (0, None):
                    problems.append(f"{n.name}: exit {rc}")
            except AssertionError as e:
                problems.append(str(e))
        for n in self.nodes:
            n.kill()
            problems += self.leftovers(n)
        if self.sites:
            self.wan_counters = self.sites.destroy(keep=self.args.keep)
            log(f"WAN counters: {self.wan_counters}")
            c = self.wan_counters or {}
            if check and c.get("oversize"):
                problems.append(f"the WAN dropped oversize frames (offloads left on?): {c}")
            if check and self.args.cut_s and not c.get("cut"):
                problems.append(f"the WAN cut dropped nothing, so it tested nothing: {c}")
            if check and self.args.loss and not c.get("lost"):
                problems.append(f"the WAN lost no frame at {self.args.loss:.1%}: {c}")
        return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--use-case", default="tabular-classification")
    ap.add_argument("--strategy", default="FedAvg")
    ap.add_argument("--delay-ms", type=float, default=40.0, help="WAN one-way delay, each direction (40: 80 ms RTT)")
    ap.add_argument("--loss", type=float, default=0.01, help="WAN frame loss, each direction")
    ap.add_argument("--cut-s", type=int, default=30, help="WAN dark for this long after round 1 (0: no cut)")
    ap.add_argument("--keep", action="store_true", help="keep the namespaces for inspection")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("multisite: needs root (network namespaces)")
    ms = MultiSite(args)

    def on_term(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    ok = False
    final = None
    try:
        ms.setup()
        final = ms.run()
        ok = True
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
    finally:
        problems = ms.shutdown(check=ok)
        for p in problems:
            log(f"shutdown problem: {p}")
        if problems:
            ok = False
    if ok:
        ms.record(final)
    log("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
