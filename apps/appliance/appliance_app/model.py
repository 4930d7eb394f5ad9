"""The models as named numpy arrays, and the numpy trainer (the sklearn image variant's).

One canonical layout per use case, shared by every framework, so the ServerApp never imports
torch or tensorflow and checkpoints load anywhere:

* tabular-classification: softmax regression, arrays ``W`` (features, classes), ``b`` (classes);
* image-classification: one hidden ReLU layer, ``W1`` (features, hidden), ``b1`` (hidden),
  ``W2`` (hidden, classes), ``b2`` (classes). The torch/tensorflow variants train this same
  layout (torch stores Linear weights transposed; the backends convert).

All arrays are float64. Loss is the mean cross-entropy, accuracy the share of argmax hits.
"""

from collections import OrderedDict

import numpy as np

Model = "OrderedDict[str, np.ndarray]"


def layout(use_case: str, num_features: int, num_classes: int, hidden: int) -> list[tuple[str, tuple]]:
    """Names and shapes of the model arrays, in order."""
    d, k, h = num_features, num_classes, hidden
    if use_case == "tabular-classification":
        return [("W", (d, k)), ("b", (k,))]
    if use_case == "image-classification":
        return [("W1", (d, h)), ("b1", (h,)), ("W2", (h, k)), ("b2", (k,))]
    raise ValueError(f"no numpy model for use case {use_case!r}")


def init_model(use_case: str, num_features: int, num_classes: int, hidden: int, seed: int):
    """The untrained model: zeros for softmax regression, Glorot-uniform weights for the MLP
    (zeros would keep its hidden units identical forever)."""
    rng = np.random.default_rng(seed)
    model = OrderedDict()
    for name, shape in layout(use_case, num_features, num_classes, hidden):
        if name.startswith("W") and use_case == "image-classification":
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            model[name] = rng.uniform(-limit, limit, size=shape)
        else:
            model[name] = np.zeros(shape)
    return model


def check_shapes(model, use_case: str, num_classes: int, num_features: int, what: str) -> None:
    """Refuse a model that does not fit the data (names the run-config keys to change)."""
    first = next(iter(model.values()))
    last = list(model.values())[-1]
    if first.shape[0] != num_features or last.shape[0] != num_classes:
        raise ValueError(
            f"{what}: the data has {num_features} features and {num_classes} classes but the "
            f"global model expects {first.shape[0]} features and {last.shape[0]} classes; "
            "set the run-config keys num-features and num-classes to match the data")


def _logits(model, x):
    if "W" in model:
        return x @ model["W"] + model["b"], None
    hidden = np.maximum(x @ model["W1"] + model["b1"], 0.0)
    return hidden @ model["W2"] + model["b2"], hidden


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def loss_accuracy(model, x, y) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y)."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty data set")
    logits, _ = _logits(model, x)
    p = _softmax(logits)
    loss = -np.mean(np.log(p[np.arange(len(y)), y] + 1e-12))
    acc = np.mean(np.argmax(logits, axis=1) == y)
    return float(loss), float(acc)


def _gradients(model, x, y):
    """Gradients of the mean cross-entropy, same keys as `model`."""
    logits, hidden = _logits(model, x)
    d = _softmax(logits)
    d[np.arange(len(y)), y] -= 1.0
    d /= len(y)
    if hidden is None:
        return {"W": x.T @ d, "b": d.sum(axis=0)}
    dh = (d @ model["W2"].T) * (hidden > 0)
    return {"W1": x.T @ dh, "b1": dh.sum(axis=0), "W2": hidden.T @ d, "b2": d.sum(axis=0)}


def train(model, x, y, epochs: int, lr: float, batch_size: int, mu: float, rng):
    """Mini-batch SGD from `model`. With mu > 0 the FedProx proximal term
    (mu/2)*||w - w_global||^2 is added to the loss, i.e. mu*(w - w_global) to each gradient."""
    start = OrderedDict((k, v.copy()) for k, v in model.items())
    w = OrderedDict((k, v.astype(np.float64).copy()) for k, v in model.items())
    n = len(x)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            g = _gradients(w, x[idx], y[idx])
            for k in w:
                step = g[k] + mu * (w[k] - start[k]) if mu > 0 else g[k]
                w[k] -= lr * step
    return w


def save_npz(path, model) -> None:
    """Write the named arrays (np.savez appends .npz only to names without it)."""
    np.savez(path, **model)


def load_npz(path, use_case: str | None = None):
    """Read a model written by save_npz (a checkpoint), keeping the array order."""
    with np.load(path) as z:
        names = list(z.files)
        model = OrderedDict((n, z[n].astype(np.float64)) for n in names)
    if use_case is not None:
        expected = [n for n, _ in layout(use_case, 1, 2, 1)]
        if list(model) != expected:
            raise ValueError(f"{path}: arrays {list(model)} are not a {use_case} model {expected}")
    return model
