#!/usr/bin/env python3
"""An aarch64 SuperNode booted by flower-init in 1 GiB: `make edge-test` (issue #22).

The arm64 build of everything (`make build kernel initramfs image ARCH=aarch64`): Debian's
arm64 kernel (the pinned release), build/aarch64/initramfs.cpio whose /init is the static
aarch64 flower-init, and the arm64 SuperNode image (build/aarch64/image/sklearn/image.squashfs).
The VM is what OpenNebula starts on an aarch64 KVM host, emulated here (TCG: this machine is
x86_64): qemu's `virt` machine, UEFI (AAVMF, Debian's qemu-efi-aarch64) loading the kernel,
1 GiB of memory (--memory), one vCPU, the context CD on virtio-scsi, virtio disks and NIC.

Checked from outside, as the tenant sees it: the context's static address answers (qemu's
user-net forwards host ports to it only); flower-init runs as PID 1 on aarch64 (`/status`
machine.arch); the SuperNode container starts under runc and its /health says 200 (READY: the
SuperNode does not need its SuperLink for that, it keeps dialling it); `/status` reports
flower-init's peak RSS, the container's memory (cgroup memory.peak) and the machine's; the
ACPI power button (`onevm terminate`: on `virt` with UEFI an ACPI GED event) powers it off.

--boot qcow2 boots the arm64 appliance disk instead (build/aarch64/appliance/flower-sklearn.qcow2,
`make appliance ARCH=aarch64`): a qcow2 overlay on it as the VM's only disk, AAVMF -> GRUB
(BOOTAA64.EFI) -> kernel, no -kernel; flower-init finds the image and FL_STATE partitions on it.

    tests/vm/edge_test.py [--memory 1024] [--boot direct|qcow2] [--json FILE]
    tests/vm/edge_test.py --arch x86_64 --framework tensorflow --boot qcow2 --memory 2048

--arch x86_64 (issue #18: a SuperNode's time to READY from each framework's disk) boots
build/appliance/flower-FRAMEWORK.qcow2 the same way as an x86_64 VM: machine pc, SeaBIOS ->
GRUB, the context CD on IDE, `/status` machine.arch x86_64. --framework picks the image
(default sklearn) on either architecture.

Prints one summary line of numbers (qemu start -> READY, the step split, memory) and with
--json writes them to FILE (bench/edge.sh collects them for BENCHMARKS.md).
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import contextsh  # noqa: E402
from qemu import PINNED_KERNEL_DIR_AARCH64, Disk, GuestSilent, Nic, Vm, free_port, http_get, kernel_path, make_ext4, make_iso  # noqa: E402
from vm_test import GUEST_IP, GUEST_MAC, NET  # noqa: E402  (the x86_64 VMs' static address, as OpenNebula gives it)

A64 = os.path.join(ROOT, "build", "aarch64")
BUILD = os.path.join(A64, "edge-test")
INITRD = os.path.join(A64, "initramfs.cpio")
IMAGE = os.path.join(A64, "image", "sklearn", "image.squashfs")
APPLIANCE = os.path.join(A64, "appliance", "flower-sklearn.qcow2")
ARCH = "aarch64"


def choose(arch, framework):
    """Point the module's paths at `arch`'s build of `framework`'s image and disk."""
    global BUILD, INITRD, IMAGE, APPLIANCE, ARCH
    out = A64 if arch == "aarch64" else os.path.join(ROOT, "build")
    ARCH = arch
    BUILD = os.path.join(out, "edge-test" if arch == "aarch64" else f"supernode-boot-{framework}")
    INITRD = os.path.join(out, "initramfs.cpio")
    IMAGE = os.path.join(out, "image", framework, "image.squashfs")
    APPLIANCE = os.path.join(out, "appliance", f"flower-{framework}.qcow2")
# The PL011 UART is the console of `virt`; panic=-1 reboots (and -no-reboot ends qemu) on a panic.
APPEND = "console=ttyAMA0 panic=-1"
# aarch64 under TCG on this 2-core x86_64 machine: measured 150-250 s to READY (BENCHMARKS.md);
# the bound is for a loaded CI machine, the watchdog ends a silent guest long before it.
READY_WITHIN = 900
FAILURES = []


def log(msg):
    print(f"[edge-test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(cond, what):
    log(f"  {'ok' if cond else 'FAILED'}: {what}")
    if not cond:
        FAILURES.append(what)
    return cond


def status(vm):
    code, body = http_get("127.0.0.1", vm.ports[8081], "/status", timeout=5)
    return json.loads(body) if code == 200 else None


def boot(memory, how="direct", gpu=False):
    os.makedirs(BUILD, exist_ok=True)
    d = os.path.join(BUILD, "context")
    contextsh.write(d, {**NET, "FL_ROLE": "supernode", "FL_SUPERLINK_ADDRESS": "192.168.150.20:9092",
                        "FL_TLS_ENABLED": "NO", "FL_NODE_CONFIG": "partition-id=0 num-partitions=2",
                        "FL_STATUS_ALLOW": "192.168.150.0/24", **({"FL_GPU_ENABLED": "YES"} if gpu else {})})
    iso = make_iso(d, os.path.join(BUILD, "context.iso"))
    port = free_port()
    nics = [Nic(GUEST_MAC, user_net="192.168.150.0/24", hostfwd=[(port, GUEST_IP, 8081)])]
    common = dict(arch="aarch64", firmware="uefi", memory=memory, smp=1, cdrom=iso, nics=nics,
                  logdir=os.path.join(ROOT, "build", "vm-logs"))
    if ARCH == "x86_64":
        # As OpenNebula's default x86_64 template: machine pc, SeaBIOS, the context CD on IDE.
        common.update(arch="x86_64", firmware="bios", machine="pc")
        if how != "qcow2":
            raise SystemExit("edge-test: --arch x86_64 boots the qcow2 only (--boot qcow2)")
    if how == "qcow2":
        # The VM's own disk: a qcow2 overlay on the imported image (OpenNebula's non-persistent image).
        disk = os.path.join(BUILD, "disk.qcow2")
        if os.path.exists(disk):
            os.unlink(disk)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", APPLIANCE, disk], check=True)
        name = "edge-supernode-qcow2" if ARCH == "aarch64" else f"supernode-{os.path.basename(APPLIANCE)[:-6]}"
        vm = Vm(name, None, None, None, disks=[Disk(disk, fmt="qcow2", boot=True)], **common)
    else:
        state = make_ext4(os.path.join(BUILD, "state.img"), "FL_STATE", 256)
        vm = Vm("edge-supernode", kernel_path(PINNED_KERNEL_DIR_AARCH64), INITRD, APPEND,
                disks=[Disk(IMAGE, readonly=True), Disk(state)], **common)
    vm.ports = {8081: port}
    return vm


def run(memory, out, how="direct", gpu=False):
    vm = boot(memory, how, gpu)
    if ARCH == "x86_64":
        log(f"boot: x86_64 SuperNode from {APPLIANCE}: pc, SeaBIOS -> GRUB -> kernel, {memory} MiB; console {vm.log_path}")
    else:
        via = "its qcow2 disk: AAVMF -> GRUB -> kernel" if how == "qcow2" else "-kernel/-initrd through AAVMF"
        log(f"boot: aarch64 SuperNode, virt + UEFI, {via}, {memory} MiB, TCG; console {vm.log_path}")
    vm.start()
    numbers = {"memory_mib": memory, "boot": how, "arch": ARCH, "image": APPLIANCE if how == "qcow2" else IMAGE}
    if ARCH == "x86_64":
        from qemu import accelerator
        numbers["accel"] = accelerator()[0]
    try:
        t, line, _ = vm.wait_for(r"flower-init: info: flower-init .* starting as PID 1", READY_WITHIN)
        numbers["init_started_s"] = round(t, 1)
        check(True, f"flower-init started as PID 1 {t:.1f}s after qemu started ({line.split('info: ')[-1]})")
        t_kernel, line, _ = vm.wait_for(r"Linux version", 0)
        if ARCH == "aarch64":
            check("arm64" in line or "aarch64" in line, f"the kernel is Debian's arm64 build: {line.strip()[:90]}")
        numbers["kernel_s"] = round(t_kernel, 1)
        t, line, _ = vm.wait_for(r"flower-init: (info: flower healthy|error: boot failed)", READY_WITHIN)
        if not check("flower healthy" in line, f"Flower healthy {t:.1f}s after qemu started: {line.split(': ', 2)[-1][:160]}"):
            return numbers
        numbers["flower_healthy_s"] = round(t, 1)
        # READY: /health 200 (the SuperNode's local API answered; nothing waits for a SuperLink).
        deadline = time.monotonic() + 120
        code = None
        while time.monotonic() < deadline:
            code, _ = http_get("127.0.0.1", vm.ports[8081], "/health", timeout=5)
            if code == 200:
                break
            time.sleep(1)
        numbers["ready_s"] = round(vm.elapsed(), 1)
        check(code == 200, f"/health 200 through the static address ({GUEST_IP}, user-net forward): READY at {numbers['ready_s']}s")
        # Let the SuperNode settle (it dials its absent SuperLink) before the memory is read.
        time.sleep(10)
        st = status(vm) or {}
        sec = st.get("sections", {})
        machine, init, cont = sec.get("machine", {}), sec.get("init", {}), sec.get("container", {})
        check(machine.get("arch") == ARCH, f"/status machine: {machine}")
        if gpu:
            # No NVIDIA GPU under qemu: the CPU fallback, with its reason (issue #18).
            g = sec.get("gpu") or {}
            check(g.get("available") is False and bool(g.get("reason")), f"/status gpu: no GPU, CPU fallback: {g}")
            numbers["gpu"] = g
            try:
                _, line, _ = vm.wait_for(r"step image: ok", 0)
                numbers["image_note"] = line.split("ok", 1)[-1].strip()[:200]
                log(f"  image step: {numbers['image_note']}")
            except TimeoutError:
                pass
        check(st.get("phase") == "ready", f"/status phase {st.get('phase')!r}")
        check(cont.get("state") == "running" and cont.get("restarts") == 0,
              f"the SuperNode container runs under runc, never restarted ({cont.get('state')}, {cont.get('restarts')} restarts)")
        check(bool(init.get("peak_rss_kib")), f"flower-init's peak RSS {init.get('peak_rss_kib')} KiB")
        check(bool(cont.get("memory_peak_kib")), f"the container's memory: {cont.get('memory_kib')} KiB now, peak {cont.get('memory_peak_kib')} KiB (cgroup)")
        steps = {s["name"]: s.get("duration_s") for s in st.get("timeline", {}).get("steps", [])}
        numbers.update(steps_s=steps, init_peak_rss_kib=init.get("peak_rss_kib"), container_memory_kib=cont.get("memory_kib"),
                       container_memory_peak_kib=cont.get("memory_peak_kib"), mem_total_kib=machine.get("mem_total_kib"),
                       mem_available_kib=machine.get("mem_available_kib"))
        t = time.monotonic()
        vm.powerdown()
        rc = vm.wait_exit(120)
        numbers["power_off_s"] = round(time.monotonic() - t, 1)
        check(rc is not None, f"the ACPI power button powered it off in {numbers['power_off_s']}s")
        if rc is not None:
            try:
                vm.wait_for(r"flower-init: info: powering off", 1)
                check(True, "console says 'powering off'")
            except TimeoutError:
                check(False, "console says 'powering off'")
    except (TimeoutError, GuestSilent) as e:
        check(False, str(e))
    finally:
        vm.kill()
        if out:
            with open(out, "w") as f:
                json.dump(numbers, f, indent=1)
    steps = " ".join(f"{k}={v:.2f}s" for k, v in numbers.get("steps_s", {}).items() if v is not None)
    log(f"numbers: kernel {numbers.get('kernel_s')}s, PID 1 {numbers.get('init_started_s')}s, Flower healthy "
        f"{numbers.get('flower_healthy_s')}s, READY {numbers.get('ready_s')}s after qemu start; {steps}")
    log(f"memory: flower-init peak RSS {numbers.get('init_peak_rss_kib')} KiB; container now "
        f"{numbers.get('container_memory_kib')} KiB, peak {numbers.get('container_memory_peak_kib')} KiB; machine "
        f"{numbers.get('mem_total_kib')} KiB, available {numbers.get('mem_available_kib')} KiB")
    return numbers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", type=int, default=1024, help="MiB of guest memory (default 1024: the edge profile)")
    ap.add_argument("--boot", choices=["direct", "qcow2"], default="direct",
                    help="direct: -kernel/-initrd with image and state disks; qcow2: the arm64 appliance disk")
    ap.add_argument("--json", help="write the numbers to this file")
    ap.add_argument("--arch", choices=["aarch64", "x86_64"], default="aarch64")
    ap.add_argument("--framework", choices=["sklearn", "pytorch", "tensorflow"], default="sklearn")
    ap.add_argument("--gpu", action="store_true", help="FL_GPU_ENABLED=YES: with no GPU in the VM, the CPU fallback")
    args = ap.parse_args()
    choose(args.arch, args.framework)
    for p in (APPLIANCE,) if args.boot == "qcow2" else (INITRD, IMAGE, PINNED_KERNEL_DIR_AARCH64):
        if not os.path.exists(p):
            sys.exit(f"edge-test: {p} missing (make build kernel initramfs image ARCH=aarch64; `make edge-test` does it)")
    t0 = time.monotonic()
    run(args.memory, args.json, args.boot, args.gpu)
    if FAILURES:
        log(f"{len(FAILURES)} check(s) failed:")
        for f in FAILURES:
            log(f"  - {f}")
        sys.exit(1)
    log(f"all checks passed in {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":
    main()
