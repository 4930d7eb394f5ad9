"""Widen Flower 1.42's task-start window (imported by flower_init_task_window.pth at start-up).

Flower gives a freshly claimed task HEARTBEAT_DEFAULT_INTERVAL seconds (30) until its app
process makes its first Runtime API call (`claim_task` in supercore/corestate/sql_corestate.py
and in_memory_corestate.py: `active_until = claimed_at + HEARTBEAT_DEFAULT_INTERVAL`); later,
the claim goes back to PENDING and the late process gets 401 forever. Those modules bind the
name at import (`from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL`), so the value
must be in place before they import: this hook sets it the moment `flwr.common.constant`
finishes executing, in every Python process of the image's venv, without importing Flower
into processes that never use it.

The same constant also sets, consistently in every process of the image: the app's and the
SuperNode's heartbeat period ((I - 5 s) x 0.8), and the time after which a silent app or node
is declared dead (HEARTBEAT_PATIENCE x I). FLOWER_INIT_TASK_WINDOW (seconds, 10-1800: Flower's
own bounds for a node's heartbeat interval) overrides the default.

Two more settings for slow machines, the same way:

- `flwr.supercore.constant`: SQLite's busy timeout in Flower's state database. Flower 1.42 sets
  `PRAGMA busy_timeout = 5000` (SQLITE_PRAGMAS); on a loaded machine a writer can hold the lock
  longer, and the request waiting on it fails with `database is locked`, which the Fleet API
  answers 500. FLOWER_INIT_SQLITE_BUSY_MS (1000-600000, default 60000) sets it.
- `flwr.supernode.start_client_internal`: a SuperNode whose connection loop ends (Flower's
  retry gives up on a 500, `supercore/retry/http_retry.py`: only 502/503/504 are retried) has
  deactivated and unregistered itself, but its process lives on (the Runtime API's thread is
  not a daemon): up, healthy, and out of the federation for good. The wrapper makes the process
  exit instead (status 75, EX_TEMPFAIL), so that flower-init restarts Flower and the node
  registers again.
"""

import functools
import os
import sys

DEFAULT_S = 120  # covers a cold app start under qemu TCG (~50 s measured) 2.4 times
ENV = "FLOWER_INIT_TASK_WINDOW"
BUSY_DEFAULT_MS = 60_000
BUSY_ENV = "FLOWER_INIT_SQLITE_BUSY_MS"
# EX_TEMPFAIL (sysexits.h): the connection ended; a restart may well succeed.
SUPERNODE_LOOP_ENDED = 75


def _setting(env, default, lo, hi, unit):
    """The whole number in `env` when in lo..hi, else `default` (said on stderr when set)."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        v = int(raw)
    except ValueError:
        v = lo - 1
    if lo <= v <= hi:
        return v
    print(f"flower-init: {env}={raw!r} must be whole {unit} in {lo}..{hi}; using {default}",
          file=sys.stderr, flush=True)
    return default


def window():
    """The interval in seconds: FLOWER_INIT_TASK_WINDOW when valid, else the default."""
    return _setting(ENV, DEFAULT_S, 10, 1800, "seconds")


def busy_ms():
    """SQLite's busy timeout in milliseconds: FLOWER_INIT_SQLITE_BUSY_MS when valid."""
    return _setting(BUSY_ENV, BUSY_DEFAULT_MS, 1000, 600_000, "milliseconds")


def _task_window(module):
    v = window()
    module.HEARTBEAT_DEFAULT_INTERVAL = v
    module.FLOWER_INIT_TASK_WINDOW = v


def _sqlite_busy(module):
    ms = str(busy_ms())
    module.SQLITE_PRAGMAS = tuple((k, ms if k == "busy_timeout" else v) for k, v in module.SQLITE_PRAGMAS)
    module.FLOWER_INIT_SQLITE_BUSY_MS = int(ms)


def _supernode_exits(module):
    inner = module.start_client_internal

    @functools.wraps(inner)
    def start_client_internal(*args, **kwargs):
        try:
            inner(*args, **kwargs)
            why = "its loop returned; Flower logged why above"
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # noqa: BLE001: whatever ended it, the node is out
            why = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        print(f"flower-init: the SuperNode's connection to the SuperLink ended ({why}); "
              f"exiting ({SUPERNODE_LOOP_ENDED}) so that it is restarted and registers again",
              file=sys.stderr, flush=True)
        os._exit(SUPERNODE_LOOP_ENDED)

    module.start_client_internal = start_client_internal
    module.FLOWER_INIT_EXITS = True


# Module -> what to set once it has executed, before anything can import names from it.
TARGETS = {
    "flwr.common.constant": _task_window,
    "flwr.supercore.constant": _sqlite_busy,
    "flwr.supernode.start_client_internal": _supernode_exits,
}


class _Loader:
    """Runs the real loader, then applies the module's settings."""

    def __init__(self, inner, apply):
        self.inner, self.apply = inner, apply

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.apply(module)


class _Finder:
    """A meta-path finder for the TARGETS only: the other finders find them, this one wraps
    their loaders. Removes itself once every target has been found."""

    def __init__(self):
        self.pending = {n for n in TARGETS if n not in sys.modules}

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        self.pending.discard(name)
        if not self.pending:
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, TARGETS[name])
                return spec
        return None


def install():
    """Put the finder first on sys.meta_path (once)."""
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    finder = _Finder()
    if finder.pending:
        sys.meta_path.insert(0, finder)


install()
