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
"""

import os
import sys

DEFAULT_S = 120  # covers a cold app start under qemu TCG (~50 s measured) 2.4 times
ENV = "FLOWER_INIT_TASK_WINDOW"
TARGET = "flwr.common.constant"


def window():
    """The interval in seconds: FLOWER_INIT_TASK_WINDOW when valid, else the default."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return DEFAULT_S
    try:
        v = int(raw)
    except ValueError:
        v = 0
    if 10 <= v <= 1800:
        return v
    print(f"flower-init: {ENV}={raw!r} must be whole seconds in 10..1800; using {DEFAULT_S}",
          file=sys.stderr, flush=True)
    return DEFAULT_S


class _Loader:
    """Runs the real loader, then sets the constant before anything can import it."""

    def __init__(self, inner, value):
        self.inner, self.value = inner, value

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        module.HEARTBEAT_DEFAULT_INTERVAL = self.value
        module.FLOWER_INIT_TASK_WINDOW = self.value


class _Finder:
    """A meta-path finder for `flwr.common.constant` only: the other finders find it, this one
    wraps its loader. Removes itself once used."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, window())
                return spec
        return None


def install():
    """Put the finder first on sys.meta_path (once)."""
    if TARGET not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


install()
