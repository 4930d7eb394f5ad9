"""Files the ServerApp leaves for flower-init and operators, all written atomically
(temporary file in the same directory, fsync, rename, fsync of the directory), so a reader or
a power cut never sees half a file.

* the status file (run-config ``status-file``): progress of the current run;
* checkpoints (``checkpoint-dir``): ``checkpoint_<run id>_round_<NNNN>.npz`` every
  ``checkpoint-interval`` rounds and after the last round, ``checkpoint_latest.npz`` (a relative
  symlink to the newest) and ``checkpoint_latest.json`` (its metadata).
"""

import io
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from . import model as M

STATUS_VERSION = 1
LATEST_NPZ = "checkpoint_latest.npz"
LATEST_JSON = "checkpoint_latest.json"


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


class StatusFile:
    """The JSON progress file flower-init reads to publish FL_RUN_* (no log parsing).

    Fields: version, run_id (string: u64 ids exceed JSON-safe integers), status (waiting |
    running | completed | failed), round (last finished round, 0 before the first),
    num_rounds, loss and accuracy (federated evaluation after `round`, null before),
    strategy, use_case, connected_nodes (while waiting), message (why it failed, or a note),
    checkpoint (newest checkpoint file), history ([{round, loss, accuracy, train, replies}],
    train being the aggregated train metrics, replies {"train": [ok, failed], "evaluate": [ok,
    failed]} the nodes' answers), updated (UTC).
    """

    def __init__(self, path: str, run_id: int, num_rounds: int | None = None,
                 strategy: str | None = None, use_case: str | None = None):
        self.path = Path(path) if path else None
        self.doc = {
            "version": STATUS_VERSION, "run_id": str(run_id), "status": "waiting", "round": 0,
            "num_rounds": num_rounds, "loss": None, "accuracy": None, "strategy": strategy,
            "use_case": use_case, "connected_nodes": None, "message": "", "checkpoint": None,
            "history": [], "updated": _now(),
        }

    def update(self, **fields) -> None:
        self.doc.update(fields)
        self.doc["updated"] = _now()
        if self.path is not None:
            write_atomic(self.path, _json(self.doc))

    def round_done(self, rnd: int, loss: float | None, accuracy: float | None, train: dict,
                   replies: dict | None = None) -> None:
        self.doc["history"].append({"round": rnd, "loss": loss, "accuracy": accuracy, "train": train,
                                    "replies": replies or {}})
        self.update(status="running", round=rnd, loss=loss, accuracy=accuracy)


class Checkpointer:
    """Writes the global model every `interval` rounds and after the last round."""

    def __init__(self, directory: str, interval: int, num_rounds: int, meta: dict):
        self.dir = Path(directory)
        self.interval = interval
        self.num_rounds = num_rounds
        self.meta = meta  # run_id, strategy, use_case, resumed_from ...

    def due(self, rnd: int) -> bool:
        return rnd >= 1 and (rnd % self.interval == 0 or rnd == self.num_rounds)

    def write(self, rnd: int, model, metrics: dict) -> Path:
        """Write round `rnd`'s model and move the latest link and metadata to it."""
        name = f"checkpoint_{self.meta['run_id']}_round_{rnd:04d}.npz"
        buf = io.BytesIO()
        M.save_npz(buf, model)
        write_atomic(self.dir / name, buf.getvalue())
        # The link is replaced with rename(2) too: readers never see it missing.
        tmp_link = self.dir / f".{LATEST_NPZ}.tmp-{os.getpid()}"
        if tmp_link.is_symlink() or tmp_link.exists():
            tmp_link.unlink()
        os.symlink(name, tmp_link)
        os.replace(tmp_link, self.dir / LATEST_NPZ)
        _fsync_dir(self.dir)
        doc = dict(self.meta)
        doc.update({
            "round": rnd, "num_rounds": self.num_rounds, "file": name, "time": _now(),
            "unix_time": time.time(), "metrics": metrics,
            "arrays": {k: list(v.shape) for k, v in model.items()},
        })
        write_atomic(self.dir / LATEST_JSON, _json(doc))
        return self.dir / name


def read_latest(directory: str):
    """(model, metadata) of checkpoint_latest in `directory`, or None when there is none."""
    d = Path(directory)
    if not (d / LATEST_NPZ).exists():
        return None
    meta = json.loads((d / LATEST_JSON).read_text()) if (d / LATEST_JSON).exists() else {}
    return M.load_npz(d / LATEST_NPZ), meta
