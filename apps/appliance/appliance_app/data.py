"""Each node's training and evaluation data: local files in the data directory when present,
otherwise a deterministic partition of a dataset that scikit-learn ships (nothing downloads).

Data directory: node_config ``data-dir`` if set, else ``/app/data`` (the appliance mounts the
data disk there read-only). Accepted files (docs/app.md has the full rules):

* tabular-classification: ``train.csv`` (header row, numeric feature columns, an integer
  ``label`` column) or ``train.npz`` (arrays ``X`` of shape (n, features), ``y`` of shape (n,));
  optionally ``test.csv`` / ``test.npz`` in the same format for evaluation.
* image-classification: ``train.npz`` (``X`` of shape (n, H, W) or (n, H, W, C) or (n, features);
  uint8 pixels are scaled by 1/255, floats are used as they are; ``y`` integer labels), optional
  ``test.npz``.

Without a test file, the last 20% of a seeded shuffle is held out for evaluation. Labels are
class indices 0..num-classes-1. Local files are the node's own data: partition-id does not apply.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DATA_DIR = "/app/data"
EVAL_SHARE = 0.2

# use case -> (scikit-learn loader name, features, classes) of the bundled dataset
BUNDLED = {
    "tabular-classification": ("load_breast_cancer", 30, 2),
    "image-classification": ("load_digits", 64, 10),
}


class DataError(ValueError):
    """Local data that cannot be used, with the file and the rule it breaks."""


@dataclass
class NodeData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    source: str  # "bundled:<loader> partition i/n" or the local file paths


def data_dir(node_config) -> Path:
    return Path(str(node_config.get("data-dir", DEFAULT_DATA_DIR)))


def bundled_shape(use_case: str) -> tuple[int, int]:
    """(features, classes) of the bundled dataset for a use case."""
    _, d, k = BUNDLED[use_case]
    return d, k


def bundled_dataset(use_case: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole bundled dataset (digits scaled to [0, 1])."""
    import sklearn.datasets

    loader, _, _ = BUNDLED[use_case]
    ds = getattr(sklearn.datasets, loader)()
    x = ds.data.astype(np.float64)
    if use_case == "image-classification":
        x = x / 16.0  # load_digits pixels are 0..16
    return x, ds.target.astype(np.int64)


def partition(n: int, partition_id: int, num_partitions: int, seed: int) -> np.ndarray:
    """Indices of one partition: a seeded shuffle cut into `num_partitions` near-equal parts,
    so every node gets the same split on every run."""
    if num_partitions < 1 or not 0 <= partition_id < num_partitions:
        raise DataError(f"node config partition-id={partition_id} num-partitions={num_partitions}: "
                        "need 0 <= partition-id < num-partitions")
    if num_partitions * 2 > n:
        raise DataError(f"num-partitions={num_partitions} is too many for {n} samples")
    order = np.random.default_rng(seed).permutation(n)
    return np.array_split(order, num_partitions)[partition_id]


def _holdout(x, y, seed: int):
    """Split (x, y) into train and evaluation parts (last EVAL_SHARE of a seeded shuffle)."""
    order = np.random.default_rng(seed + 1).permutation(len(x))
    n_eval = max(1, int(round(len(x) * EVAL_SHARE)))
    tr, ev = order[:-n_eval], order[-n_eval:]
    return x[tr], y[tr], x[ev], y[ev]


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: empty file; expected a header row with a 'label' column")
    header = [h.strip() for h in rows[0]]
    if "label" not in header:
        raise DataError(f"{path}: header {header} has no 'label' column")
    li = header.index("label")
    xs, ys = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}")
        try:
            label = float(row[li])
        except ValueError:
            raise DataError(f"{path}:{lineno}: label {row[li]!r} is not a number") from None
        if not label.is_integer():
            raise DataError(f"{path}:{lineno}: label {row[li]!r} is not an integer class index")
        feats = []
        for ci, cell in enumerate(row):
            if ci == li:
                continue
            try:
                feats.append(float(cell))
            except ValueError:
                raise DataError(f"{path}:{lineno}: column {header[ci]!r} value {cell!r} "
                                "is not a number") from None
        xs.append(feats)
        ys.append(int(label))
    if not xs:
        raise DataError(f"{path}: no data rows")
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.int64)


def _read_npz(path: Path, use_case: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises several types for a bad file
        raise DataError(f"{path}: not a readable .npz file: {e}") from None
    with z:
        missing = [k for k in ("X", "y") if k not in z.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; found {z.files}; "
                            "expected X (samples first) and y (integer labels)")
        x, y = z["X"], z["y"]
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: X has shape {x.shape} and y {y.shape}; need X with samples "
                        "first (at least 2 dimensions) and y of shape (samples,)")
    if not np.issubdtype(x.dtype, np.number) or not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{path}: X ({x.dtype}) and y ({y.dtype}) must be numeric")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y, 1) == 0):
        raise DataError(f"{path}: y must hold integer class indices")
    if use_case == "image-classification" and x.dtype == np.uint8:
        x = x.astype(np.float64) / 255.0
    if use_case == "tabular-classification" and x.ndim != 2:
        raise DataError(f"{path}: tabular X must be 2-dimensional (samples, features), got {x.shape}")
    return x.reshape(len(x), -1).astype(np.float64), y.astype(np.int64)


def _find(d: Path, stem: str, use_case: str) -> Path | None:
    """The one `stem`.csv / `stem`.npz file in d (CSV only for tabular); both is an error."""
    exts = (".csv", ".npz") if use_case == "tabular-classification" else (".npz",)
    found = [d / (stem + e) for e in exts if (d / (stem + e)).is_file()]
    if len(found) > 1:
        raise DataError(f"{d}: both {found[0].name} and {found[1].name}; keep one")
    if use_case == "image-classification" and (d / (stem + ".csv")).is_file():
        raise DataError(f"{d / (stem + '.csv')}: image-classification reads {stem}.npz only")
    return found[0] if found else None


def _read(path: Path, use_case: str):
    x, y = _read_csv(path) if path.suffix == ".csv" else _read_npz(path, use_case)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: features contain NaN or infinite values")
    return x, y


def local_data(d: Path, use_case: str, num_classes: int, seed: int) -> NodeData | None:
    """The node's own files in `d`, validated; None when there are none (use bundled data)."""
    train = _find(d, "train", use_case) if d.is_dir() else None
    test = _find(d, "test", use_case) if d.is_dir() else None
    if train is None:
        if test is not None:
            raise DataError(f"{test}: found a test file but no train file in {d}")
        return None
    x, y = _read(train, use_case)
    if test is not None:
        xe, ye = _read(test, use_case)
        if xe.shape[1] != x.shape[1]:
            raise DataError(f"{test}: {xe.shape[1]} features, {train.name} has {x.shape[1]}")
        xt, yt, source = x, y, f"{train} + {test}"
    else:
        if len(x) < 2:
            raise DataError(f"{train}: {len(x)} sample(s); need at least 2 to hold one out")
        xt, yt, xe, ye = _holdout(x, y, seed)
        source = f"{train} (20% held out)"
    for path, labels in ((train, yt), (test or train, ye)):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise DataError(f"{path}: label {int(bad[0])} is outside 0..{num_classes - 1}; "
                            "set the run-config key num-classes to the number of classes")
    return NodeData(xt, yt, xe, ye, source)


def _standardize(nd: NodeData) -> NodeData:
    """Scale tabular features by the node's own training mean/std (no data leaves the node)."""
    mean = nd.x_train.mean(axis=0)
    std = nd.x_train.std(axis=0)
    std[std == 0] = 1.0
    nd.x_train = (nd.x_train - mean) / std
    nd.x_eval = (nd.x_eval - mean) / std
    return nd


def load_node_data(use_case: str, node_config, num_classes: int, seed: int) -> NodeData:
    """Local files if the data directory has them, else this node's bundled partition."""
    nd = local_data(data_dir(node_config), use_case, num_classes, seed)
    if nd is None:
        pid = int(node_config.get("partition-id", 0))
        nparts = int(node_config.get("num-partitions", 1))
        x, y = bundled_dataset(use_case)
        idx = partition(len(x), pid, nparts, seed)
        xt, yt, xe, ye = _holdout(x[idx], y[idx], seed)
        nd = NodeData(xt, yt, xe, ye, f"bundled {BUNDLED[use_case][0]} partition {pid}/{nparts}")
    if use_case == "tabular-classification":
        nd = _standardize(nd)
    return nd

