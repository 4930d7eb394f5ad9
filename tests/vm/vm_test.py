#!/usr/bin/env python3
"""flower-init as PID 1 of a real VM: `make vm-test` (issue #3).

A real Debian kernel under qemu boots build/initramfs.cpio (/init = flower-init); the appliance
image is a read-only virtio disk (build/image/sklearn/image.squashfs), the context is an
ISO9660 CD labelled CONTEXT (as OpenNebula attaches it), the state is an ext4 disk labelled
FL_STATE. Checked from outside, as a tenant or OpenNebula would see it:

  superlink (pc machine, IDE CD): the static IP from the context is configured (qemu's
      user-net forwards host ports to 192.168.150.10 only: a reply proves the address), the
      SuperLink container runs under runc and /health says 200, /status has the boot timeline
      per step, Flower's own port answers TLS through the gateway, the ACPI power button
      (`onevm terminate`) stops runc and powers off within the grace, and Flower's state
      reached the state disk.
  broken (q35 machine, CD on the SATA controller): a context with bad values stays up, /health
      says 503 naming each variable, the value and the rule; power button still powers off.
  supernode (pc, FL_GPU_ENABLED=YES, no GPU): the GPU step falls back to CPU with a warning
      and the SuperNode container starts (its SuperLink is not there: it keeps retrying); a
      WireGuard overlay from FL_WG_* is up before it, with the public key the kernel derived
      from RFC 7748's test key, the peer as given, and the private key in no output.

    tests/vm/vm_test.py [--only superlink,broken,supernode] [--keep]

Console logs with host timestamps go to build/vm-logs/<name>.log. KVM only when a real guest
runs under it, else TCG (tests/vm/qemu.py; FLOWER_INIT_ACCEL=kvm|tcg overrides); a VM that
prints nothing on its console within qemu.SILENT_WITHIN seconds ends the test at once. Needs no
root: qemu's user-mode network needs no privileges.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import contextsh  # noqa: E402
from qemu import (PINNED_KERNEL_DIR, Disk, GuestSilent, Nic, Vm, accelerator, free_port, http_get,  # noqa: E402
                  kernel_path, make_ext4, make_iso)

BUILD = os.path.join(ROOT, "build", "vm-test")
INITRD = os.path.join(ROOT, "build", "initramfs.cpio")
IMAGE = os.path.join(ROOT, "build", "image", "sklearn", "image.squashfs")
GUEST_IP = "192.168.150.10"
GUEST_MAC = "02:00:c0:a8:96:0a"  # OpenNebula's MAC for 192.168.150.10
NET = {"ETH0_IP": GUEST_IP, "ETH0_MAC": GUEST_MAC, "ETH0_MASK": "255.255.255.0",
       "ETH0_NETWORK": "192.168.150.0", "ETH0_GATEWAY": "192.168.150.2", "ETH0_DNS": "192.168.150.3",
       "NETWORK": "YES", "ETH0_METHOD": "static"}
APPEND = "console=ttyS0 panic=-1"
HEALTHY_WITHIN = 420  # TCG on a shared 2-core machine; measured ~30 s (BENCHMARKS.md)
FAILURES = []


def log(msg):
    print(f"[vm-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond, what):
    if cond:
        log(f"  ok: {what}")
    else:
        log(f"  FAILED: {what}")
        FAILURES.append(what)
    return cond


def kernel():
    try:
        return kernel_path(PINNED_KERNEL_DIR)
    except FileNotFoundError as e:
        sys.exit(f"vm-test: {e}")


def wait_http(port, path, want, timeout):
    """Poll until GET path answers with status `want`; returns (status, body)."""
    deadline = time.monotonic() + timeout
    last = (None, "")
    while time.monotonic() < deadline:
        last = http_get("127.0.0.1", port, path, timeout=3)
        if last[0] == want:
            return last
        time.sleep(0.5)
    return last


def context_iso(name, variables, files=None):
    d = os.path.join(BUILD, name, "context")
    shutil.rmtree(d, ignore_errors=True)
    contextsh.write(d, variables, files=files)
    return make_iso(d, os.path.join(BUILD, name, "context.iso"))


def new_vm(name, ctx, machine="pc", state=True, fwd=()):
    os.makedirs(os.path.join(BUILD, name), exist_ok=True)
    disks = [Disk(IMAGE, readonly=True)]
    if state:
        disks.append(Disk(make_ext4(os.path.join(BUILD, name, "state.img"), "FL_STATE", 256)))
    ports = {gp: free_port() for gp in (8081, *fwd)}
    nic = Nic(GUEST_MAC, user_net="192.168.150.0/24", hostfwd=[(hp, GUEST_IP, gp) for gp, hp in ports.items()])
    vm = Vm(name, kernel(), INITRD, APPEND, disks=disks, cdrom=ctx, nics=[nic], machine=machine,
            memory=2048, logdir=os.path.join(ROOT, "build", "vm-logs"))
    vm.ports = ports
    return vm


def power_off(vm, within=60):
    """The ACPI power button; flower-init must stop everything and power off in time."""
    t = time.monotonic()
    vm.powerdown()
    rc = vm.wait_exit(within)
    took = time.monotonic() - t
    check(rc is not None, f"{vm.name}: powered off {took:.1f}s after the power button (bound {within}s)")
    if rc is None:
        vm.kill()
        return False
    try:
        vm.wait_for(r"flower-init: info: powering off", 1)
        check(True, f"{vm.name}: console says 'powering off'")
    except TimeoutError:
        check(False, f"{vm.name}: console says 'powering off'")
    return True


def debugfs_ls(img, path):
    r = subprocess.run(["debugfs", "-R", f"ls -p {path}", img], capture_output=True, text=True)
    return [l.split("/")[5] for l in r.stdout.splitlines() if l.count("/") >= 6]


def test_superlink():
    log("superlink: boot (pc machine, IDE context CD, static IP, state disk)")
    # /status answers loopback and FL_STATUS_ALLOW only: the forwarded port arrives from qemu's
    # user-mode gateway.
    ctx = context_iso("superlink", {**NET, "FL_ROLE": "superlink", "FL_TLS_ENABLED": "YES",
                                     "SET_HOSTNAME": "superlink-0", "FL_STATUS_ALLOW": "192.168.150.0/24"})
    vm = new_vm("superlink", ctx, fwd=(8000,))
    vm.start()
    try:
        t, line, _ = vm.wait_for(r"flower-init: info: flower healthy", HEALTHY_WITHIN)
        log(f"  {t:.1f}s from qemu start: {line.strip()}")
        check(True, f"superlink: Flower healthy {t:.1f}s after qemu started ({vm.accel_used})")
        status, body = wait_http(vm.ports[8081], "/health", 200, 60)
        check(status == 200, f"superlink: /health on {GUEST_IP}:8081 answers 200 via the forwarded port (got {status} {body[:200]!r})")
        status, body = http_get("127.0.0.1", vm.ports[8081], "/status")
        st = json.loads(body) if status == 200 else {}
        tl = st.get("timeline", {}).get("steps", [])
        steps = [s.get("name") for s in tl]
        log("  timeline: " + ", ".join(f"{s['name']}={s.get('duration_s') or 0:.2f}s" for s in tl))
        for want in ("modules", "context", "network", "tls", "container", "flower"):
            check(want in steps, f"superlink: /status timeline has step {want!r}")
        check(st.get("phase") == "ready", f"superlink: /status phase is ready (got {st.get('phase')!r})")
        init = st.get("sections", {}).get("init", {})
        rss = init.get("peak_rss_kib") or 0
        check(0 < rss < 64 * 1024, f"superlink: flower-init's peak RSS {rss} KiB (gateway and all), under 64 MiB")
        try:
            t_kernel = vm.wait_for(r"Linux version", 0)[0]
            t_init = vm.wait_for(r"flower-init: info: flower-init .* starting as PID 1", 0)[0]
            log(f"  kernel start -> flower-init running: {t_init - t_kernel:.2f}s (host clock)")
        except TimeoutError:
            pass
        # Flower's HTTPS server (Fleet, Control, /health on one port, Flower 1.42) through the
        # gateway on the NIC address: the container serves and the gateway forwards.
        import socket
        import ssl
        try:
            with socket.create_connection(("127.0.0.1", vm.ports[8000]), timeout=10) as s:
                c = ssl.create_default_context()
                c.check_hostname = False
                c.verify_mode = ssl.CERT_NONE  # the CA was made inside the VM (checked in tls-flower-test)
                with c.wrap_socket(s) as tls:
                    ver = tls.version()
                    tls.sendall(b"GET /health HTTP/1.1\r\nHost: superlink\r\nConnection: close\r\n\r\n")
                    reply = b""
                    while chunk := tls.recv(65536):
                        reply += chunk
            first = reply.split(b"\r\n", 1)[0].decode()
            check(" 200 " in first + " ", f"superlink: Flower's HTTPS port 8000 answers /health through the gateway ({ver}: {first})")
        except OSError as e:
            check(False, f"superlink: Flower's HTTPS port 8000 answers /health through the gateway ({e})")
        text = vm.text()
        check("step container: ok" in text and "flower-superlink running" in text, "superlink: console shows the runc container step")
        check("seeded with the image's migrated empty state database" in text,
              "superlink: first boot: Flower's database on the state disk starts from the image's migrated one")
        # The zygote's preload yields to Flower's start (nice 19) and comes back to nice 0
        # before it forks apps: that needs the container's RLIMIT_NICE 20, which PID 1 can give.
        # On this one-CPU VM it starts only once Flower serves (FLOWER_INIT_PRELOAD_AFTER).
        try:
            _, zline, _ = vm.wait_for(r"flower-init zygote: ready in", 300)
            check("preloaded at nice 19, apps at 0" in zline, f"superlink: the app fork server preloaded at nice 19, apps at 0 ({zline.strip()[-110:]})")
            check("one CPU: started after Flower served" in zline, f"superlink: one CPU: the preload started after Flower served ({zline.strip()[-110:]})")
        except TimeoutError:
            check(False, "superlink: the app fork server said it was ready within 300 s")
        n = text.count("flower-init: info: step tls: ok")
        check(n == 1, f"superlink: each log line reaches the console once (step tls: {n} times)")
        if not power_off(vm):
            return
        # runc was stopped before power-off, and the state disk holds Flower's state.
        text = vm.text()
        check("stopping the workload" in text, "superlink: the workload was stopped before power-off")
        img = os.path.join(BUILD, "superlink", "state.img")
        top = debugfs_ls(img, "/")
        log(f"  state disk /: {top}")
        check("flower" in top or "tls" in top, f"superlink: Flower's state and certificates are on the FL_STATE disk ({top})")
    finally:
        vm.kill()


def test_broken():
    log("broken: boot (q35 machine, context CD on the SATA controller, bad values)")
    ctx = context_iso("broken", {**NET, "FL_ROLE": "superlink", "FL_NUM_ROUNDS": "zero",
                                 "FL_TLS_ENABLED": "MAYBE"})
    vm = new_vm("broken", ctx, machine="q35", state=False)
    vm.start()
    try:
        t, line, _ = vm.wait_for(r"flower-init: (error|info): .*(refused|invalid|context)", HEALTHY_WITHIN)
        status, body = wait_http(vm.ports[8081], "/health", 503, 120)
        log(f"  /health: {status} {body.strip()[:300]}")
        check(status == 503, f"broken: /health says 503 (got {status})")
        for var, value in (("FL_NUM_ROUNDS", "zero"), ("FL_TLS_ENABLED", "MAYBE")):
            check(var in body and value in body, f"broken: /health names {var} and its value {value!r}")
        power_off(vm)
    finally:
        vm.kill()


# RFC 7748 section 6.1: Alice's private key and Bob's public key (Alice's public key is what the
# kernel must derive): the WireGuard overlay's keys in the supernode test.
WG_PRIVATE = base64.b64encode(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).decode()
WG_PUBLIC = base64.b64encode(bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")).decode()
WG_PEER = base64.b64encode(bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")).decode()


def test_supernode():
    log("supernode: boot (FL_GPU_ENABLED=YES on a VM without a GPU, static SuperLink address, a WireGuard overlay)")
    ctx = context_iso("supernode", {**NET, "FL_ROLE": "supernode", "FL_GPU_ENABLED": "YES",
                                    "FL_SUPERLINK_ADDRESS": "192.168.150.20:9092", "FL_TLS_ENABLED": "NO",
                                    "FL_NODE_CONFIG": "partition-id=0 num-partitions=2",
                                    "FL_STATUS_ALLOW": "192.168.150.0/24",
                                    "FL_WG_ADDRESS": "10.99.0.2/24", "FL_WG_PRIVATE_KEY": WG_PRIVATE,
                                    "FL_WG_PEERS": f"{WG_PEER} allowed=10.99.0.0/24,172.31.7.0/24 endpoint=192.168.150.2:51820 keepalive=25"})
    vm = new_vm("supernode", ctx)
    vm.start()
    try:
        t, line, _ = vm.wait_for(r"step gpu: ", HEALTHY_WITHIN)
        log(f"  {line.strip()}")
        text = vm.text()
        check("no GPU" in text or "CPU" in text, "supernode: the GPU step says it falls back to CPU")
        t, line, _ = vm.wait_for(r"step wireguard: ", HEALTHY_WITHIN)
        log(f"  {line.strip()}")
        check("step wireguard: ok" in line and WG_PUBLIC in line,
              "supernode: the wireguard step brought wg0 up, with the public key the kernel derived (RFC 7748's)")
        t, line, _ = vm.wait_for(r"step container: ok", HEALTHY_WITHIN)
        check(True, f"supernode: the SuperNode container started {t:.1f}s after qemu started")
        status, body = http_get("127.0.0.1", vm.ports[8081], "/status")
        wg = (json.loads(body) if status == 200 else {}).get("sections", {}).get("wireguard", {})
        peers = wg.get("peers") or [{}]
        check(wg.get("public_key") == WG_PUBLIC and wg.get("address") == "10.99.0.2/24" and wg.get("listen_port") == 51820,
              f"supernode: /status wireguard: wg0 10.99.0.2/24, port 51820, the derived public key ({ {k: v for k, v in wg.items() if k != 'peers'} })")
        check(peers[0].get("public_key") == WG_PEER and peers[0].get("endpoint") == "192.168.150.2:51820"
              and peers[0].get("allowed_ips") == ["10.99.0.0/24", "172.31.7.0/24"],
              f"supernode: /status wireguard: the peer as the kernel holds it ({peers[0]})")
        check(WG_PRIVATE not in vm.text() and WG_PRIVATE not in body, "supernode: the private key is in no console line and not in /status")
        power_off(vm)
    finally:
        vm.kill()


TESTS = {"superlink": test_superlink, "broken": test_broken, "supernode": test_supernode}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(TESTS))
    args = ap.parse_args()
    for p in (INITRD, IMAGE):
        if not os.path.exists(p):
            sys.exit(f"vm-test: {p} missing (make initramfs image)")
    os.makedirs(BUILD, exist_ok=True)
    try:
        accelerator()  # prints which and why
    except ValueError as e:
        sys.exit(f"vm-test: {e}")
    for name in args.only.split(","):
        try:
            TESTS[name]()
        except GuestSilent as e:
            # The same would happen to every later VM: stop here, not after each one's bound.
            FAILURES.append(str(e))
            log(f"  FAILED: {e}")
            break
    if FAILURES:
        log(f"{len(FAILURES)} check(s) failed:")
        for f in FAILURES:
            log(f"  - {f}")
        sys.exit(1)
    log("all checks passed")


if __name__ == "__main__":
    main()
