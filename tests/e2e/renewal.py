#!/usr/bin/env python3
"""Certificates renewed while the SuperLink runs (issue #14 item 2): `make renewal-test`.

The e2e federation's harness (tests/e2e/federation.py: service-mode nodes in network namespaces,
the OneGate stand-in, real runc and Flower, TLS on), with one SuperLink and one SuperNode and no
use case. The SuperLink is booted with a server certificate that lives 150 s, a 60 s lead time
and a check every 5 s (`--tls-server-validity 150 --tls-renew-before 60 --tls-check-every 5`,
the injectable form of the daily check and its 30 days). The test then sees, without touching
anything:

- the gateway present a new server certificate (later notAfter, same CA) to new connections;
- Flower itself (127.0.0.1:8000 inside the SuperLink's namespace) serve the new certificate: its
  container was restarted to take it (a new flower-superlink process);
- /status report the new expiry, /health answer 200 again, the SuperNode reconnect through the
  gateway (its Fleet polls reach the new Flower), no certificate ever served past its notAfter.

Then the gateway process (a child of flower-init since issue #14 item 6) is checked: its
command line and environment in /proc hold no key material, and killed with SIGKILL it is
restarted while flower-init (PID 1 of the node) stays up, and serves the Fleet port again.

Before the renewal timer existed, the certificate simply expired after 150 s; before the
gateway was a child process, there was no process to kill but PID 1.

    tests/e2e/renewal.py [--keep]
"""
import argparse
import os
import signal
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import federation as fe  # noqa: E402

# Renewed 90 s after issue: the SuperNode (ready in seconds here) must be connected by then,
# or its reconnection would go untested (checked below).
VALIDITY, LEAD, EVERY = 150, 60, 5

PEER_CERT = (
    "import socket,ssl,sys\n"
    "c=ssl.create_default_context(cafile=sys.argv[3]);c.check_hostname=False\n"
    "s=c.wrap_socket(socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5))\n"
    "p=s.getpeercert();print(p['serialNumber'],ssl.cert_time_to_seconds(p['notAfter']))\n"
)


def peer_cert(prefix, host, port, ca):
    """(serial, notAfter as Unix seconds) of the certificate served at host:port, verified with ca."""
    out = subprocess.run(prefix + [sys.executable, "-c", PEER_CERT, host, str(port), ca],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no answer")
    serial, not_after = out.stdout.split()
    return serial, int(float(not_after))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", action="store_true", help="keep the namespaces for inspection")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("renewal: needs root (network namespaces)")
    fe.TAG = "renewal"
    fed = fe.Federation(argparse.Namespace(rounds=1, use_case="none", strategy="FedAvg", keep=args.keep))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ok = False
    try:
        fed.setup()
        _, vms = fed.service(supernodes=1)
        flags = ["--tls-server-validity", str(VALIDITY), "--tls-renew-before", str(LEAD), "--tls-check-every", str(EVERY)]
        for vm in vms:
            n = fe.Node(fed, vm, flags if vm.role == "superlink" else ())
            n.prepare(fed.topo)
            fed.nodes.append(n)
        sl = fed.superlink()
        sl.start()
        fe.wait("SuperLink ready", lambda: fed.status(sl)["phase"] == "ready", 400)
        for n in fed.supernodes():
            n.start()
        ca = os.path.join(sl.dir, "state", "tls", "ca.crt")
        bridge = fed.topo.exec_prefix()
        inside = fed.topo.exec_prefix(str(sl.vm.vmid))
        first = peer_cert(bridge, sl.vm.ip, 8000, ca)
        flower_first = peer_cert(inside, "127.0.0.1", 8000, ca)
        assert first == flower_first, (first, flower_first)
        assert first[1] - time.time() <= VALIDITY + 5, f"the first certificate lives {VALIDITY} s: {first}"
        fe.log(f"serving certificate {first[0]} valid until {time.strftime('%H:%M:%S', time.gmtime(first[1]))}")
        pids = set(sl.flower_pids("flower-superlink"))
        fe.wait("SuperNode ready", lambda: all(fed.status(n)["phase"] == "ready" for n in fed.supernodes()), 400)
        assert peer_cert(bridge, sl.vm.ip, 8000, ca) == first, (
            f"the certificate was renewed before the SuperNode was ready: its reconnection would go "
            f"untested (raise VALIDITY, now {VALIDITY} s)")

        # The check renews once fewer than LEAD s remain: the gateway first, then Flower.
        def renewed_at_gateway():
            c = peer_cert(bridge, sl.vm.ip, 8000, ca)
            assert time.time() < c[1], f"the gateway served an expired certificate: {c}"
            return c if c[0] != first[0] else None
        second = fe.wait("a renewed certificate at the gateway", renewed_at_gateway, VALIDITY + 60, every=2)
        fe.log(f"gateway: renewed certificate {second[0]} valid until {time.strftime('%H:%M:%S', time.gmtime(second[1]))}")
        assert second[1] > first[1], (first, second)

        def flower_renewed():
            c = peer_cert(inside, "127.0.0.1", 8000, ca)
            return c if c[0] != first[0] else None
        flower_second = fe.wait("Flower serving a renewed certificate (container restarted)", flower_renewed, 300, every=2)
        assert flower_second[1] > first[1]
        new_pids = set(sl.flower_pids("flower-superlink"))
        assert new_pids and not (new_pids & pids), f"flower-superlink was restarted: {pids} -> {new_pids}"
        st = fe.wait("SuperLink ready again", lambda: (lambda s: s if s["phase"] == "ready" else None)(fed.status(sl)), 300)
        until = st["sections"]["tls"]["server_valid_until"]
        fe.log(f"/status: server certificate valid until {until}")
        assert until != time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(first[1])), until
        assert fed.health(sl)[0] == 200

        def fleet():
            return fed.status(sl)["sections"]["gateway"]["requests"]["fleet"]
        base = fleet()
        fe.wait("the SuperNode polling the restarted SuperLink", lambda: fleet() >= base + 2, 300, every=2)
        log_text = open(os.path.join(fe.BUILD, f"{sl.name}.log")).read()
        assert "renewed the server certificate ahead of expiry" in log_text
        assert "stopped to take the renewed certificate" in log_text
        fe.log("renewal ok: new certificate at the gateway and in Flower, same CA, SuperNode reconnected")

        # The gateway as a supervised child process.
        gws = sl.flower_pids("gateway")
        assert len(gws) == 1, f"one gateway process in the SuperLink's namespace: {gws}"
        gw = gws[0]
        init = sl.init_pid()
        assert open(f"/proc/{gw}/status").read().split("PPid:")[1].split()[0] == str(init), "a child of flower-init"
        for f in ("cmdline", "environ"):
            blob = open(f"/proc/{gw}/{f}", "rb").read()
            assert b"PRIVATE KEY" not in blob and b"BEGIN" not in blob, f"key material in /proc/{gw}/{f}"
        os.kill(gw, signal.SIGKILL)
        fe.wait("a new gateway process", lambda: [p for p in sl.flower_pids("gateway") if p != gw], 60, every=0.5)
        third = fe.wait("the Fleet port served again", lambda: peer_cert(bridge, sl.vm.ip, 8000, ca), 60, every=1)
        assert third == second, (third, second)
        assert sl.proc.poll() is None and sl.init_pid() == init, "flower-init is unaffected"
        # /status is refreshed every 5 s.
        fe.wait("/status: the gateway restarted once", lambda: (lambda s: s["phase"] == "ready" and s["sections"]["gateway"]["process"]["restarts"] >= 1
                and s["sections"]["gateway"]["process"]["pid"] not in (None, gw))(fed.status(sl)), 30)
        # The new process counts from zero (its counters appear with its first stats line).
        fe.wait("the SuperNode polling through the new gateway", lambda: fleet() >= 2, 120, every=2)
        fe.log("gateway ok: killed, restarted by flower-init, serving again; no key material in /proc")
        ok = True
    except KeyboardInterrupt:
        fe.log("interrupted: stopping everything")
    finally:
        problems = fed.shutdown(check=ok)
        for p in problems:
            fe.log(f"shutdown problem: {p}")
        if problems:
            ok = False
    fe.log("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
