"""Programs the zygote serves in the tests (zygote.py --program NAME=probe_app:FUNCTION): each
says what it was given and where it runs."""

import json
import os
import signal
import sys
import time


def report():
    """argv, cwd, an env variable, pid/ppid, what stdin held; exit with PROBE_EXIT (default 0)."""
    data = sys.stdin.read()
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE_VALUE"),
                      "added": os.environ.get("FLWR_PROBE_ADDED"),
                      "pid": os.getpid(), "ppid": os.getppid(), "stdin": data,
                      "nice": os.getpriority(os.PRIO_PROCESS, 0),
                      "warm": "probe_app" in sys.modules and "flwr.supernode.cli" in sys.modules}))
    print("to stderr", file=sys.stderr)
    return int(os.environ.get("PROBE_EXIT", "0"))


def sleeper():
    """Write its pid to argv[1], then wait for signals: SIGTERM is recorded in argv[2] and ends
    it with exit 7; SIGKILL ends it as it would anyone."""
    def on_term(sig, _frame):
        with open(sys.argv[2], "w") as f:
            f.write(str(sig))
        sys.exit(7)
    signal.signal(signal.SIGTERM, on_term)
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)


def die_by_signal():
    """Kill itself with SIGUSR1 (the shim must die of the same signal)."""
    os.kill(os.getpid(), signal.SIGUSR1)
    time.sleep(5)
    return 1
