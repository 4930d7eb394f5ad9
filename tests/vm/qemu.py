"""Drive a qemu VM the way OpenNebula would run an appliance, and watch it from outside.

    vm = Vm("sl", kernel=..., initrd=..., append="console=ttyS0 quiet",
            disks=[Disk("build/image/sklearn/image.squashfs", readonly=True)],
            cdrom="context.iso", nics=[Nic("02:00:c0:a8:96:0a", user_net="192.168.150.0/24",
            hostfwd=[(port, "192.168.150.10", 8081)])])
    vm.start()
    t, line = vm.wait_for(r"flower healthy", 300)
    vm.powerdown(); vm.wait_exit(60)

Every console line is stamped with host seconds since qemu was started (the harness of
research/baseline-systemd-vm.md) and written to a log file. This file is the only place that
builds a qemu command line: every VM harness (tests/vm/*.py, the demo, bench/boot.py) uses it.

The accelerator: FLOWER_INIT_ACCEL=kvm|tcg when set, else KVM only if a real guest runs under it
here (`probe_kvm`: the pinned kernel boots a tiny initramfs whose /init prints a marker). An
openable /dev/kvm proves nothing: on some machines guests abort on MSR writes, on others they
never leave the kernel's decompressor. A guest that prints nothing on its console within
SILENT_WITHIN seconds is killed and reported (GuestSilent), instead of a harness waiting for
its overall timeout.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "initramfs"))
from mkinitramfs import Cpio  # noqa: E402

QEMU = "qemu-system-x86_64"
PINNED_KERNEL_DIR = os.path.join(ROOT, "build", "kernel")  # scripts/fetch-kernel.sh (make kernel)
# arm64 guests (issue #22): qemu's `virt` machine, always under TCG on this x86_64 machine.
QEMU_AARCH64 = "qemu-system-aarch64"
PINNED_KERNEL_DIR_AARCH64 = os.path.join(ROOT, "build", "aarch64", "kernel")  # make kernel ARCH=aarch64
ACCEL_ENV = "FLOWER_INIT_ACCEL"
# Under a working KVM the probe guest prints its marker well under a second after qemu starts;
# under TCG it takes 10-25 s on the shared 2-core machine (load 5-8). 10 s leaves a working
# but starved KVM room and costs a machine whose KVM hangs guests 10 s per harness run.
PROBE_WITHIN = 10.0
# The kernel's first console line ("Linux version") comes after the emulated XZ decompressor:
# under TCG on the shared 2-core machine 6-10 s after qemu starts at load 5, 11-17 s at load 8-10,
# 19 s at load 11 (measured, docs/HACKING.md). 120 s is six times that: a guest silent so long is stuck.
SILENT_WITHIN = 120.0
PROBE_MARKER = "flower-init kvm probe: guest userspace runs"


class GuestSilent(Exception):
    """The guest printed nothing on its console within the bound; qemu was killed."""


def has_interpreter(elf):
    """True if a 64-bit ELF has a PT_INTERP program header (it is dynamically linked)."""
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    size, count = int.from_bytes(elf[0x36:0x38], "little"), int.from_bytes(elf[0x38:0x3a], "little")
    return any(int.from_bytes(elf[phoff + i * size:phoff + i * size + 4], "little") == 3 for i in range(count))


def busybox_initramfs(out, init_script, files=()):
    """A newc initramfs whose /init is a busybox shell script (busybox-static from setup.sh).
    files: (path in the archive, bytes, mode) added after it; their directories are made."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    with open(busybox, "rb") as f:
        bb = f.read()
    if has_interpreter(bb):
        raise RuntimeError(f"{busybox} is dynamically linked: install busybox-static (scripts/setup.sh)")
    c = Cpio()
    made = set()
    for d in ("bin", "dev", "proc", "sys", "run", "tmp"):
        c.dir(d)
        made.add(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", bb, 0o755)
    c.file("init", ("#!/bin/busybox sh\n" + init_script).encode(), 0o755)
    for path, data, mode in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                c.dir(d)
                made.add(d)
        c.file(path, data, mode)
    with open(out, "wb") as f:
        f.write(c.finish())
    return out


class Probe:
    """What probe_kvm saw: usable (bool), why (one line), seconds it took."""

    def __init__(self, usable, why, seconds):
        self.usable, self.why, self.seconds = usable, why, seconds


def probe_kvm(kernel_dir=PINNED_KERNEL_DIR, within=PROBE_WITHIN, device="/dev/kvm"):
    """Boot the pinned kernel under KVM with a tiny initramfs whose /init prints PROBE_MARKER
    and powers off; KVM is usable only if the marker arrives within `within` seconds."""
    t0 = time.monotonic()

    def result(usable, why):
        return Probe(usable, why, time.monotonic() - t0)

    if not os.access(device, os.R_OK | os.W_OK):
        return result(False, f"{device} is not there or not accessible")
    try:
        kernel = kernel_path(kernel_dir)
    except FileNotFoundError as e:
        return result(False, f"no kernel to probe with ({e})")
    tmp = tempfile.mkdtemp(prefix="fi-kvm-probe-")
    vm = None
    try:
        initrd = busybox_initramfs(os.path.join(tmp, "probe.cpio"),
                                   f"/bin/busybox echo '{PROBE_MARKER}'\n/bin/busybox poweroff -f\n")
        vm = Vm("kvm-probe", kernel, initrd, "console=ttyS0 panic=-1 quiet", memory=256, accel="kvm",
                logdir=tmp, silent_within=None)
        vm.start()
        try:
            t, _, _ = vm.wait_for(re.escape(PROBE_MARKER), within)
            return result(True, f"the pinned kernel reached userspace under KVM in {t:.1f}s")
        except TimeoutError:
            return result(False, vm.stall("the marker", within, with_log=False))
    except OSError as e:
        return result(False, f"cannot run {QEMU}: {e}")
    finally:
        if vm:
            vm.kill()
        shutil.rmtree(tmp, ignore_errors=True)


_ACCEL = None  # (name, why), resolved once per process


def accelerator():
    """('kvm' or 'tcg', why) for VMs started with accel="auto": FLOWER_INIT_ACCEL when set
    (empty counts as unset), else the probe's answer. Resolved once per process, which prints
    one line saying which and why."""
    global _ACCEL
    if _ACCEL is None:
        value = os.environ.get(ACCEL_ENV)
        if value:
            if value not in ("kvm", "tcg"):
                raise ValueError(f"{ACCEL_ENV}={value!r} is not an accelerator: set it to kvm or tcg, "
                                 "or unset it to let the probe decide")
            _ACCEL = (value, f"{ACCEL_ENV}={value}")
        else:
            p = probe_kvm()
            _ACCEL = ("kvm" if p.usable else "tcg", f"KVM probe, {p.seconds:.1f}s: {p.why}; {ACCEL_ENV}=kvm|tcg overrides")
        print(f"qemu: accelerator {_ACCEL[0]} ({_ACCEL[1]})", file=sys.stderr, flush=True)
    return _ACCEL


def accel_args(accel="auto"):
    """(qemu flags, name, why) for the accelerator; -cpu max under TCG (numpy 2 needs more
    than qemu64)."""
    if accel == "auto":
        accel, why = accelerator()
    else:
        why = "asked for"
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"], "kvm", why
    if accel == "tcg":
        return ["-accel", "tcg", "-cpu", "max"], "tcg", why
    raise ValueError(f"accelerator {accel!r}: kvm, tcg or auto")


def kernel_path(kernel_dir):
    """The kernel in an extracted package (`make kernel`: build/kernel): kernel_dir/boot/vmlinuz-<version>."""
    boot = os.path.join(kernel_dir, "boot")
    names = sorted(n for n in os.listdir(boot) if n.startswith("vmlinuz")) if os.path.isdir(boot) else []
    if not names:
        raise FileNotFoundError(f"no vmlinuz-* in {boot}: run `make kernel`")
    return os.path.join(boot, names[-1])


def make_iso(src_dir, out, label="CONTEXT"):
    """An ISO9660 + Joliet + Rock Ridge volume, as OpenNebula builds the context CD."""
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", label, "-J", "-R", "-o", out, src_dir],
                   check=True, capture_output=True)
    return out


def make_ext4(path, label, size_mb=64, src_dir=None):
    """An ext4 disk image with a label (the state disk FL_STATE, the data disk FL_DATA)."""
    if os.path.exists(path):
        os.unlink(path)
    args = ["mkfs.ext4", "-q", "-F", "-L", label]
    if src_dir:
        args += ["-d", src_dir]
    subprocess.run(args + [path, f"{size_mb}M"], check=True, capture_output=True)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Disk:
    """A virtio disk. boot=True: the disk the firmware boots (libvirt's `<boot order='1'/>`,
    qemu's bootindex), for VMs started without -kernel."""

    def __init__(self, path, readonly=False, fmt="raw", boot=False):
        self.path, self.readonly, self.fmt, self.boot = path, readonly, fmt, boot


# Debian's ovmf package (scripts/setup.sh): the 4 MiB flash layout, without Secure Boot, as
# OpenNebula's OS/FIRMWARE=UEFI picks on Debian/Ubuntu hosts.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# Debian's qemu-efi-aarch64 (AAVMF, 64 MiB flash images): the UEFI that OpenNebula's aarch64 KVM
# hosts boot every VM with (libvirt's loader for `virt`). Linux then uses ACPI, so the power
# button of `onevm terminate` arrives as an ACPI event, as on x86_64.
AAVMF_CODE = "/usr/share/AAVMF/AAVMF_CODE.fd"
AAVMF_VARS = "/usr/share/AAVMF/AAVMF_VARS.fd"


class Nic:
    """A virtio NIC. Either user-mode networking (restricted: the guest reaches nothing, host
    ports are forwarded in) or a tap device on a bridge (the local federation)."""

    def __init__(self, mac, user_net=None, hostfwd=(), tap=None):
        self.mac, self.user_net, self.hostfwd, self.tap = mac, user_net, list(hostfwd), tap


class Vm:
    """One qemu process: serial console on stdout (the guest's lines), qemu's own messages on
    stderr (logged apart, prefixed "[qemu]"), the human monitor on a unix socket."""

    def __init__(self, name, kernel, initrd, append, disks=(), cdrom=None, nics=(), machine="pc",
                 memory=2048, smp=1, accel="auto", logdir="build/vm-logs", netns=None, extra=(),
                 silent_within=SILENT_WITHIN, firmware="bios", arch="x86_64"):
        """kernel=None: no -kernel/-initrd/-append; the firmware boots the disk marked boot.
        firmware: "bios" (qemu's SeaBIOS; on aarch64 no firmware: the kernel boots with a
        device tree) or "uefi" (OVMF / AAVMF, with a per-VM copy of its variable store in
        logdir). arch="aarch64": qemu-system-aarch64 -M virt (machine "pc" becomes "virt"),
        TCG with -cpu max, the CD on virtio-scsi as OpenNebula attaches it on Arm."""
        if firmware not in ("bios", "uefi"):
            raise ValueError(f"firmware {firmware!r}: bios or uefi")
        if arch not in ("x86_64", "aarch64"):
            raise ValueError(f"arch {arch!r}: x86_64 or aarch64")
        self.arch = arch
        if arch == "aarch64":
            machine = "virt" if machine == "pc" else machine
            if accel == "auto":
                accel = "tcg"  # another architecture: there is nothing to accelerate with
        self.name, self.kernel, self.initrd, self.append = name, kernel, initrd, append
        self.firmware = firmware
        self.logdir = logdir
        self.disks, self.cdrom, self.nics, self.machine = list(disks), cdrom, list(nics), machine
        self.memory, self.smp, self.accel, self.netns, self.extra = memory, smp, accel, netns, list(extra)
        self.silent_within = silent_within
        os.makedirs(logdir, exist_ok=True)
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.monitor_path = os.path.join(logdir, f"{name}.monitor")
        self.lines = []  # console: (host seconds since start, text)
        self.qemu_lines = []  # qemu's stderr
        self.console_bytes = 0
        self.lock = threading.Condition()
        self.proc = None
        self.t0 = None
        self.accel_used = self.accel_why = None
        self.failure = None  # set when the watchdog killed a silent guest
        self.command_line = []  # what start() ran
        self.readers = []
        self.log = None

    def command(self):
        arm = self.arch == "aarch64"
        accel, self.accel_used, self.accel_why = accel_args(self.accel)
        if arm and self.accel == "tcg":
            self.accel_why = "an aarch64 guest on this x86_64 machine"
        cmd = [QEMU_AARCH64 if arm else QEMU, *accel, "-M", self.machine, "-m", str(self.memory), "-smp", str(self.smp),
               "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
               "-serial", "stdio", "-monitor", f"unix:{self.monitor_path},server,nowait"]
        if self.kernel:
            cmd += ["-kernel", self.kernel, "-initrd", self.initrd, "-append", self.append]
        if self.firmware == "uefi":
            code, vars_ = (AAVMF_CODE, AAVMF_VARS) if arm else (OVMF_CODE, OVMF_VARS)
            vars_copy = os.path.join(self.logdir, f"{self.name}.{os.path.basename(vars_)}")
            shutil.copyfile(vars_, vars_copy)
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        for i, d in enumerate(self.disks):
            ro = ",readonly=on" if d.readonly else ""
            if d.boot:
                cmd += ["-drive", f"file={d.path},format={d.fmt},if=none,id=disk{i}{ro}",
                        "-device", f"virtio-blk-pci,drive=disk{i},bootindex=1"]
            else:
                cmd += ["-drive", f"file={d.path},format={d.fmt},if=virtio{ro}"]
        if self.cdrom:
            if arm:
                # OpenNebula's aarch64 VMs: the CD on a virtio-scsi controller (libvirt's bus='scsi').
                cmd += ["-device", "virtio-scsi-pci,id=scsi0",
                        "-drive", f"file={self.cdrom},if=none,id=ctx,media=cdrom,readonly=on",
                        "-device", "scsi-cd,drive=ctx,bus=scsi0.0"]
            elif self.machine.startswith("q35"):
                # q35: the CD on the ICH9 AHCI (SATA) controller, as OpenNebula attaches it there.
                cmd += ["-drive", f"file={self.cdrom},if=none,id=ctx,media=cdrom,readonly=on",
                        "-device", "ide-cd,drive=ctx,bus=ide.0"]
            else:
                cmd += ["-drive", f"file={self.cdrom},if=ide,index=2,media=cdrom,readonly=on"]
        for i, n in enumerate(self.nics):
            if n.tap:
                cmd += ["-netdev", f"tap,id=n{i},ifname={n.tap},script=no,downscript=no"]
            else:
                net = f",net={n.user_net}" if n.user_net else ""
                fwd = "".join(f",hostfwd=tcp:127.0.0.1:{hp}-{gip}:{gp}" for hp, gip, gp in n.hostfwd)
                cmd += ["-netdev", f"user,id=n{i},restrict=on{net}{fwd}"]
            cmd += ["-device", f"virtio-net-pci,netdev=n{i},mac={n.mac}"]
        cmd += self.extra
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd

    def start(self):
        if os.path.exists(self.monitor_path):
            os.unlink(self.monitor_path)
        cmd = self.command()
        self.command_line = cmd
        self.log = open(self.log_path, "w", buffering=1)
        self.log.write(f"# accelerator {self.accel_used} ({self.accel_why})\n# " + " ".join(cmd) + "\n")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.readers = [threading.Thread(target=self._reader, args=(self.proc.stdout, True), daemon=True),
                        threading.Thread(target=self._reader, args=(self.proc.stderr, False), daemon=True)]
        for r in self.readers:
            r.start()
        if self.silent_within:
            threading.Thread(target=self._watchdog, daemon=True).start()
        return self

    def _reader(self, stream, console):
        buf = b""
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            if console:
                with self.lock:
                    self.console_bytes += len(chunk)
                    self.lock.notify_all()
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._line(raw, console)
        if buf:
            self._line(buf, console)
        with self.lock:
            self.lock.notify_all()

    def _line(self, raw, console):
        text = raw.decode("utf-8", "replace").rstrip("\r")
        # Strip terminal control sequences SeaBIOS prints.
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc", "", text)
        t = time.monotonic() - self.t0
        with self.lock:
            (self.lines if console else self.qemu_lines).append((t, text))
            if not self.log.closed:
                self.log.write(f"{t:9.3f} {'' if console else '[qemu] '}{text}\n")
            self.lock.notify_all()

    def _watchdog(self):
        """Kill qemu when the guest has printed nothing within silent_within seconds: a guest
        that is not even printing the kernel's first line is stuck (a KVM that does not run
        guests, a kernel that does not start), and no harness should wait its full timeout."""
        deadline = self.t0 + self.silent_within
        with self.lock:
            while self.console_bytes == 0 and self.proc.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    hint = f"; if KVM does not run guests here, {ACCEL_ENV}=tcg forces TCG" if self.accel_used == "kvm" else ""
                    self.failure = (f"{self.name}: the guest printed nothing on its console within "
                                    f"{self.silent_within:.0f}s of qemu starting, under {self.accel_used} "
                                    f"({self.accel_why}); qemu killed; console log {self.log_path}{hint}")
                    self.log.write(f"{time.monotonic() - self.t0:9.3f} [harness] {self.failure}\n")
                    self.proc.kill()
                    self.lock.notify_all()
                    return
                self.lock.wait(min(left, 1.0))

    def exit_status(self):
        """'running', 'exited N' or 'killed by SIGNAME'."""
        rc = self.proc.poll()
        if rc is None:
            return "running"
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        return f"exited {rc}"

    def stall(self, what, timeout, with_log=True):
        """Why `what` did not appear within timeout seconds, in one line: qemu's state and
        last messages, what the guest printed, the console log."""
        exited = self.proc.poll() is not None
        if exited:
            for r in self.readers:
                r.join(2)  # qemu's last stderr lines say why it stopped
        with self.lock:
            n, last = len(self.lines), (self.lines[-1][1] if self.lines else None)
            binary = os.path.basename(self.command_line[0]) if self.command_line else QEMU
            said = " / ".join(l.replace(f"{binary}: ", "") for _, l in self.qemu_lines[-2:])
        printed = f"the guest printed {n} lines, the last {last!r}" if self.console_bytes else "the guest printed nothing"
        said = f"; qemu said: {said}" if said else ""
        log = f"; console log {self.log_path}" if with_log else ""
        if exited:
            return f"qemu {self.exit_status()} after {self.elapsed():.1f}s under {self.accel_used}, before {what}: {printed}{said}{log}"
        return f"{what} did not come within {timeout:g}s under {self.accel_used}: {printed}{said}{log}"

    def wait_for(self, pattern, timeout, since=0):
        """First console line at index >= since matching pattern: (host seconds, line, index).
        TimeoutError when none comes in time or qemu exits; GuestSilent when the watchdog
        killed a guest that printed nothing."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = since
        with self.lock:
            while True:
                while i < len(self.lines):
                    t, line = self.lines[i]
                    if rx.search(line):
                        return t, line, i
                    i += 1
                if self.failure:
                    raise GuestSilent(self.failure)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and i >= len(self.lines)):
                    break
                self.lock.wait(min(left, 1.0))
        raise TimeoutError(f"{self.name}: " + self.stall(f"a console line matching {pattern!r}", timeout))

    def monitor(self, command):
        """Send one human-monitor command (e.g. system_powerdown) and return its reply."""
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(self.monitor_path)
        time.sleep(0.2)
        s.recv(65536)  # banner and prompt
        s.sendall(command.encode() + b"\n")
        time.sleep(0.3)
        try:
            return s.recv(65536).decode("utf-8", "replace")
        finally:
            s.close()

    def powerdown(self):
        """The ACPI power button: what `onevm terminate` (libvirt shutdown) sends."""
        return self.monitor("system_powerdown")

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def elapsed(self):
        return time.monotonic() - self.t0

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for r in self.readers:
            r.join(5)
        for stream in (self.proc.stdout, self.proc.stderr) if self.proc else ():
            stream.close()
        if self.log:
            with self.lock:
                self.log.close()

    def text(self):
        with self.lock:
            return "\n".join(l for _, l in self.lines)


def http_get(host, port, path, timeout=5.0):
    """(status, body) of a plain HTTP/1.0 GET, or (None, error) if the connection fails."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return None, str(e)
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ")[1])
    except (IndexError, ValueError):
        return None, f"not HTTP: {data[:80]!r}"
    return status, body.decode("utf-8", "replace")
