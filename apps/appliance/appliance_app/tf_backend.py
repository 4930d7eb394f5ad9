"""image-classification trainer for the tensorflow image variant (imports tensorflow).

Trains the canonical numpy layout of model.py (W1, b1, W2, b2: Keras Dense kernels have the
same (in, out) orientation). GPU: CUDA_VISIBLE_DEVICES is honoured by CUDA itself;
FL_GPU_MEMORY_FRACTION becomes a per-GPU memory limit (fraction of the device's total memory,
read from the CUDA driver), or memory growth when the total cannot be read.
"""

import ctypes
from collections import OrderedDict

import numpy as np

from .gpu import memory_fraction, normalise_visible_devices

# Before tensorflow initialises its GPUs (it reads CUDA_VISIBLE_DEVICES then).
VISIBLE_DEVICES = normalise_visible_devices()

import tensorflow as tf  # noqa: E402

_configured = False


def _total_memory(index: int) -> int | None:
    """Bytes of GPU `index` (among the visible ones) from libcuda, or None."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        dev, total = ctypes.c_int(), ctypes.c_size_t()
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
            return None
        if cuda.cuDeviceTotalMem_v2(ctypes.byref(total), dev) != 0:
            return None
        return total.value
    except OSError:
        return None


def configure_gpu() -> None:
    """Apply FL_GPU_MEMORY_FRACTION before tensorflow initialises its GPUs (once)."""
    global _configured
    if _configured:
        return
    _configured = True
    frac = memory_fraction()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        print("tensorflow: no GPU visible, training on the CPU")
        return
    for i, gpu in enumerate(gpus):
        total = _total_memory(i) if frac < 1.0 else None
        if total:
            limit_mb = int(total * frac / 2**20)
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_mb)])
        elif frac < 1.0:
            tf.config.experimental.set_memory_growth(gpu, True)
            print(f"tensorflow: cannot read the memory of {gpu.name}; memory growth instead "
                  f"of the fraction {frac}")
    print(f"tensorflow: {len(gpus)} GPU(s) (CUDA_VISIBLE_DEVICES="
          f"{VISIBLE_DEVICES}, memory fraction {frac})")


def _net(model):
    (d, h), k = model["W1"].shape, model["W2"].shape[1]
    tf.keras.backend.set_floatx("float64")
    net = tf.keras.Sequential([tf.keras.Input(shape=(d,), dtype="float64"),
                               tf.keras.layers.Dense(h, activation="relu"),
                               tf.keras.layers.Dense(k)])
    net.set_weights([model["W1"], model["b1"], model["W2"], model["b2"]])
    return net


def _arrays(net):
    w = net.get_weights()
    return OrderedDict(zip(("W1", "b1", "W2", "b2"), (np.asarray(a, dtype=np.float64) for a in w)))


def train(model, x, y, epochs, lr, batch_size, mu, seed):
    """Mini-batch SGD with the FedProx term mu/2*||w - w_global||^2 when mu > 0."""
    if "W1" not in model:
        raise ValueError("the tensorflow backend trains the image-classification model only")
    configure_gpu()
    rng = np.random.default_rng(seed)
    net = _net(model)
    start = [tf.constant(v) for v in net.trainable_variables]
    opt = tf.keras.optimizers.SGD(learning_rate=lr)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            with tf.GradientTape() as tape:
                loss = loss_fn(y[idx], net(x[idx], training=True))
                if mu > 0:
                    loss += mu / 2 * tf.add_n([tf.reduce_sum(tf.square(v - s))
                                               for v, s in zip(net.trainable_variables, start)])
            grads = tape.gradient(loss, net.trainable_variables)
            opt.apply_gradients(zip(grads, net.trainable_variables))
    return _arrays(net)


def loss_accuracy(model, x, y):
    configure_gpu()
    logits = _net(model)(x, training=False).numpy()
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -float(np.mean(logp[np.arange(len(y)), y]))
    return loss, float(np.mean(logits.argmax(axis=1) == y))
