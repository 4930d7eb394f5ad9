"""The bundled app on a real flwr 1.42 federation on loopback (SuperLink + 3 SuperNodes, and
SuperLink + 2 SuperNodes with local data), submitted with flower-init's rendered run config.

Runs overlap: a session fixture submits every independent run at once and each test waits for
its own (the SuperNodes' 3 s polls dominate, so overlapping saves minutes on 2 cores). Three
nodes because Krum and Bulyan need n >= 2f+3 and n >= 4f+3, i.e. 3 nodes even with f = 0.
"""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import harness as H
from appliance_app import data as D
from appliance_app import model as M

STRATEGIES = ["FedAvg", "FedProx", "FedAdam", "Krum", "Bulyan", "FedTrimmedAvg"]
NODES = 3
ROUNDS = 2


def common(tmp: Path, name: str, nodes: int = NODES) -> dict:
    return {"num-server-rounds": ROUNDS, "min-train-nodes": nodes, "min-evaluate-nodes": nodes,
            "min-available-nodes": nodes, "status-file": str(tmp / f"{name}.status.json"),
            "round-timeout": 300.0}


class Runs:
    """Submitted runs by name: run id, status-file path, and the flwr CLI home used."""

    def __init__(self, fed: H.Federation, home: Path, tmp: Path):
        self.fed, self.home, self.tmp = fed, home, tmp
        self.ids: dict[str, int] = {}
        self.config: dict[str, dict] = {}

    def submit(self, render, name: str, values: dict) -> None:
        self.config[name] = values
        self.ids[name] = self.fed.submit(self.home, render(values))

    def finish(self, name: str) -> tuple[dict, dict]:
        """(flwr ls row, the app's status file) once the run has finished."""
        ls = self.fed.wait_finished(self.home, self.ids[name])
        status = json.loads(Path(self.config[name]["status-file"]).read_text())
        return ls, status


@pytest.fixture(scope="session")
def empty_data_dirs(tmp_path_factory) -> list[Path]:
    """Per-node data dirs with no files: nodes use the bundled datasets (and never /app/data)."""
    base = tmp_path_factory.mktemp("nodata")
    dirs = [base / f"node{i}" for i in range(NODES)]
    for d in dirs:
        d.mkdir()
    return dirs


@pytest.fixture(scope="session")
def fed3(empty_data_dirs):
    fed = H.Federation(NODES, node_config=[{"data-dir": str(d)} for d in empty_data_dirs]).start()
    yield fed
    fed.stop()


class Drill:
    """A 4-round run on its own federation of 3 SuperNodes that needs only 2; a watcher thread
    SIGKILLs SuperNode 2 once round 1 is in the status file, i.e. during round 2."""

    def __init__(self, render, tmp: Path):
        dirs = [tmp / f"node{i}" for i in range(NODES)]
        for d in dirs:
            d.mkdir()
        self.fed = H.Federation(NODES, node_config=[{"data-dir": str(d)} for d in dirs]).start()
        self.home = self.fed.cli_home(tmp)
        # round-timeout is left at the app's default: the appliance's own setting must do.
        self.values = {"num-server-rounds": 4, "min-train-nodes": 2, "min-evaluate-nodes": 2,
                       "min-available-nodes": 2, "status-file": str(tmp / "drill.status.json")}
        self.run_id = self.fed.submit(self.home, render(self.values))
        self.killed_after_round: int | None = None
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + H.RUN_TIMEOUT_S
        path = Path(self.values["status-file"])
        while time.monotonic() < deadline:
            try:
                st = json.loads(path.read_text())
            except (OSError, ValueError):
                st = {}
            if st.get("status") in ("completed", "failed"):
                return
            if st.get("round", 0) >= 1:
                self.fed.kill_node(2)
                self.killed_after_round = st["round"]
                return
            time.sleep(0.2)


@pytest.fixture(scope="session")
def drill(render, tmp_path_factory):
    d = Drill(render, tmp_path_factory.mktemp("drill"))
    yield d
    d.fed.stop()


@pytest.fixture(scope="session")
def runs(fed3, drill, render, tmp_path_factory) -> Runs:
    # `drill` first: its run overlaps with these.
    tmp = tmp_path_factory.mktemp("runs")
    r = Runs(fed3, fed3.cli_home(tmp), tmp)
    for st in STRATEGIES:
        r.submit(render, st, dict(common(tmp, st), strategy=st,
                                  **{"use-case": "tabular-classification"}))
    r.submit(render, "image", dict(common(tmp, "image"), strategy="FedAvg",
                                   **{"use-case": "image-classification", "learning-rate": 0.3}))
    r.submit(render, "checkpoint", dict(
        common(tmp, "checkpoint"), strategy="FedAvg",
        **{"num-server-rounds": 3, "checkpoint-enabled": True, "checkpoint-interval": 2,
           "checkpoint-dir": str(tmp / "ckpt")}))
    r.submit(render, "llm", dict(common(tmp, "llm"), **{"use-case": "llm-fine-tuning"}))
    r.submit(render, "wait", dict(common(tmp, "wait"), **{"min-available-nodes": NODES + 2,
                                                          "node-wait-timeout": 3.0}))
    return r


def flower_init_reads(parse, runs: "Runs", name: str, state: str) -> None:
    """flower-init's parsers read this run's real `flwr run`/`flwr ls` output and status file."""
    rid = str(runs.ids[name])
    submitted = parse("run", runs.fed.run_outputs[runs.ids[name]])
    assert (submitted["run_id"], submitted["fab_id"]) == (rid, "flower-init/appliance")
    [row] = parse("ls", runs.fed.ls_output(runs.home, runs.ids[name]))
    assert (row["run_id"], row["state"], row["finished"]) == (rid, state, True)
    attrs = parse("status", Path(runs.config[name]["status-file"]).read_text())
    assert (attrs["FL_RUN_ID"], attrs["FL_RUN_STATUS"]) == (rid, state)
    if state == "failed":
        assert attrs["FL_RUN_ERROR"] and row["details"], (attrs, row)
    else:
        rounds = runs.config[name]["num-server-rounds"]
        assert attrs["FL_RUN_ROUND"] == f"{rounds}/{rounds}"
        assert float(attrs["FL_RUN_ACCURACY"]) > 0.5


def federated_accuracy(model, use_case: str, data_dirs: list, num_classes: int) -> float:
    """What the strategy reports: eval accuracy of `model` on each node's held-out split,
    weighted by its number of examples (Flower's aggregate_metricrecords)."""
    sizes, accs = [], []
    for i, d in enumerate(data_dirs):
        nd = D.load_node_data(use_case, {"partition-id": i, "num-partitions": len(data_dirs),
                                         "data-dir": str(d)}, num_classes, 42)
        accs.append(M.loss_accuracy(model, nd.x_eval, nd.y_eval)[1])
        sizes.append(len(nd.x_eval))
    return sum(a * n / sum(sizes) for a, n in zip(accs, sizes))


def untrained_accuracy(use_case: str, data_dirs: list, d: int, k: int) -> float:
    return federated_accuracy(M.init_model(use_case, d, k, 32, 42), use_case, data_dirs, k)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_trains_two_rounds_and_beats_the_untrained_model(runs, strategy, empty_data_dirs, parse):
    ls, st = runs.finish(strategy)
    flower_init_reads(parse, runs, strategy, "completed")
    assert ls["status"] == "finished:completed", (ls["status-details"], runs.fed.run_log(runs.home, runs.ids[strategy]))
    assert (st["status"], st["round"], st["num_rounds"], st["strategy"]) == ("completed", 2, 2, strategy)
    assert [h["round"] for h in st["history"]] == [1, 2]
    baseline = untrained_accuracy("tabular-classification", empty_data_dirs, 30, 2)
    assert baseline < 0.5
    assert st["accuracy"] > baseline + 0.2, (st["accuracy"], baseline)
    assert st["run_id"] == str(runs.ids[strategy])
    # The FedProx strategy sends proximal-mu and every client applied it (0.1 = default).
    mu = st["history"][-1]["train"]["proximal_mu"]
    assert mu == pytest.approx(0.1 if strategy == "FedProx" else 0.0)


def test_image_classification_trains(runs, empty_data_dirs):
    ls, st = runs.finish("image")
    assert ls["status"] == "finished:completed", ls["status-details"]
    assert st["use_case"] == "image-classification"
    baseline = untrained_accuracy("image-classification", empty_data_dirs, 64, 10)
    assert st["accuracy"] > baseline + 0.2, (st["accuracy"], baseline)


def test_checkpoints_appear_at_the_right_rounds_and_load_back(runs, render, empty_data_dirs):
    ls, st = runs.finish("checkpoint")
    assert ls["status"] == "finished:completed", ls["status-details"]
    ckdir = Path(runs.config["checkpoint"]["checkpoint-dir"])
    rid = runs.ids["checkpoint"]
    files = sorted(p.name for p in ckdir.iterdir())
    # every 2 rounds, and the last round (3): rounds 2 and 3, no round 1
    assert files == [f"checkpoint_{rid}_round_0002.npz", f"checkpoint_{rid}_round_0003.npz",
                     "checkpoint_latest.json", "checkpoint_latest.npz"]
    assert (ckdir / "checkpoint_latest.npz").readlink().name == f"checkpoint_{rid}_round_0003.npz"
    meta = json.loads((ckdir / "checkpoint_latest.json").read_text())
    assert (meta["round"], meta["run_id"], meta["strategy"]) == (3, str(rid), "FedAvg")
    assert meta["arrays"] == {"W": [30, 2], "b": [2]}
    # The loaded model's accuracy is exactly what the run reported for that round.
    by_round = {h["round"]: h["accuracy"] for h in st["history"]}
    for rnd in (2, 3):
        model = M.load_npz(ckdir / f"checkpoint_{rid}_round_{rnd:04d}.npz", "tabular-classification")
        acc = federated_accuracy(model, "tabular-classification", empty_data_dirs, 2)
        assert acc == pytest.approx(by_round[rnd], abs=1e-12)
    assert meta["metrics"]["accuracy"] == pytest.approx(by_round[3], abs=1e-12) == st["accuracy"]
    assert st["checkpoint"] == str(ckdir / f"checkpoint_{rid}_round_0003.npz")

    # A later run with checkpoint-resume starts from checkpoint_latest.npz.
    values = dict(runs.config["checkpoint"], **{"num-server-rounds": 1, "checkpoint-resume": True,
                                                 "status-file": str(runs.tmp / "resume.status.json")})
    runs.submit(render, "resume", values)
    ls2, st2 = runs.finish("resume")
    assert ls2["status"] == "finished:completed", ls2["status-details"]
    meta2 = json.loads((ckdir / "checkpoint_latest.json").read_text())
    assert meta2["run_id"] == str(runs.ids["resume"]) and meta2["round"] == 1
    assert meta2["resumed_from"] == {"run_id": str(rid), "round": 3,
                                     "file": f"checkpoint_{rid}_round_0003.npz"}
    assert "resumed from" in st2["message"]
    assert (ckdir / f"checkpoint_{rid}_round_0003.npz").exists()  # nothing of run 1 is lost


def test_llm_refuses_to_start_without_provisioned_data(runs, empty_data_dirs, parse):
    ls, st = runs.finish("llm")
    flower_init_reads(parse, runs, "llm", "failed")
    assert ls["status"] == "finished:failed"
    assert st["status"] == "failed"
    for where in (ls["status-details"], st["message"]):
        assert "llm-fine-tuning refuses to start: no provisioned data in" in where, where
        assert "train.jsonl" in where


def test_waiting_for_nodes_is_bounded_by_node_wait_timeout(runs):
    ls, st = runs.finish("wait")
    assert ls["status"] == "finished:failed"
    assert st["connected_nodes"] == NODES
    assert f"only {NODES} of the minimum {NODES + 2} nodes connected within node-wait-timeout=3s" in st["message"]


def test_krum_below_its_bound_is_refused_with_the_formula(runs, render):
    values = dict(common(runs.tmp, "krum2"), strategy="Krum", **{"min-train-nodes": 2})
    runs.submit(render, "krum2", values)
    ls, st = runs.finish("krum2")
    assert ls["status"] == "finished:failed"
    assert "Krum needs min-train-nodes >= 2*num-malicious-nodes + 3 (n >= 2f+3): n=2, f=0, 2*0+3=3" \
        in ls["status-details"]
    assert st["status"] == "failed" and "2*0+3=3" in st["message"]


def test_a_supernode_killed_mid_run_does_not_stop_the_run(drill):
    drill.watcher.join(timeout=H.RUN_TIMEOUT_S)
    ls = drill.fed.wait_finished(drill.home, drill.run_id)
    k = drill.killed_after_round
    assert k is not None and k <= 2, f"SuperNode 2 was not killed mid-run (after round {k})"
    assert ls["status"] == "finished:completed", (ls["status-details"], drill.fed.run_log(drill.home, drill.run_id))
    st = json.loads(Path(drill.values["status-file"]).read_text())
    assert (st["status"], st["round"]) == ("completed", 4)
    assert [h["round"] for h in st["history"]] == [1, 2, 3, 4]
    assert st["history"][0]["replies"]["train"] == [NODES, 0]
    # From the round after the one the kill interrupted, training goes on with the two nodes
    # left (the lost one answered with Flower's node-unavailable error, or is not sampled).
    later = [h["replies"]["train"][0] for h in st["history"] if h["round"] >= k + 2]
    assert later and all(ok == NODES - 1 for ok in later), st["history"]


# --- local data on the nodes overrides the bundled dataset ----------------------------------

def write_local_wine(dirs: list[Path]) -> None:
    """Two nodes with scikit-learn's wine data (13 features, 3 classes: not the bundled
    tabular dataset): node 0 as train.csv, node 1 as train.npz + test.npz."""
    from sklearn.datasets import load_wine

    ds = load_wine()
    order = np.random.default_rng(7).permutation(len(ds.target))
    a, b = np.array_split(order, 2)
    header = ",".join([f"f{i}" for i in range(13)] + ["label"])
    rows = [",".join([*(repr(float(v)) for v in ds.data[i]), str(int(ds.target[i]))]) for i in a]
    (dirs[0] / "train.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    cut = int(len(b) * 0.8)
    np.savez(dirs[1] / "train.npz", X=ds.data[b[:cut]], y=ds.target[b[:cut]])
    np.savez(dirs[1] / "test.npz", X=ds.data[b[cut:]], y=ds.target[b[cut:]])


def test_local_data_takes_precedence(render, tmp_path):
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    for d in dirs:
        d.mkdir()
    write_local_wine(dirs)
    fed = H.Federation(2, node_config=[{"data-dir": str(d)} for d in dirs]).start()
    try:
        home = fed.cli_home(tmp_path)
        values = dict(common(tmp_path, "local", nodes=2), **{
            "num-features": 13, "num-classes": 3, "checkpoint-enabled": True,
            "checkpoint-dir": str(tmp_path / "ckpt")})
        rid = fed.submit(home, render(values))
        ls = fed.wait_finished(home, rid)
        assert ls["status"] == "finished:completed", (ls["status-details"], fed.run_log(home, rid))
        st = json.loads(Path(values["status-file"]).read_text())
        meta = json.loads((tmp_path / "ckpt" / "checkpoint_latest.json").read_text())
        assert meta["arrays"] == {"W": [13, 3], "b": [3]}
        model = M.load_npz(tmp_path / "ckpt" / "checkpoint_latest.npz")
        assert federated_accuracy(model, "tabular-classification", dirs, 3) == pytest.approx(st["accuracy"], abs=1e-12)
        assert st["accuracy"] > untrained_accuracy("tabular-classification", dirs, 13, 3) + 0.2
    finally:
        fed.stop()
