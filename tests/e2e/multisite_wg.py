#!/usr/bin/env python3
"""The multi-site federation through a WireGuard overlay (issue #20): `make multisite-wg`.

`make multisite`'s two sites, NATs and WAN (tests/e2e/multisite.py), but the nodes are qemu
VMs booted by flower-init on the pinned kernel (this machine's kernel has no WireGuard; the
appliance's has wireguard.ko in its initramfs), and router A forwards only UDP 51820, so the
SuperLink's Fleet port is reachable **only through the tunnel**:

    site A: SuperLink VM  wg0 10.99.0.1/24 ── router A (UDP 51820 only) ══ WAN ══ router B ── SuperNode VM wg0 10.99.0.2/24

- WireGuard keys are made here (the public halves computed with the `cryptography` package of
  build/venv); the SuperLink lists the SuperNode as its peer (allowed 10.99.0.2/32), the
  SuperNode lists the SuperLink with endpoint 203.0.113.10:51820 and keepalive 25 (it is behind
  NAT).
- TLS and SuperNode authentication stay on inside the tunnel: the SuperLink's certificate gets
  its tunnel address as a SAN by itself, and the SuperNode is configured with the SuperLink's
  join value re-pointed at 10.99.0.1:8000 (`flower-init join --endpoint`), its node key made
  ahead and listed in the SuperLink's FL_SUPERNODE_KEYS, as in `make multisite`.
- Checked: TCP 8000 of the SuperLink's public address is closed from site B; the run completes
  (--rounds, one SuperNode: two VMs under TCG on two cores); the SuperLink's gateway saw the
  SuperNode arrive from 10.99.0.2 (the tunnel), both ends' /status show a handshake; no private
  key (WireGuard's or the node's) in any console or /status; both VMs power off by the ACPI
  button.

    tests/e2e/multisite_wg.py [--rounds 2] [--keep]

About 8 minutes under TCG. Not in `make test` (CI's time); run before changing the overlay.
"""
import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
import federation as fe  # noqa: E402
import demo  # noqa: E402  (before the globals below: it sets its own)
import multisite as ms  # noqa: E402
import one  # noqa: E402
from qemu import PINNED_KERNEL_DIR, Disk, Nic, Vm, accelerator, kernel_path, make_ext4, make_iso  # noqa: E402
import contextsh  # noqa: E402

PREFIX = os.environ.get("FI_MSWG_PREFIX") or "fi-mw"
NET = os.environ.get("FI_MSWG_NET") or "10.93"
BUILD = os.path.join(ROOT, "build", "multisite-wg")
fe.PREFIX, fe.BUILD, fe.TAG = PREFIX, BUILD, "multisite-wg"
log, wait = fe.log, fe.wait
INITRD = os.path.join(ROOT, "build", "initramfs.cpio")
IMAGE = os.path.join(ROOT, "build", "image", "sklearn", "image.squashfs")
VENV_PY = os.path.join(ROOT, "build", "venv", "bin", "python")
WG_PORT = 51820
READY_WITHIN = 900


def wg_keys():
    """(private, public) in base64: 32 random bytes; the public half by X25519 (cryptography)."""
    priv = bytearray(secrets.token_bytes(32))
    priv[0] &= 248
    priv[31] = (priv[31] & 127) | 64
    code = ("import sys,base64;from cryptography.hazmat.primitives.asymmetric import x25519;"
            "from cryptography.hazmat.primitives import serialization as s;"
            "k=x25519.X25519PrivateKey.from_private_bytes(base64.b64decode(sys.argv[1]));"
            "print(base64.b64encode(k.public_key().public_bytes(s.Encoding.Raw,s.PublicFormat.Raw)).decode())")
    b64 = base64.b64encode(bytes(priv)).decode()
    pub = subprocess.run([VENV_PY, "-c", code, b64], capture_output=True, text=True, check=True).stdout.strip()
    return b64, pub


class VmNode(demo.VmNode):
    """One appliance VM (qemu -kernel/-initrd, the image and a state disk) on its site's bridge;
    the demo's power-off by the ACPI button (`stop`), `kill` and `/status` address."""

    def __init__(self, fed, vm, site, state_files=None):
        super().__init__(fed, vm)
        self.site = site
        self.dir = os.path.join(BUILD, self.name)
        os.makedirs(self.dir, exist_ok=True)
        ctx = os.path.join(self.dir, "context")
        os.makedirs(ctx, exist_ok=True)
        contextsh.write(ctx, vm.context, token=None)
        self.iso = make_iso(ctx, os.path.join(self.dir, "context.iso"))
        src = None
        if state_files:
            src = os.path.join(self.dir, "state-src")
            for rel, (data, mode) in state_files.items():
                p = os.path.join(src, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
                os.chmod(p, mode)
        self.state = make_ext4(os.path.join(self.dir, "state.img"), "FL_STATE", 512, src_dir=src)
        site.add_tap(self.tap)

    def start(self):
        self.qemu = Vm(self.name, kernel_path(PINNED_KERNEL_DIR), INITRD, "console=ttyS0 panic=-1",
                       disks=[Disk(IMAGE, readonly=True), Disk(self.state)], cdrom=self.iso,
                       nics=[Nic(self.vm.mac, tap=self.tap)], memory=2048, logdir=os.path.join(BUILD, "logs"),
                       netns=self.site.bridge_ns)
        self.qemu.start()
        self.proc, self.t_start = self.qemu.proc, self.qemu.t0
        log(f"{self.name}: qemu started ({self.qemu.accel_used}, {self.vm.ip}; console {self.qemu.log_path})")


class WgSites(ms.MultiSite):
    def setup(self):
        for p in (INITRD, IMAGE, PINNED_KERNEL_DIR, VENV_PY, self.binary):
            if not os.path.exists(p):
                raise SystemExit(f"multisite-wg: {p} is missing: run `make multisite-wg` (it builds everything first)")
        subprocess.run(["rm", "-rf", BUILD], check=True)
        os.makedirs(os.path.join(BUILD, "logs"))
        ms.BUILD = BUILD
        self.sites = ms.Sites(PREFIX, NET, self.args.delay_ms, self.args.loss, forward=("udp", WG_PORT))

    def node_log(self, n):
        return n.qemu.log_path

    def leftovers(self, n):
        return []  # the containers died with the VM

    def ready(self, n, timeout=READY_WITHIN):
        def check():
            if n.proc.poll() is not None:
                raise AssertionError(n.qemu.failure or f"{n.name}: qemu exited; console {n.qemu.log_path}")
            st = self.status(n)
            if st["phase"] == "failed":
                raise AssertionError(f"{n.name}: boot failed: {st.get('failure')}")
            return st if st["phase"] == "ready" else None
        st = wait(f"{n.name} ready", check, timeout, every=3)
        n.ready_after = time.monotonic() - n.t_start
        n.timeline, n.status_doc = st["timeline"]["steps"], st
        log(f"{n.name}: ready {n.ready_after:.1f}s after qemu started")
        return st

    def run(self):
        a, b = self.sites.a, self.sites.b
        sl_priv, sl_pub = wg_keys()
        sn_priv, sn_pub = wg_keys()
        self.wg_private = [sl_priv, sn_priv]
        node_key = os.path.join(BUILD, "sn-node.key")
        node_pub = subprocess.run([self.binary, "node-auth", "--key-file", node_key, "--comment", "site-b"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        sl_vm = one.Vm(401, "superlink", 1, f"{a.subnet}.10", 7)
        sl_vm.name = "superlink_401_(site_a)"
        sl_vm.context = {
            "NETWORK": "YES", "ETH0_MAC": sl_vm.mac, "ETH0_IP": sl_vm.ip, "ETH0_MASK": "255.255.255.0",
            "ETH0_GATEWAY": a.gateway, "SET_HOSTNAME": "superlink-401", "FL_ROLE": "superlink", "FL_TLS_ENABLED": "YES",
            "FL_USE_CASE": self.args.use_case, "FL_NUM_ROUNDS": str(self.args.rounds), "FL_MIN_FIT_CLIENTS": "1",
            "FL_MIN_EVALUATE_CLIENTS": "1", "FL_MIN_AVAILABLE_CLIENTS": "1", "FL_SUPERNODE_KEYS": node_pub,
            "FL_STATUS_ALLOW": a.gateway, "FL_LOG_LEVEL": "INFO",
            "FL_WG_ADDRESS": "10.99.0.1/24", "FL_WG_PRIVATE_KEY": sl_priv, "FL_WG_PEERS": f"{sn_pub} allowed=10.99.0.2/32"}
        sl = VmNode(self, sl_vm, a)
        self.nodes.append(sl)
        sl.start()
        st = self.ready(sl)
        sans = st["sections"]["tls"]["sans"]
        assert "IP:10.99.0.1" in sans, f"the tunnel address is not among the SuperLink's SANs: {sans}"
        wgs = st["sections"]["wireguard"]
        assert wgs["public_key"] == sl_pub, wgs
        value = subprocess.run([self.binary, "join", "--endpoint", "10.99.0.1:8000", st["sections"]["join"]["value"]],
                               capture_output=True, text=True, check=True).stdout.strip()
        log(f"join value re-pointed at the tunnel: {json.loads(subprocess.run([self.binary, 'join', value], capture_output=True, text=True, check=True).stdout)['endpoints']}")
        sn_vm = one.Vm(402, "supernode", 1, f"{b.subnet}.10", 7)
        sn_vm.name = "supernode_402_(site_b)"
        sn_vm.context = {
            "NETWORK": "YES", "ETH0_MAC": sn_vm.mac, "ETH0_IP": sn_vm.ip, "ETH0_MASK": "255.255.255.0",
            "ETH0_GATEWAY": b.gateway, "SET_HOSTNAME": "supernode-402", "FL_ROLE": "supernode", "FL_JOIN": value,
            "FL_NODE_CONFIG": "partition-id=0 num-partitions=1", "FL_STATUS_ALLOW": b.gateway, "FL_LOG_LEVEL": "INFO",
            "FL_WG_ADDRESS": "10.99.0.2/24", "FL_WG_PRIVATE_KEY": sn_priv,
            "FL_WG_PEERS": f"{sl_pub} allowed=10.99.0.0/24 endpoint={ms.WAN_A}:{WG_PORT} keepalive=25"}
        key_bytes = open(node_key, "rb").read()
        sn = VmNode(self, sn_vm, b, state_files={"node-auth/node.key": (key_bytes, 0o600)})
        self.nodes.append(sn)
        # The Fleet port is not reachable across the WAN: only the tunnel's UDP port is forwarded.
        probe = subprocess.run(["ip", "netns", "exec", b.bridge_ns, sys.executable, "-c",
                                f"import socket;socket.create_connection(('{ms.WAN_A}', 8000), timeout=5)"],
                               capture_output=True, text=True)
        assert probe.returncode != 0, "TCP 8000 of the SuperLink's public address answered from site B"
        log(f"from site B, {ms.WAN_A}:8000 does not answer (only UDP {WG_PORT} is forwarded)")
        sn.start()
        st = self.ready(sn)
        assert st["sections"]["wireguard"]["public_key"] == sn_pub
        sl_log = self.node_log(sl)
        wait("the SuperNode activated from its tunnel address",
             lambda: '10.99.0.2:0 - "POST /v1/fleet/activate-node HTTP/1.1" 200' in open(sl_log).read(), 300, every=3)
        log("the SuperLink let the SuperNode in by its key, from 10.99.0.2: through the tunnel")
        final = self.follow_run(timeout=1800)
        assert final["status"] == "completed" and final["round"] == self.args.rounds, final
        for n in self.nodes:
            peers = self.status(n)["sections"]["wireguard"]["peers"]
            assert peers and peers[0]["last_handshake_unix"] and peers[0]["rx_bytes"] > 0, f"{n.name}: {peers}"
            log(f"{n.name}: wg0 peer {peers[0]['public_key'][:12]}… handshake at {peers[0]['last_handshake_unix']}, "
                f"rx {peers[0]['rx_bytes']} B, tx {peers[0]['tx_bytes']} B, endpoint {peers[0]['endpoint']}")
        texts = [open(self.node_log(n)).read() + json.dumps(self.status(n)) for n in self.nodes]
        secret_lines = fe.private_lines(key_bytes.decode())
        for t in texts:
            assert not any(k in t for k in self.wg_private), "a WireGuard private key reached an output"
            assert not any(l in t for l in secret_lines), "the SuperNode's private key reached an output"
        return final

    def record(self, final):
        print("\n=== flower-init multi-site federation through WireGuard (qemu VMs) ===")
        for n in self.nodes:
            print(f"{n.name:14} ready {n.ready_after:6.1f}s after qemu started")
        for (rid, rnd), r in sorted(self.rounds_seen.items()):
            print(f"round {rnd}: accuracy {r.get('accuracy')} (+{self.round_times[(rid, rnd)]:.0f}s)")
        print(f"final: {final['status']} after round {final['round']}; logs in {BUILD}/")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--use-case", default="tabular-classification")
    ap.add_argument("--strategy", default="FedAvg")
    ap.add_argument("--delay-ms", type=float, default=40.0)
    ap.add_argument("--loss", type=float, default=0.01)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.cut_s = 0
    if os.geteuid() != 0:
        raise SystemExit("multisite-wg: needs root (network namespaces, taps)")
    try:
        accelerator()
    except ValueError as e:
        raise SystemExit(f"multisite-wg: {e}")
    w = WgSites(args)

    def on_term(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    ok, final, t0 = False, None, time.monotonic()
    try:
        w.setup()
        final = w.run()
        ok = True
    except KeyboardInterrupt:
        log("interrupted: powering the VMs off")
    except AssertionError as e:
        log(f"FAILED: {e}")
    finally:
        problems = w.shutdown(check=ok)
        for p in problems:
            log(f"shutdown problem: {p}")
        ok = ok and not problems
    if ok:
        w.record(final)
    log(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
