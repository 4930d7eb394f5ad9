#!/usr/bin/env python3
"""The local federation under qemu: `make demo` (the README's first command).

A OneFlow-like deployment of the committed service template (oneflow/flower-7.json) on this
machine: the OneGate/OneFlow stand-in, then one SuperLink VM and, once OneFlow's ready gate
releases them (the SuperLink reported READY), two SuperNode VMs. Each VM boots the product,
build/appliance/flower-sklearn.qcow2 (`make appliance`), as OpenNebula starts a non-persistent
image: a qcow2 overlay on it is the VM's virtio disk, booted by the firmware through GRUB (no
-kernel), the SuperLink under SeaBIOS and the SuperNodes under UEFI (OVMF); the kernel on it
runs flower-init, which finds the image and FL_STATE partitions on that disk (`--boot direct`:
qemu -kernel/-initrd with the image and a fresh FL_STATE ext4 as separate disks, as before).
KVM only when a real guest runs under it, else TCG (FLOWER_INIT_ACCEL=kvm|tcg overrides). Its
context is an ISO9660 CD generated from the template and the per-VM values the way OpenNebula
would (tests/e2e/one.py). The VMs share a bridge in a network namespace of their own (tap
devices); nothing touches the host's network. TLS is on (the SuperLink makes its CA, the
SuperNodes fetch it through OneGate), FL_USE_CASE is tabular-classification: the breast-cancer
data set shipped with scikit-learn, split between the two SuperNodes.

While it waits it prints each VM's phase and step, READY, and every round; then a summary:
per-VM boot timeline, time from qemu start to READY, loss/accuracy per round, the log files,
and build/demo/report.html: the same as charts (tools/report.py).
A VM that prints nothing on its console within qemu.SILENT_WITHIN seconds stops the demo at
once, naming the accelerator and the console log. Ctrl-C stops everything (the VMs are powered off with the ACPI button, then killed) and removes
the namespace.

With --edge N (`make edge`, issue #22) the last N SuperNodes are aarch64 VMs: qemu's `virt`
machine under TCG, UEFI (AAVMF) loading Debian's arm64 kernel and build/aarch64/initramfs.cpio,
the arm64 image and a fresh FL_STATE as separate disks, the context CD on virtio-scsi, 1 GiB
(--edge-memory): a cross-architecture federation, x86_64 SuperLink and aarch64 SuperNode.

    tests/e2e/demo.py [--rounds 3] [--keep] [--edge N [--edge-memory 1024]]
"""
import argparse
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "vm"))
import contextsh  # noqa: E402
import federation  # noqa: E402
from federation import log, wait  # noqa: E402
from qemu import PINNED_KERNEL_DIR, PINNED_KERNEL_DIR_AARCH64, Disk, Nic, Vm, accelerator, kernel_path, make_ext4, make_iso  # noqa: E402

# A namespace and subnet of its own: `make e2e` may run beside it.
federation.TAG = "demo"
federation.PREFIX = os.environ.get("FI_DEMO_PREFIX") or "fi-demo"
federation.SUBNET = os.environ.get("FI_DEMO_SUBNET") or "10.92.0"
federation.BUILD = os.path.join(ROOT, "build", "demo")
BUILD = federation.BUILD
LOGS = os.path.join(BUILD, "logs")
INITRD = os.path.join(ROOT, "build", "initramfs.cpio")
IMAGE = os.path.join(ROOT, "build", "image", "sklearn", "image.squashfs")
APPLIANCE = os.path.join(ROOT, "build", "appliance", "flower-sklearn.qcow2")
BOOT = "qcow2"  # or "direct" (--boot)
# The aarch64 SuperNodes of --edge (make build kernel initramfs image ARCH=aarch64).
A64 = os.path.join(ROOT, "build", "aarch64")
INITRD_AARCH64 = os.path.join(A64, "initramfs.cpio")
IMAGE_AARCH64 = os.path.join(A64, "image", "sklearn", "image.squashfs")
EDGE = 0  # --edge: how many of the SuperNodes are aarch64
EDGE_MEMORY = 1024
READY_WITHIN = 900  # TCG, three VMs on two cores


class VmNode:
    """One appliance VM: context CD, state disk, tap NIC, qemu."""

    def __init__(self, fed, vm):
        self.fed, self.vm = fed, vm
        self.name = vm.name.split("_(")[0].replace("_", "-")
        self.dir = os.path.join(BUILD, self.name)
        self.tap = f"tap{vm.vmid}"
        self.qemu = None
        self.proc = None
        self.t_start = None
        self.seen = None
        self.arch = "x86_64"  # Demo.boot makes the last EDGE SuperNodes aarch64

    @property
    def url(self):
        return f"http://{self.vm.ip}:{federation.HEALTH}"

    def prepare(self, topo):
        # /status answers loopback and FL_STATUS_ALLOW only; the demo reads it from the bridge.
        self.vm.context.setdefault("FL_STATUS_ALLOW", topo.gateway)
        os.makedirs(self.dir, exist_ok=True)
        ctx = os.path.join(self.dir, "context")
        if os.path.isdir(ctx):
            for f in os.listdir(ctx):
                os.unlink(os.path.join(ctx, f))
        contextsh.write(ctx, self.vm.context, token=self.vm.token)
        self.iso = make_iso(ctx, os.path.join(self.dir, "context.iso"))
        if self.arch == "aarch64":
            self.state = make_ext4(os.path.join(self.dir, "state.img"), "FL_STATE", 512)
            self.firmware = "uefi"
            self.booted = (f"aarch64 virt, UEFI (AAVMF) -> Debian's arm64 kernel + build/aarch64/initramfs.cpio, "
                           f"arm64 image and FL_STATE disks, {EDGE_MEMORY} MiB")
        elif BOOT == "qcow2":
            # The VM's own disk: a qcow2 overlay on the imported image (non-persistent image).
            self.disk = os.path.join(self.dir, "disk.qcow2")
            if os.path.exists(self.disk):
                os.unlink(self.disk)
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", APPLIANCE, self.disk], check=True)
            self.firmware = "bios" if self.vm.role == "superlink" else "uefi"
            self.booted = f"its qcow2 disk, q35, {'SeaBIOS' if self.firmware == 'bios' else 'OVMF (UEFI)'} -> GRUB -> kernel (no -kernel)"
        else:
            self.state = make_ext4(os.path.join(self.dir, "state.img"), "FL_STATE", 512)
            self.firmware = "bios"
            self.booted = "qemu -kernel/-initrd, image and FL_STATE as separate disks"
        topo.add_tap(self.tap)

    def start(self):
        common = dict(cdrom=self.iso, nics=[Nic(self.vm.mac, tap=self.tap)], memory=2048, logdir=LOGS,
                      netns=self.fed.topo.bridge_ns)
        if self.arch == "aarch64":
            common["memory"] = EDGE_MEMORY
            self.qemu = Vm(self.name, kernel_path(PINNED_KERNEL_DIR_AARCH64), INITRD_AARCH64, "console=ttyAMA0 panic=-1",
                           disks=[Disk(IMAGE_AARCH64, readonly=True), Disk(self.state)], arch="aarch64",
                           firmware="uefi", **common)
        elif BOOT == "qcow2":
            # q35 (the context CD on SATA): OVMF on machine pc leaves Linux no IDE CD (docs/image.md).
            self.qemu = Vm(self.name, None, None, None, disks=[Disk(self.disk, fmt="qcow2", boot=True)],
                           firmware=self.firmware, machine="q35", **common)
        else:
            self.qemu = Vm(self.name, kernel_path(PINNED_KERNEL_DIR), INITRD, "console=ttyS0 panic=-1",
                           disks=[Disk(IMAGE, readonly=True), Disk(self.state)], **common)
        self.qemu.start()
        self.proc = self.qemu.proc
        self.t_start = self.qemu.t0
        log(f"{self.name}: qemu started ({self.arch}, {self.qemu.accel_used}; VM {self.vm.vmid}, {self.vm.ip}; console {self.qemu.log_path})")

    def stop(self, timeout=90):
        """The ACPI power button, as `onevm terminate` sends it; flower-init powers off."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        t = time.monotonic()
        try:
            self.qemu.powerdown()
        except OSError:
            pass
        rc = self.qemu.wait_exit(timeout)
        if rc is None:
            self.qemu.kill()
            raise AssertionError(f"{self.name}: did not power off within {timeout}s of the power button")
        log(f"{self.name}: powered off {time.monotonic() - t:.1f}s after the power button")
        return rc

    def kill(self):
        if self.qemu:
            self.qemu.kill()


class Demo(federation.Federation):
    OUTSIDE_KEY = False  # FL_SUPERNODE_KEYS stays unset: the service's own SuperNodes only

    def node_log(self, n):
        return n.qemu.log_path

    def boot(self):
        _, vms = self.service()
        self.nodes = [VmNode(self, vm) for vm in vms]
        supernodes = [n for n in self.nodes if n.vm.role == "supernode"]
        for n in supernodes[len(supernodes) - EDGE:] if EDGE else []:
            n.arch = "aarch64"
        for n in self.nodes:
            n.prepare(self.topo)
        t0 = time.monotonic()
        started, ready = set(), set()
        while len(ready) < len(self.nodes):
            roles = self.admin_call("GET", "/deployable")["roles"]
            for n in self.nodes:
                if n.vm.role in roles and n.name not in started:
                    n.start()
                    started.add(n.name)
            for n in self.nodes:
                if n.name not in started or n.name in ready:
                    continue
                if n.proc.poll() is not None:
                    # n.qemu.failure: the guest printed nothing within the bound (qemu killed).
                    raise AssertionError(n.qemu.failure or f"{n.name}: qemu {n.qemu.exit_status()}; console: {n.qemu.log_path}")
                try:
                    st = self.status(n)
                except Exception as e:
                    # Not listening yet (kernel still booting); say so if it answers but refuses.
                    n.last_error = str(e)
                    continue
                running = [s["name"] for s in st["timeline"]["steps"] if s["outcome"] == "running"]
                seen = (st["phase"], tuple(running))
                if seen != n.seen:
                    n.seen = seen
                    step = f" (step {running[0]})" if running else ""
                    log(f"{n.name}: {st['phase']}{step} at {time.monotonic() - n.t_start:.1f}s")
                if st["phase"] == "failed":
                    raise AssertionError(f"{n.name}: boot failed: {st.get('failure')}")
                if st["phase"] == "ready":
                    n.ready_after = time.monotonic() - n.t_start
                    n.timeline = st["timeline"]["steps"]
                    n.status_doc = st
                    ready.add(n.name)
                    log(f"{n.name}: ready, /health 200, {n.ready_after:.1f}s after qemu started")
            if time.monotonic() - t0 > READY_WITHIN:
                why = "; ".join(f"{n.name}: {getattr(n, 'last_error', None) or n.seen}" for n in self.nodes
                                if n.name not in ready)
                raise AssertionError(f"not every VM was READY within {READY_WITHIN}s ({why})")
            time.sleep(1)

    def leftovers(self, n):
        return []  # the containers died with the VM

    def summary(self, final):
        print("\n=== flower-init federation (qemu VMs) ===")
        for n in self.nodes:
            def at(pattern):
                try:
                    return f"{n.qemu.wait_for(pattern, 0)[0]:.1f}s"
                except TimeoutError:
                    return "-"
            steps = " ".join(f"{s['name']}={s.get('duration_s') or 0:.2f}s" for s in getattr(n, "timeline", []))
            # Host seconds since qemu started: Flower healthy, READY published to OneGate, and
            # /health 200 (the SuperLink's includes submitting the run, the `run` step).
            print(f"{n.name:12} Flower healthy {at(r'flower-init: info: flower healthy')}, READY to OneGate "
                  f"{at(r'flower-init: info: step publish: ok')}, /health 200 {getattr(n, 'ready_after', 0):.1f}s"
                  f" after qemu start ({n.qemu.accel_used})")
            print(f"{'':12} booted from {n.booted}: kernel at {at(r'Linux version')}")
            print(f"{'':12} {steps}")
            print(f"{'':12} flower-init peak RSS {self.peak_rss(n)}{self.memory(n)}")
        print("rounds:")
        for (rid, rnd), r in sorted(self.rounds_seen.items()):
            print(f"  run {rid} round {rnd}: loss={r.get('loss'):.4f} accuracy={r.get('accuracy'):.4f}"
                  f" (+{self.round_times.get((rid, rnd), 0):.0f}s)")
        first = first_round_after_start(self.superlink().t_start, self.t_train, self.round_times)
        if first is not None:
            # Issue #17's measure of the first round: from the SuperLink's qemu start (the
            # SuperNodes are started once it is READY, as OneFlow's straight deployment does).
            print(f"round 1 aggregated {first:.0f}s after the SuperLink's qemu start")
        print(f"final: {final['status']} after round {final['round']}")
        print("phases: " + phases(self.phase_times))
        print(f"consoles: {LOGS}/<vm>.log  contexts: {BUILD}/<vm>/context/  stand-in: {BUILD}/standin.log")
        self.write_report(final, "flower-init federation (qemu VMs)")


    def memory(self, n):
        """', Flower's container peak …, machine …' from the node's /status now, after the rounds
        (the edge numbers), or as it was at READY."""
        try:
            doc = self.status(n)
        except Exception:
            doc = getattr(n, "status_doc", {})
        sec = doc.get("sections", {})
        c, m = sec.get("container", {}), sec.get("machine", {})
        out = ""
        if c.get("memory_peak_kib"):
            out += f"; Flower's container: peak {c['memory_peak_kib'] // 1024} MiB (cgroup)"
        if m.get("mem_total_kib"):
            out += f"; {m.get('arch')} machine: {m['mem_total_kib'] // 1024} MiB, {m.get('mem_available_kib', 0) // 1024} MiB available"
        return out


def first_round_after_start(t_start, t_train, round_times):
    """Seconds from `t_start` (monotonic) to the first round seen aggregated, or None: the round
    times count from `t_train`, when following the run began."""
    firsts = [t for (_, rnd), t in round_times.items() if rnd == 1]
    if t_start is None or t_train is None or not firsts:
        return None
    return t_train + min(firsts) - t_start


def phases(t):
    """'boot 310s (qemu start to every VM READY), training 250s (3 rounds, 83s each), ...' from
    the monotonic marks boot/ready/trained/off that are set."""
    parts = []
    if "ready" in t:
        parts.append(f"boot {t['ready'] - t['boot']:.0f}s (first qemu start to every VM READY)")
    if "trained" in t and "ready" in t:
        n = t.get("rounds") or 0
        each = f", {(t['trained'] - t['ready']) / n:.0f}s each" if n else ""
        parts.append(f"training {t['trained'] - t['ready']:.0f}s ({n} rounds{each})")
    if "off" in t and "trained" in t:
        parts.append(f"shutdown {t['off'] - t['trained']:.0f}s (power button to every VM off)")
    return ", ".join(parts) or "none completed"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--use-case", default="tabular-classification")
    ap.add_argument("--strategy", default="FedAvg")
    ap.add_argument("--keep", action="store_true", help="keep the network namespace for inspection")
    ap.add_argument("--edge", type=int, default=0, metavar="N",
                    help="the last N SuperNodes are aarch64 VMs (virt, UEFI, TCG; make edge)")
    ap.add_argument("--edge-memory", type=int, default=1024, metavar="MIB", help="memory of each aarch64 VM (default 1024)")
    ap.add_argument("--boot", choices=["qcow2", "direct"], default="qcow2",
                    help="qcow2: each VM boots an overlay of build/appliance/flower-sklearn.qcow2 through its firmware "
                         "(the product); direct: qemu -kernel/-initrd with separate image and state disks")
    args = ap.parse_args()
    global BOOT, EDGE, EDGE_MEMORY
    BOOT, EDGE, EDGE_MEMORY = args.boot, args.edge, args.edge_memory
    args.drills = False
    if os.geteuid() != 0:
        raise SystemExit("demo: needs root (a network namespace with a bridge and tap devices)")
    for p in (APPLIANCE,) if BOOT == "qcow2" else (INITRD, IMAGE, PINNED_KERNEL_DIR):
        if not os.path.exists(p):
            raise SystemExit(f"demo: {p} is missing: run `make demo` (it builds everything first)")
    for p in (INITRD_AARCH64, IMAGE_AARCH64, PINNED_KERNEL_DIR_AARCH64) if EDGE else ():
        if not os.path.exists(p):
            raise SystemExit(f"demo: {p} is missing: run `make edge` (it builds everything first)")
    try:
        accelerator()  # prints which and why
    except ValueError as e:
        raise SystemExit(f"demo: {e}")
    os.makedirs(LOGS, exist_ok=True)
    fed = Demo(args)

    def on_term(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)
    ok = False
    t0 = time.monotonic()
    try:
        fed.setup()
        fed.phase_times = {"boot": time.monotonic()}
        fed.boot()
        fed.check_published()
        fed.phase_times["ready"] = time.monotonic()
        log(f"every VM is READY in OneGate ({fed.phase_times['ready'] - t0:.0f}s); training {args.rounds} rounds")
        final = fed.follow_run(timeout=1800)
        fed.phase_times.update(trained=time.monotonic(), rounds=final["round"])
        accs = [r["accuracy"] for _, r in sorted(fed.rounds_seen.items()) if r.get("accuracy") is not None]
        assert final["status"] == "completed" and final["round"] == args.rounds, final
        # Flower aggregates what arrives: a SuperNode whose replies never came would not fail
        # the run. Each one must have sent its training reply in every round (its /status).
        took = {n.name: fed.status(n)["sections"]["supernode"]["rounds_participated"] for n in fed.supernodes()}
        assert all(t >= args.rounds for t in took.values()), f"not every SuperNode trained in every round: {took}"
        log(f"every SuperNode sent its training reply in every round ({', '.join(f'{n.name} ({n.arch}): {took[n.name]}' for n in fed.supernodes())})")
        fed.summary(final)
        if len(accs) >= 2:
            assert accs[-1] >= accs[0], f"accuracy did not improve: {accs}"
        ok = True
    except KeyboardInterrupt:
        log("interrupted: powering the VMs off")
    except AssertionError as e:
        log(f"FAILED: {e}")
    finally:
        problems = fed.shutdown(check=ok)
        for p in problems:
            log(f"shutdown problem: {p}")
        ok = ok and not problems
        if "trained" in getattr(fed, "phase_times", {}):
            fed.phase_times["off"] = time.monotonic()
        log("phases: " + phases(getattr(fed, "phase_times", {})))
    log(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
