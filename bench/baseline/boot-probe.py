#!/usr/bin/python3
"""Baseline harness probe (from ../shared/research/baseline-systemd-vm.md, quick mode only):
poll the SuperLink's /health every 100 ms, print the marker on the serial console, power off."""
import os, subprocess, time, urllib.request

CON = "/dev/ttyS0"


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def out(msg):
    line = f"[probe up={uptime():.3f}] {msg}\r\n".encode()
    # re-open per line: serial-getty's vhangup() invalidates fds opened earlier (EIO)
    for _ in range(50):
        try:
            fd = os.open(CON, os.O_WRONLY | os.O_NOCTTY)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            return
        except OSError:
            time.sleep(0.02)


def healthy():
    try:
        with urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=1.0) as r:
            return r.status == 200
    except Exception:
        return False


t0 = time.monotonic()
while not healthy():
    time.sleep(0.1)
out(f"SUPERLINK-HEALTHY probe_waited={time.monotonic() - t0:.3f}s")
subprocess.run(["systemctl", "poweroff", "--no-block"])
