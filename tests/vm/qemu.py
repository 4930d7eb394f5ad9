"""Drive a qemu VM the way OpenNebula would run an appliance, and watch it from outside.

    vm = Vm("sl", kernel=..., initrd=..., append="console=ttyS0 quiet",
            disks=[Disk("build/image/sklearn/image.squashfs", readonly=True)],
            cdrom="context.iso", nics=[Nic("02:00:c0:a8:96:0a", user_net="192.168.150.0/24",
            hostfwd=[(port, "192.168.150.10", 8081)])])
    vm.start()
    t, line = vm.wait_for(r"flower healthy", 300)
    vm.powerdown(); vm.wait_exit(60)

Every console line is stamped with host seconds since qemu was started (the harness of
research/baseline-systemd-vm.md) and written to a log file. KVM is used when it works, TCG
otherwise (`/dev/kvm` exists on these machines but does not work: detect, never assume).
"""
import os
import re
import socket
import subprocess
import threading
import time

_KVM = None


def kvm_usable():
    """True if qemu can really start a KVM guest here (probes once per process)."""
    global _KVM
    if _KVM is None:
        _KVM = False
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            try:
                # A real machine with a vCPU (-M none passes where a guest fails: MSR writes); `quit` ends it.
                # (No -daemonize/-pidfile: qemu unlinks its pidfile on exit, /dev/null included.)
                r = subprocess.run(["qemu-system-x86_64", "-accel", "kvm", "-M", "pc", "-cpu", "host", "-display", "none",
                                    "-monitor", "stdio", "-serial", "none", "-nodefaults", "-S"],
                                   input=b"quit\n", capture_output=True, timeout=15)
                _KVM = r.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                _KVM = False
    return _KVM


def accel_args(accel="auto"):
    """qemu flags for the accelerator; -cpu max under TCG (numpy 2 needs more than qemu64)."""
    if accel == "kvm" or (accel == "auto" and kvm_usable()):
        return ["-accel", "kvm", "-cpu", "host"], "kvm"
    return ["-accel", "tcg", "-cpu", "max"], "tcg"


def kernel_path(kernel_dir):
    """The pinned kernel `make kernel` extracted: KERNEL_DIR/boot/vmlinuz-<version>."""
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
    def __init__(self, path, readonly=False, fmt="raw"):
        self.path, self.readonly, self.fmt = path, readonly, fmt


class Nic:
    """A virtio NIC. Either user-mode networking (restricted: the guest reaches nothing, host
    ports are forwarded in) or a tap device on a bridge (the local federation)."""

    def __init__(self, mac, user_net=None, hostfwd=(), tap=None):
        self.mac, self.user_net, self.hostfwd, self.tap = mac, user_net, list(hostfwd), tap


class Vm:
    def __init__(self, name, kernel, initrd, append, disks=(), cdrom=None, nics=(), machine="pc",
                 memory=2048, smp=1, accel="auto", logdir="build/vm-logs", netns=None, extra=()):
        self.name, self.kernel, self.initrd, self.append = name, kernel, initrd, append
        self.disks, self.cdrom, self.nics, self.machine = list(disks), cdrom, list(nics), machine
        self.memory, self.smp, self.accel, self.netns, self.extra = memory, smp, accel, netns, list(extra)
        os.makedirs(logdir, exist_ok=True)
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.monitor_path = os.path.join(logdir, f"{name}.monitor")
        self.lines = []  # (host seconds since start, text)
        self.lock = threading.Condition()
        self.proc = None
        self.t0 = None
        self.accel_used = None

    def command(self):
        accel, self.accel_used = accel_args(self.accel)
        cmd = ["qemu-system-x86_64", *accel, "-M", self.machine, "-m", str(self.memory), "-smp", str(self.smp),
               "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
               "-serial", "stdio", "-monitor", f"unix:{self.monitor_path},server,nowait",
               "-kernel", self.kernel, "-initrd", self.initrd, "-append", self.append]
        for i, d in enumerate(self.disks):
            ro = ",readonly=on" if d.readonly else ""
            cmd += ["-drive", f"file={d.path},format={d.fmt},if=virtio{ro}"]
        if self.cdrom:
            if self.machine.startswith("q35"):
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
        self.log = open(self.log_path, "w", buffering=1)
        self.log.write("# " + " ".join(cmd) + "\n")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._reader, daemon=True).start()
        return self

    def _reader(self):
        buf = b""
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                self._line(raw)
        if buf:
            self._line(buf)
        with self.lock:
            self.lock.notify_all()

    def _line(self, raw):
        text = raw.decode("utf-8", "replace").rstrip("\r")
        # Strip terminal control sequences SeaBIOS prints.
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc", "", text)
        t = time.monotonic() - self.t0
        with self.lock:
            self.lines.append((t, text))
            self.lock.notify_all()
        self.log.write(f"{t:9.3f} {text}\n")

    def wait_for(self, pattern, timeout, since=0):
        """First console line at index >= since matching pattern: (host seconds, line, index)."""
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
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and i >= len(self.lines)):
                    raise TimeoutError(f"{self.name}: no console line matching {pattern!r} within {timeout}s "
                                       f"(qemu {'exited ' + str(self.proc.returncode) if self.proc.poll() is not None else 'running'}; "
                                       f"log {self.log_path})")
                self.lock.wait(min(left, 1.0))

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
        if getattr(self, "log", None):
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
