"""The pytorch and tensorflow variants of image-classification, in a venv that has the
framework (`make app-test-tf`; torch likewise where it is installed). Without the framework
these tests are skipped: the default venv (sklearn variant) has neither.

They check that each backend trains the canonical numpy layout (same orientation as the numpy
trainer: the loss it reports equals the numpy model's), applies the FedProx term, reads
FL_GPU_MEMORY_FRACTION, and that a real federation of nodes of that variant trains.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import harness as H
from appliance_app import data as D
from appliance_app import model as M

FRAMEWORKS = {"pytorch": ("torch", "torch_backend"), "tensorflow": ("tensorflow", "tf_backend")}


@pytest.fixture(params=sorted(FRAMEWORKS))
def fw(request):
    module, backend = FRAMEWORKS[request.param]
    pytest.importorskip(module)
    return request.param, importlib.import_module(f"appliance_app.{backend}")


def digits():
    return D.load_node_data("image-classification", {"data-dir": "/nonexistent"}, 10, 42)


def test_backend_trains_the_canonical_layout(fw):
    _, b = fw
    nd = digits()
    w0 = M.init_model("image-classification", 64, 10, 32, 42)
    # Same model, same data: the framework's loss/accuracy equal the numpy reference.
    got = b.loss_accuracy(w0, nd.x_eval, nd.y_eval)
    want = M.loss_accuracy(w0, nd.x_eval, nd.y_eval)
    assert got == pytest.approx(want, rel=1e-6)
    w = b.train(w0, nd.x_train, nd.y_train, 5, 0.1, 32, 0.0, [42, 0, 1])
    assert list(w) == ["W1", "b1", "W2", "b2"]
    assert all(w[k].shape == w0[k].shape and w[k].dtype == np.float64 for k in w0)
    # The returned arrays are what the framework trained: numpy scores them the same.
    assert M.loss_accuracy(w, nd.x_eval, nd.y_eval) == pytest.approx(b.loss_accuracy(w, nd.x_eval, nd.y_eval), rel=1e-6)
    assert M.loss_accuracy(w, nd.x_eval, nd.y_eval)[1] > want[1] + 0.3


def test_backend_applies_the_fedprox_term(fw):
    _, b = fw
    nd = digits()
    w0 = M.init_model("image-classification", 64, 10, 32, 42)
    dist = {}
    for mu in (0.0, 1.0, 10.0):
        w = b.train(w0, nd.x_train, nd.y_train, 2, 0.1, 32, mu, [1, 2, 3])
        dist[mu] = sum(float(np.sum((w[k] - w0[k]) ** 2)) for k in w)
    assert dist[0.0] > dist[1.0] > dist[10.0] > 0


def test_gpu_memory_fraction_is_validated(fw, monkeypatch):
    _, b = fw
    for raw, frac in (("", 1.0), ("0.25", 0.25), ("1", 1.0)):
        monkeypatch.setenv("FL_GPU_MEMORY_FRACTION", raw)
        assert b.memory_fraction() == frac
    for raw in ("0", "1.5", "half"):
        monkeypatch.setenv("FL_GPU_MEMORY_FRACTION", raw)
        with pytest.raises(ValueError, match=f"FL_GPU_MEMORY_FRACTION='{raw}'"):
            b.memory_fraction()


def test_configure_gpu_with_no_visible_device_falls_back_to_the_cpu(fw):
    """In a fresh process (the frameworks read CUDA_VISIBLE_DEVICES once, at start-up)."""
    name, _ = fw
    backend = FRAMEWORKS[name][1]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", FL_GPU_MEMORY_FRACTION="0.5",
               PYTHONPATH=str(H.APP_DIR))
    code = f"from appliance_app import {backend} as b; print(b.configure_gpu())"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "training on the CPU" in p.stdout, p.stdout


def test_a_federation_of_this_variant_trains_image_classification(fw, render, tmp_path):
    name, _ = fw
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    for d in dirs:
        d.mkdir()
    env = {"FL_ML_FRAMEWORK": name, "CUDA_VISIBLE_DEVICES": ""}
    fed = H.Federation(2, node_config=[{"data-dir": str(d)} for d in dirs], node_env=[env, env]).start()
    try:
        home = fed.cli_home(tmp_path)
        values = {"use-case": "image-classification", "num-server-rounds": 2, "learning-rate": 0.3,
                  "status-file": str(tmp_path / "status.json")}
        rid = fed.submit(home, render(values))
        ls = fed.wait_finished(home, rid)
        assert ls["status"] == "finished:completed", (ls["status-details"], fed.run_log(home, rid))
        st = json.loads(Path(values["status-file"]).read_text())
        assert (st["status"], st["round"]) == ("completed", 2)
        # The nodes really ran this variant's trainer: its start-up line is in their logs.
        marker = "torch:" if name == "pytorch" else "tensorflow:"
        assert all(marker in log.read_text() for log in fed.logs[1:]), marker
        untrained = M.init_model("image-classification", 64, 10, 32, 42)
        accs = []
        for i in range(2):
            nd = D.load_node_data("image-classification", {"partition-id": i, "num-partitions": 2,
                                                       "data-dir": str(dirs[i])}, 10, 42)
            accs.append(M.loss_accuracy(untrained, nd.x_eval, nd.y_eval)[1])
        assert st["accuracy"] > max(accs) + 0.2, (st["accuracy"], accs)
    finally:
        fed.stop()
