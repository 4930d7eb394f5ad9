#!/usr/bin/python3 -IS
"""`flwr-serverapp` / `flwr-clientapp` as Flower's SuperExec starts them, warm (zygote.py).

Installed under the names of Flower's app commands in a directory earlier on PATH than the
venv's bin. It hands its argv, environment, working directory and stdio to the zygote, which
forks a process that already imported Flower and the app's dependencies; it then stands in for
that process: signals it receives go to it, and it exits with its exit status (or dies of the
same signal). Started with `python3 -IS`: no site, nothing imported beyond the standard
library's basics, so the shim itself starts in a few milliseconds.

Whenever the zygote cannot serve (no socket, nobody listening, it answers "cold", it breaks
off before the app started), the shim execs the real command from the rest of PATH: never
worse than without the zygote. FLOWER_INIT_ZYGOTE_SOCKET names the socket; empty: cold.
"""

import array
import json
import os
import signal
import socket
import struct
import sys

# How long the zygote may take to answer with the app's pid: it accepts once its preload is
# done (it binds first), and that preload is shorter than the cold start it replaces.
WAIT_FOR_PID_S = 300.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def real_command(program):
    """`program` on PATH after this shim's own directory."""
    here = os.path.dirname(os.path.realpath(__file__))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or os.path.realpath(d) == here:
            continue
        p = os.path.join(d, program)
        if os.access(p, os.X_OK) and os.path.realpath(p) != os.path.realpath(__file__):
            return p
    return None


def cold(program, why):
    """Run the real command in this process (what Flower would have run)."""
    real = real_command(program)
    if real is None:
        print(f"flower-init shim: {program} not found on PATH ({why})", file=sys.stderr, flush=True)
        sys.exit(127)
    if why and os.environ.get("FLOWER_INIT_ZYGOTE_QUIET") != "1":
        print(f"flower-init shim: cold start of {program}: {why}", file=sys.stderr, flush=True)
    os.execv(real, [real] + sys.argv[1:])


def frame(obj):
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def read_frame(sock):
    """One frame from the zygote, or None at end of stream."""
    head = b""
    while len(head) < 4:
        b = sock.recv(4 - len(head))
        if not b:
            return None
        head += b
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        b = sock.recv(n - len(body))
        if not b:
            return None
        body += b
    return json.loads(body)


def hurry(sock):
    """An app is waiting: the zygote's preload, if still running at a lower priority (it yields
    to Flower's start, zygote.py), is on the app's critical path now. Give it this shim's
    priority. The kernel allows it because the zygote's RLIMIT_NICE lets it return to nice 0
    (the same user may renice a process within that process's limit); a refusal changes
    nothing but the speed."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        zygote = struct.unpack("3i", creds)[0]
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        if zygote > 0 and os.getpriority(os.PRIO_PROCESS, zygote) > mine:
            os.setpriority(os.PRIO_PROCESS, zygote, mine)
    except OSError:
        pass


def main():
    program = os.path.basename(sys.argv[0])
    path = os.environ.get("FLOWER_INIT_ZYGOTE_SOCKET", "")
    if not path:
        cold(program, "")
    real = real_command(program)
    if real is None:
        cold(program, "no real command")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        req = {"program": program, "argv": [real] + sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
        s.sendmsg([frame(req)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        hurry(s)
        s.settimeout(WAIT_FOR_PID_S)
        first = read_frame(s)
    except (OSError, ValueError) as e:
        s.close()
        cold(program, f"zygote at {path} unavailable: {e}")
    if not first or "pid" not in first:
        s.close()
        cold(program, (first or {}).get("cold") or "the zygote closed the connection")
    pid = first["pid"]

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    s.settimeout(None)
    while True:
        try:
            end = read_frame(s)
            break
        except InterruptedError:
            continue
    if end is None:
        # The zygote died: the app was its child and died with it (or is orphaned).
        print(f"flower-init shim: lost the zygote while {program} (pid {pid}) ran", file=sys.stderr, flush=True)
        sys.exit(125)
    if "signal" in end:
        sig = end["signal"]
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        sys.exit(128 + sig)
    sys.exit(end.get("exit", 125))


if __name__ == "__main__":
    main()
