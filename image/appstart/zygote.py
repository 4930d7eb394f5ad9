"""Warm app start for Flower: a fork server ("zygote") inside the Flower container.

Flower 1.42's SuperExec starts every ServerApp/ClientApp as a new process (`flwr-serverapp` /
`flwr-clientapp` found on PATH) right after it claimed the task, and the task's token expires
unless that process makes its first Runtime API call within HEARTBEAT_DEFAULT_INTERVAL = 30 s
(supercore/corestate/sql_corestate.py `claim_task`; the expired claim goes back to PENDING and
every call of the late process answers 401 "task-token authentication failed", forever). A
cold Python start that imports Flower, numpy and the framework takes ~50 s under qemu TCG.

This server pays that import once, when the container starts: it imports Flower's app entry
points and the bundled app's modules (its heavy dependencies stay loaded, the app's own
modules are dropped so Flower loads the submitted FAB's), starts no thread, and waits on a
Unix socket. The shims `flwr-serverapp`/`flwr-clientapp` (shim.py, earlier on PATH) send it
their argv, environment, working directory and stdio (SCM_RIGHTS); it forks, and the child
becomes that app: same argv, fds 0-2, cwd and environment, then the console script's function
(`sys.exit(main())`, a normal interpreter exit). The parent reports the child's pid and then
its wait status to the shim, which exits the same way; a shim that goes away takes its child
with it (SIGKILL), as a cold app would go with its process.

Protocol on the socket (one connection per app start), all JSON in 4-byte big-endian
length-prefixed frames:
  shim -> zygote: {"program", "argv", "env", "cwd"} with fds 0, 1, 2 attached
  zygote -> shim: {"pid": N}  then  {"exit": code} | {"signal": n}
              or: {"cold": "reason"}  (the shim then execs the real command itself)

    python zygote.py --socket PATH [--preload PROGRAM ...] [--manifest image.json]
"""

import argparse
import gc
import array
import importlib
import json
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time

MAX_FRAME = 4 << 20  # an environment and argv are a few KiB; anything bigger is not a shim
REQUEST_TIMEOUT_S = 10.0  # a connected shim sends its request at once


def log(msg):
    """One line on the container's output (flower-init shows it on the console and /status)."""
    print(f"flower-init zygote: {msg}", file=sys.stderr, flush=True)


def send_frame(sock, obj, fds=()):
    """One length-prefixed JSON frame, with `fds` attached (SCM_RIGHTS)."""
    data = json.dumps(obj).encode()
    payload = struct.pack(">I", len(data)) + data
    if fds:
        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(payload)


def recv_frame(sock, want_fds=0):
    """One frame: (object, fds). (None, []) at end of stream."""
    head, fds = b"", []
    while len(head) < 4:
        if want_fds and not fds:
            msg, anc, _flags, _addr = sock.recvmsg(4 - len(head), socket.CMSG_SPACE(want_fds * 4))
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(data[: len(data) - len(data) % a.itemsize])
                    fds.extend(a)
        else:
            msg = sock.recv(4 - len(head))
        if not msg:
            for fd in fds:
                os.close(fd)
            return None, []
        head += msg
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            raise ValueError("stream ended inside a frame")
        body += chunk
    return json.loads(body), fds


_LOADED = {}  # program -> its function, resolved by the preload (the metadata scan is slow)


_EXTRA = {}  # program -> "module:function" given with --program (tests, custom commands)


def entry_point(program):
    """The console script `program` of this venv: its `module:function` entry point."""
    # Imported here, in the preload: 0.1 s natively (zipfile, email), which on a one-CPU VM
    # would otherwise run beside Flower's start at the zygote's start-up priority.
    import importlib.metadata
    if program in _EXTRA:
        return importlib.metadata.EntryPoint(program, _EXTRA[program], "console_scripts")
    eps = importlib.metadata.entry_points(group="console_scripts", name=program)
    for ep in eps:
        return ep
    raise LookupError(f"no console script {program!r} in {sys.prefix}")


def app_modules(manifest_path):
    """The bundled app's ServerApp/ClientApp modules from the image manifest (may be absent)."""
    try:
        with open(manifest_path) as f:
            app = json.load(f).get("app") or {}
    except (OSError, ValueError):
        return []
    refs = [app.get("serverapp"), app.get("clientapp")]
    return [r.partition(":")[0] for r in refs if isinstance(r, str) and r]


def preload(programs, modules):
    """Import the entry points and the app's modules, then forget the app's own packages (Flower
    imports the submitted FAB's copy: `object_ref.load_app` reuses a module already in
    sys.modules). Returns what failed, as text; a failure only makes that start cold-ish."""
    problems = []
    for p in programs:
        try:
            _LOADED[p] = entry_point(p).load()
        except Exception as e:  # a missing or broken entry point: the shim's child says so
            problems.append(f"{p}: {type(e).__name__}: {e}")
    before = set(sys.modules)
    for m in modules:
        try:
            importlib.import_module(m)
        except Exception as e:
            problems.append(f"{m}: {type(e).__name__}: {e}")
    tops = {m.split(".")[0] for m in modules}
    for name in [n for n in sys.modules if n not in before and n.split(".")[0] in tops]:
        del sys.modules[name]
    return problems


def native_threads():
    """Threads of this process as the kernel sees them (C libraries' pools included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


class Server:
    """The accept/fork/reap loop. Single-threaded: a fork from here copies one thread."""

    def __init__(self, listener, startup_env, cold_reason=None):
        self.listener = listener
        self.cold_reason = cold_reason
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, ("accept", None))
        # The environment the preload ran under, and what its imports added to it (a cold
        # start's imports would add the same).
        self.env = startup_env
        self.added = {k: v for k, v in os.environ.items() if k not in startup_env}
        self.children = {}  # pid -> (conn, pidfd)

    def serve(self):
        """Serve until a fork: returns the request in the child (never in the parent)."""
        while True:
            for key, _ in self.sel.select():
                what, data = key.data
                if what == "accept":
                    req = self.accept()
                    if req is not None:
                        return req
                elif what == "exited":
                    self.reap(data)
                elif what == "conn":
                    self.shim_gone(data)

    def accept(self):
        conn, _ = self.listener.accept()
        conn.settimeout(REQUEST_TIMEOUT_S)
        fds = []
        try:
            req, fds = recv_frame(conn, want_fds=3)
            if req is None:
                conn.close()
                return None
            why = self.cold_reason or self.refuse(req, fds)
            if why:
                for fd in fds:
                    os.close(fd)
                fds = []
                send_frame(conn, {"cold": why})
                conn.close()
                return None
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except (OSError, ValueError) as e:
            log(f"request refused: {e}")
            for fd in fds:
                os.close(fd)
            conn.close()
            return None
        if pid == 0:
            return self.become_child(conn, req, fds)
        for fd in fds:
            os.close(fd)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as e:  # no pidfd: kill it and let the shim run the command cold
            log(f"pidfd_open({pid}): {e}")
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            send_frame(conn, {"cold": f"pidfd_open: {e}"})
            conn.close()
            return None
        log(f"{req.get('program')}: started warm as pid {pid}")
        self.children[pid] = (conn, pidfd)
        self.sel.register(pidfd, selectors.EVENT_READ, ("exited", pid))
        self.sel.register(conn, selectors.EVENT_READ, ("conn", pid))
        try:
            send_frame(conn, {"pid": pid})
        except OSError:
            self.shim_gone(pid)
        return None

    def refuse(self, req, fds):
        """Why this request cannot start warm (None: it can)."""
        if len(fds) != 3:
            return f"expected stdio (3 fds), got {len(fds)}"
        if not isinstance(req.get("argv"), list) or not isinstance(req.get("env"), dict):
            return "malformed request"
        # Module-level constants read from the environment at import (Flower's FLWR_*, numpy's,
        # the framework's) were read under this process's environment: a different one would
        # give the app another configuration than a cold start would.
        diff = sorted(k for k in set(req["env"]) | set(self.env)
                      if req["env"].get(k) != self.env.get(k) and k.startswith(("FLWR_", "PYTHON", "OMP_", "OPENBLAS_", "MKL_", "CUDA_", "FL_")))
        if diff:
            return f"environment differs from the zygote's in {', '.join(diff)}"
        return None

    def become_child(self, conn, req, fds):
        """In the forked child: drop the server's state, take the shim's stdio, cwd, env."""
        for c, pidfd in self.children.values():
            if c is not None:
                c.close()
            os.close(pidfd)
        self.sel.close()
        self.listener.close()
        conn.close()
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(req.get("cwd") or "/")
        os.environ.clear()
        os.environ.update(req["env"])
        for k, v in self.added.items():
            os.environ.setdefault(k, v)
        sys.argv = list(req["argv"])
        return req

    def reap(self, pid):
        """A child exited: its wait status to its shim (if it is still there)."""
        conn, pidfd = self.children.pop(pid)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if conn is None:
            return
        self.sel.unregister(conn)
        msg = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
        try:
            send_frame(conn, msg)
        except OSError:
            pass
        conn.close()

    def shim_gone(self, pid):
        """The shim's end closed before its child exited: the app goes with its process, as a
        cold app is its process. (Shims send nothing after the request; stray bytes are read
        and ignored.)"""
        conn, pidfd = self.children[pid]
        try:
            if conn.recv(4096):
                return
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.sel.unregister(conn)
        conn.close()
        self.children[pid] = (None, pidfd)


def run_child(req):
    """The app itself: the console script's function, with a normal interpreter exit."""
    program = req.get("program") or os.path.basename(sys.argv[0])
    main = _LOADED.get(program) or entry_point(program).load()
    sys.exit(main())


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, help="the Unix socket the shims connect to")
    ap.add_argument("--preload", action="append", default=[], help="console script to import (repeatable)")
    ap.add_argument("--program", action="append", default=[], metavar="NAME=MODULE:FUNCTION",
                    help="serve NAME by calling MODULE:FUNCTION instead of a console script (repeatable)")
    ap.add_argument("--manifest", default="/etc/flower-init/image.json",
                    help="the image manifest: its app's serverapp/clientapp modules are imported too")
    return ap.parse_args(argv)


def _has_cap_sys_nice():
    """CAP_SYS_NICE (bit 23) in this process's effective set."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 23))
    except (OSError, ValueError, IndexError):
        pass
    return False


def _preload_nice(base):
    """The preload's nice value and a note for the ready line: FLOWER_INIT_ZYGOTE_NICE (0-19,
    default 19), if the process may come back to `base` afterwards: with CAP_SYS_NICE, or else
    (the container has no capability) with a soft RLIMIT_NICE of at least 20 - base, which
    flower-init's container gets where runc can set it. Otherwise `base`: the apps must not
    inherit a lower priority."""
    raw = os.environ.get("FLOWER_INIT_ZYGOTE_NICE", "19")
    try:
        want = int(raw)
    except ValueError:
        want = -1
    if not 0 <= want <= 19:
        log(f"FLOWER_INIT_ZYGOTE_NICE={raw!r}: not 0-19; using 19")
        want = 19
    if want <= base:
        return base, f"preloaded at nice {base}"
    soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if not _has_cap_sys_nice() and soft != resource.RLIM_INFINITY and soft < 20 - base:
        return base, f"preloaded at nice {base}, not {want}: RLIMIT_NICE {soft} would not let it return"
    return want, f"preloaded at nice {want}, apps at {base}"


def cpus():
    """CPUs this process may run on (its affinity). A cgroup CPU quota does not count here:
    within a quota the niced preload takes almost nothing from Flower (CFS weighs 15 against
    1,024), and waiting would only move the preload into the first app's task-start window."""
    return len(os.sched_getaffinity(0))


# How long the preload waits for Flower at most (flower-init's own wait for /health is 600 s).
WAIT_FOR_FLOWER_S = 600.0


def wait_for_flower(listener, addr, limit=WAIT_FOR_FLOWER_S):
    """Wait until Flower serves at `addr` (HOST:PORT, a TCP connect succeeds: flower-init's
    readiness probe's address, which it gives the SuperLink as FLOWER_INIT_PRELOAD_AFTER),
    until a shim is waiting on `listener`, or `limit` seconds. Returns (why the wait ended,
    whether a shim ended it).

    On a one-CPU machine the preload beside Flower's start costs that start ~4 s even at nice
    19 (the CPU in Flower's I/O waits, the disk queue; BENCHMARKS.md): the VM's READY waits for
    it. The SuperLink's first app comes only after the SuperNodes, which OneFlow deploys once
    the SuperLink is READY, so there the preload is better done after Flower serves."""
    host, _, port = addr.rpartition(":")
    t0 = time.monotonic()
    with selectors.DefaultSelector() as sel:
        sel.register(listener, selectors.EVENT_READ)
        while True:
            waited = time.monotonic() - t0
            if sel.select(timeout=0.25):
                return f"when an app came, before Flower served ({waited:.1f}s)", True
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=0.5):
                    return f"after Flower served ({waited:.1f}s)", False
            except (OSError, ValueError):
                pass
            if waited > limit:
                return f"after waiting {limit:.0f}s for Flower to serve", False


def main(argv=None):
    a = parse_args(argv)
    startup_env = dict(os.environ)
    for spec in a.program:
        name, _, target = spec.partition("=")
        _EXTRA[name] = target
    # Bound first: a shim arriving during the preload waits for it (less than a cold start)
    # instead of finding no socket and starting cold.
    directory = os.path.dirname(a.socket) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(a.socket)
    os.chmod(a.socket, 0o600)
    listener.listen(64)
    cold = None
    # The preload runs beside Flower's own start (about as many imports), niced: it takes the
    # CPU Flower's start leaves. On one CPU even that delays Flower's /health (the VM's READY)
    # by ~4 s, so where flower-init says the first app comes well after READY (the SuperLink:
    # FLOWER_INIT_PRELOAD_AFTER) it first waits until Flower serves (wait_for_flower).
    # Either way it finishes well inside the first app's task-start window
    # (flower_init_task_window.py), and an app that comes early gets the preload at its own
    # priority. Back to the start's priority before any app is forked; that needs
    # RLIMIT_NICE >= 20 - it, which flower-init's container sets.
    base_nice = os.getpriority(os.PRIO_PROCESS, 0)
    preload_nice, nice_note = _preload_nice(base_nice)
    if preload_nice > base_nice:
        os.setpriority(os.PRIO_PROCESS, 0, preload_nice)
    health = os.environ.get("FLOWER_INIT_PRELOAD_AFTER", "")
    if health and cpus() < 2:
        waited, app_waiting = wait_for_flower(listener, health)
        if app_waiting and preload_nice > base_nice:
            os.setpriority(os.PRIO_PROCESS, 0, base_nice)  # _preload_nice checked it may
            preload_nice, nice_note = base_nice, f"preloaded at nice {base_nice}"
        nice_note += f", one CPU: started {waited}"
    t0 = time.monotonic()
    try:
        problems = preload(a.preload, app_modules(a.manifest))
    except BaseException as e:  # never leave shims waiting on a dead preload
        problems, cold = [f"{type(e).__name__}: {e}"], f"preload failed: {type(e).__name__}: {e}"
    if threading.active_count() > 1:
        # fork() copies only the calling thread: a lock held by another Python thread stays
        # held in the child forever. Refuse to fork rather than hang an app. (Native pools
        # such as OpenBLAS's, started by `import numpy`, shut down around fork() in their own
        # pthread_atfork handlers, as multiprocessing's fork start method relies on.)
        cold = f"{threading.active_count()} Python threads after the preload; forking is unsafe"
    if preload_nice > base_nice:
        # (A shim that arrived during the preload may have done this already: shim.py, hurry.)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, base_nice)
        except OSError as e:
            problems.append(f"apps run at nice {preload_nice}: cannot return to nice {base_nice} ({e})")
    # The preloaded objects live as long as the process: out of the collector's sight, a
    # child's collections skip them and do not touch (copy) their pages.
    gc.collect()
    gc.freeze()
    took = time.monotonic() - t0
    if cold:
        log(f"serving cold starts only ({cold}); socket {a.socket}")
    else:
        log(f"ready in {took:.1f}s: {', '.join(a.preload) or 'no entry point'} preloaded, "
            f"{len(sys.modules)} modules, {native_threads()} native threads, {nice_note}"
            f"{'; problems: ' + '; '.join(problems) if problems else ''}")
    req = Server(listener, startup_env, cold).serve()
    run_child(req)


if __name__ == "__main__":
    main()
