"""image-classification trainer for the pytorch image variant (imports torch).

Trains the canonical numpy layout of model.py (W1, b1, W2, b2; torch's Linear stores weights
transposed) so any node and the ServerApp agree on the arrays. GPU: CUDA_VISIBLE_DEVICES is
honoured by CUDA itself; FL_GPU_MEMORY_FRACTION caps this process's share of the device.
"""

from collections import OrderedDict

import numpy as np

from .gpu import memory_fraction, normalise_visible_devices

# Before CUDA can read it (torch initialises CUDA lazily, but be first anyway).
VISIBLE_DEVICES = normalise_visible_devices()

import torch  # noqa: E402
from torch import nn  # noqa: E402

_device = None


def configure_gpu() -> "torch.device":
    """cuda:0 of the visible devices with the memory cap applied, or the CPU (with a note)."""
    global _device
    if _device is None:
        frac = memory_fraction()
        if torch.cuda.is_available():
            _device = torch.device("cuda:0")
            if frac < 1.0:
                torch.cuda.set_per_process_memory_fraction(frac, _device)
            print(f"torch: {torch.cuda.get_device_name(_device)} (CUDA_VISIBLE_DEVICES="
                  f"{VISIBLE_DEVICES}, memory fraction {frac})")
        else:
            _device = torch.device("cpu")
            print("torch: no CUDA device visible, training on the CPU")
    return _device


def _net(model) -> nn.Sequential:
    (d, h), k = model["W1"].shape, model["W2"].shape[1]
    net = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(model["W1"].T.copy()))
        net[0].bias.copy_(torch.from_numpy(model["b1"]))
        net[2].weight.copy_(torch.from_numpy(model["W2"].T.copy()))
        net[2].bias.copy_(torch.from_numpy(model["b2"]))
    return net.to(configure_gpu())


def _arrays(net) -> "OrderedDict[str, np.ndarray]":
    p = [t.detach().cpu().numpy() for t in (net[0].weight, net[0].bias, net[2].weight, net[2].bias)]
    return OrderedDict([("W1", p[0].T.copy()), ("b1", p[1]), ("W2", p[2].T.copy()), ("b2", p[3])])


def train(model, x, y, epochs, lr, batch_size, mu, seed):
    """Mini-batch SGD with the FedProx term mu/2*||w - w_global||^2 when mu > 0."""
    if "W1" not in model:
        raise ValueError("the torch backend trains the image-classification model only")
    dev = configure_gpu()
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
    net = _net(model)
    start = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen).to(dev)
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            loss = loss_fn(net(xt[idx]), yt[idx])
            if mu > 0:
                loss = loss + mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(net.parameters(), start))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _arrays(net)


def loss_accuracy(model, x, y):
    dev = configure_gpu()
    net = _net(model).eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(x).to(dev))
        yt = torch.from_numpy(y).to(dev)
        loss = nn.functional.cross_entropy(logits, yt).item()
        acc = (logits.argmax(1) == yt).double().mean().item()
    return float(loss), float(acc)
