"""Fast tests of the app's parts and of flower-init's renderer against flwr's own parser."""

import json
import os
import tomllib

import numpy as np
import pytest
from flwr.common.config import parse_config_args

import harness as H
from appliance_app import data as D
from appliance_app import files as F
from appliance_app import llm
from appliance_app import model as M
from appliance_app import settings as S


def defaults() -> dict:
    with (H.APP_DIR / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["flwr"]["app"]["config"]


# --- flower-init's rendering, parsed by the real flwr -------------------------------------

TRICKY = {
    "checkpoint-dir": "/state/my ckpt=1 'q' \"dq\" \\back\\ tab\t nl\n é",
    "status-file": "",
    "proximal-mu": 1e-7,
    "server-learning-rate": 1e21,
    "trim-beta": 0.2,
    "num-server-rounds": 12345678901,
    "seed": -3,
    "checkpoint-enabled": True,
    "checkpoint-resume": False,
    "strategy": "FedTrimmedAvg",
}


def test_flwr_parses_flower_inits_rendering_back_to_the_same_typed_values(render):
    arg = render(TRICKY)
    parsed = parse_config_args([arg])
    assert parsed == TRICKY
    for k, v in TRICKY.items():
        assert type(parsed[k]) is type(v), k


def test_wrong_type_or_undeclared_key_is_caught_before_submission(render):
    p = render.run({"num-server-rounds": 2.0, "strategy": 3, "no-such-key": "x", "proximal-mu": 1})
    assert p.returncode == 1
    err = p.stderr
    assert 'run config key "num-server-rounds": value 2.0 is not of type integer' in err
    assert 'run config key "strategy": value 3 is not of type string' in err
    assert 'run config key "proximal-mu": value 1 is not of type float' in err
    assert 'run config key "no-such-key" (value "x") is not declared' in err


def test_every_declared_default_is_valid():
    s = S.parse(defaults())
    assert (s.strategy, s.num_rounds, s.checkpoint_enabled) == ("FedAvg", 3, False)


# --- run-config rules (the ServerApp's defence in depth) ---------------------------------

@pytest.mark.parametrize("strategy,n,f,ok,formula", [
    ("Krum", 3, 0, True, ""), ("Krum", 2, 0, False, "n >= 2f+3): n=2, f=0, 2*0+3=3"),
    ("Krum", 4, 1, False, "n=4, f=1, 2*1+3=5"), ("Krum", 5, 1, True, ""),
    ("Bulyan", 3, 0, True, ""), ("Bulyan", 6, 1, False, "n >= 4f+3): n=6, f=1, 4*1+3=7"),
    ("Bulyan", 7, 1, True, ""), ("FedAvg", 1, 5, True, ""),
])
def test_byzantine_bounds(strategy, n, f, ok, formula):
    rc = dict(defaults(), strategy=strategy, **{"min-train-nodes": n, "num-malicious-nodes": f})
    if ok:
        S.parse(rc)
    else:
        with pytest.raises(S.ConfigError) as e:
            S.parse(rc)
        assert formula in str(e.value)


def test_range_and_type_errors_name_key_and_value():
    rc = dict(defaults(), strategy="fedtrimmedavg", **{"trim-beta": 0.5, "num-server-rounds": 0,
                                                        "checkpoint-enabled": True})
    with pytest.raises(S.ConfigError) as e:
        S.parse(rc)
    msg = str(e.value)
    assert "trim-beta=0.5 must be in [0, 0.5)" in msg
    assert "num-server-rounds=0 must be >= 1" in msg
    assert "checkpoint-dir='' must be an absolute path" in msg
    with pytest.raises(S.ConfigError, match="num-server-rounds=2.0 must be an integer"):
        S.parse(dict(defaults(), **{"num-server-rounds": 2.0}))
    with pytest.raises(S.ConfigError, match="strategy='FedSGD' must be one of FedAvg"):
        S.parse(dict(defaults(), strategy="FedSGD"))
    assert S.parse(dict(defaults(), strategy="fedadam")).strategy == "FedAdam"


def test_strategy_map_builds_each_class_with_its_parameter():
    from appliance_app.server_app import make_strategy

    cases = {"FedAvg": {}, "FedProx": {"proximal_mu": 0.3}, "FedAdam": {"eta": 0.05},
             "Krum": {"num_malicious_nodes": 1}, "Bulyan": {"num_malicious_nodes": 1},
             "FedTrimmedAvg": {"beta": 0.1}}
    for name, attrs in cases.items():
        rc = dict(defaults(), strategy=name, **{"proximal-mu": 0.3, "server-learning-rate": 0.05,
                                                "num-malicious-nodes": 1, "trim-beta": 0.1,
                                                "min-train-nodes": 7, "min-available-nodes": 7})
        st = make_strategy(S.parse(rc))
        assert type(st).__mro__[2].__name__ == name
        assert st.min_train_nodes == 7
        for attr, v in attrs.items():
            assert getattr(st, attr) == v, (name, attr)


# --- model and FedProx ---------------------------------------------------------------------

def test_fedprox_term_pulls_towards_the_global_model():
    nd = D.load_node_data("tabular-classification", {"data-dir": "/nonexistent"}, 2, 42)
    w0 = M.init_model("tabular-classification", 30, 2, 1, 42)
    dist = {}
    for mu in (0.0, 1.0, 10.0):
        w = M.train(w0, nd.x_train, nd.y_train, 3, 0.1, 32, mu, np.random.default_rng(1))
        dist[mu] = sum(float(np.sum((w[k] - w0[k]) ** 2)) for k in w)
    assert dist[0.0] > dist[1.0] > dist[10.0] > 0


def test_mlp_learns_digits_and_checkpoint_files_round_trip(tmp_path):
    nd = D.load_node_data("image-classification", {"data-dir": "/nonexistent"}, 10, 42)
    w0 = M.init_model("image-classification", 64, 10, 32, 42)
    w = M.train(w0, nd.x_train, nd.y_train, 5, 0.1, 32, 0.0, np.random.default_rng(0))
    assert M.loss_accuracy(w, nd.x_eval, nd.y_eval)[1] > M.loss_accuracy(w0, nd.x_eval, nd.y_eval)[1] + 0.3
    ck = F.Checkpointer(str(tmp_path), 2, 5, {"run_id": "7", "strategy": "FedAvg"})
    assert [r for r in range(0, 6) if ck.due(r)] == [2, 4, 5]
    ck.write(4, w, {"accuracy": 0.5})
    back, meta = F.read_latest(str(tmp_path))
    assert list(back) == ["W1", "b1", "W2", "b2"]
    assert all(np.array_equal(back[k], w[k]) for k in w)
    assert meta["round"] == 4 and meta["file"] == "checkpoint_7_round_0004.npz"
    assert os.readlink(tmp_path / "checkpoint_latest.npz") == "checkpoint_7_round_0004.npz"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_partitions_are_deterministic_and_disjoint():
    parts = [D.partition(569, i, 3, 42) for i in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(569))
    assert np.array_equal(parts[1], D.partition(569, 1, 3, 42))
    with pytest.raises(D.DataError, match="need 0 <= partition-id < num-partitions"):
        D.partition(569, 3, 3, 42)


# --- local data ------------------------------------------------------------------------------

def test_local_csv_and_npz_take_precedence_and_are_validated(tmp_path):
    (tmp_path / "train.csv").write_text("a,label,b\n1,0,2\n3,1,4\n5,1,6\n7,0,8\n9,1,1\n")
    nd = D.load_node_data("tabular-classification", {"data-dir": str(tmp_path)}, 2, 42)
    assert nd.source.endswith("train.csv (20% held out)")
    assert (len(nd.x_train), len(nd.x_eval), nd.x_train.shape[1]) == (4, 1, 2)

    def bad(text, match, num_classes=2):
        (tmp_path / "train.csv").write_text(text)
        with pytest.raises(D.DataError, match=match):
            D.load_node_data("tabular-classification", {"data-dir": str(tmp_path)}, num_classes, 42)

    bad("a,b\n1,2\n", r"header \['a', 'b'\] has no 'label' column")
    bad("a,label\n1,0\nx,1\n", r"train.csv:3: column 'a' value 'x' is not a number")
    bad("a,label\n1,0\n2,1.5\n", r"train.csv:3: label '1.5' is not an integer class index")
    bad("a,label\n1,0\n2,1\n3\n", r"train.csv:4: 1 fields, the header has 2")
    bad("a,label\n1,0\n2,2\n", r"label 2 is outside 0..1; set the run-config key num-classes")

    os.remove(tmp_path / "train.csv")
    x = np.random.default_rng(0).integers(0, 255, size=(10, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", X=x, y=np.arange(10) % 3)
    nd = D.load_node_data("image-classification", {"data-dir": str(tmp_path)}, 3, 42)
    assert nd.x_train.shape[1] == 16 and nd.x_train.max() <= 1.0
    np.savez(tmp_path / "test.npz", X=x[:, :2], y=np.arange(10) % 3)
    with pytest.raises(D.DataError, match="test.npz: 8 features, train.npz has 16"):
        D.load_node_data("image-classification", {"data-dir": str(tmp_path)}, 3, 42)
    np.savez(tmp_path / "train.npz", data=x)
    with pytest.raises(D.DataError, match=r"missing array\(s\) \['X', 'y'\]"):
        D.load_node_data("image-classification", {"data-dir": str(tmp_path)}, 3, 42)


def test_model_shape_mismatch_names_the_keys_to_set():
    w = M.init_model("tabular-classification", 30, 2, 1, 42)
    with pytest.raises(ValueError, match="set the run-config keys num-features and num-classes"):
        M.check_shapes(w, "tabular-classification", 3, 13, "node data x")


def test_llm_refuses_without_provisioned_data(tmp_path):
    with pytest.raises(llm.MissingData) as e:
        llm.check_provisioned(tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"llm-fine-tuning refuses to start: no provisioned data in {tmp_path}")
    assert f"{tmp_path}/model/config.json" in msg and f"{tmp_path}/train.jsonl" in msg


def test_status_file_is_replaced_atomically(tmp_path):
    st = F.StatusFile(str(tmp_path / "s" / "status.json"), 18446744073709551615, 2, "FedAvg", "x")
    st.update(status="running")
    st.round_done(1, 0.5, 0.75, {"train_loss": 0.4})
    doc = json.loads((tmp_path / "s" / "status.json").read_text())
    assert doc["run_id"] == "18446744073709551615"
    assert (doc["status"], doc["round"], doc["accuracy"]) == ("running", 1, 0.75)
    assert os.listdir(tmp_path / "s") == ["status.json"]


def test_gpu_settings_shared_by_the_framework_variants(monkeypatch):
    from appliance_app import gpu

    monkeypatch.delenv("FL_GPU_MEMORY_FRACTION", raising=False)
    assert gpu.memory_fraction() == 1.0
    monkeypatch.setenv("FL_GPU_MEMORY_FRACTION", "0.3")
    assert gpu.memory_fraction() == 0.3
    monkeypatch.setenv("FL_GPU_MEMORY_FRACTION", "0")
    with pytest.raises(ValueError, match=r"FL_GPU_MEMORY_FRACTION='0' must be in \(0, 1\]"):
        gpu.memory_fraction()
    # "all" would hide every GPU from CUDA: it is dropped, indices are kept.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "all")
    assert gpu.normalise_visible_devices() == "all"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert gpu.normalise_visible_devices() == "0,2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,2"


def test_docs_list_every_declared_key_with_its_type_and_default():
    """docs/app.md's run-config table is what the pyproject declares (no drift)."""
    import re

    doc = (H.ROOT / "docs" / "app.md").read_text()
    rows = {k: (t, v.strip().strip("`")) for k, t, v in
            re.findall(r"^\| `([a-z-]+)` \| (\w+) \| ([^|]+) \|", doc, re.M)}
    names = {bool: "bool", int: "int", float: "float", str: "string"}
    want = {k: (names[type(v)], json.dumps(v)) for k, v in defaults().items()}
    assert rows == want
