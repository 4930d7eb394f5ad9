"""ServerApp: strategy from the run config, wait for the nodes, train, report, checkpoint."""

import time
from collections import OrderedDict
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from . import data as D
from . import files as F
from . import model as M
from . import settings as S

app = ServerApp()

WAIT_LOG_EVERY_S = 10.0


class ClientFailure(RuntimeError):
    """Every ClientApp of a phase failed: the run cannot make progress."""


class _Observed:
    """Mixed into the chosen strategy class: waits (bounded) for the minimum nodes before each
    phase samples them, keeps each round's aggregated metrics, and ends the run when no node
    answered a phase, with the nodes' reasons."""

    evaluated: dict
    trained: dict
    reply_counts: dict  # round -> {"train": [ok, failed], "evaluate": [ok, failed]}
    before_sampling = None  # callable(server_round), set by run()

    def _check(self, phase: str, rnd: int, replies: list) -> None:
        errors = [m for m in replies if m.has_error()]
        self.reply_counts.setdefault(rnd, {})[phase] = [len(replies) - len(errors), len(errors)]
        if replies and len(errors) < len(replies):
            return
        if not replies:
            raise ClientFailure(f"round {rnd}: no {phase} replies within round-timeout")
        reasons = "; ".join(f"node {m.metadata.src_node_id}: {m.error.reason}" for m in errors)
        raise ClientFailure(f"round {rnd}: every ClientApp failed in {phase}: {reasons}")

    def configure_train(self, server_round, arrays, config, grid):
        if self.before_sampling is not None:
            self.before_sampling(server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):
        if self.before_sampling is not None:
            self.before_sampling(server_round)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        self._check("train", server_round, replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        self.trained[server_round] = metrics
        return arrays, metrics

    def aggregate_evaluate(self, server_round, replies):
        replies = list(replies)
        self._check("evaluate", server_round, replies)
        agg = super().aggregate_evaluate(server_round, replies)
        self.evaluated[server_round] = agg
        return agg


def make_strategy(s: S.Settings):
    """The one map from the run config to a Message-API strategy instance."""
    base = S.strategy_class(s.strategy)
    cls = type(base.__name__, (_Observed, base), {})
    strategy = cls(**S.strategy_kwargs(s))
    strategy.evaluated = {}
    strategy.trained = {}
    strategy.reply_counts = {}
    return strategy


def model_shape(s: S.Settings) -> tuple[int, int]:
    """(features, classes): the run config's, or the bundled dataset's where it says 0."""
    d, k = D.bundled_shape(s.use_case)
    return (s.num_features or d, s.num_classes or k)


def initial_model(s: S.Settings):
    """A fresh model, or the latest checkpoint when checkpoint-resume is set and one exists."""
    if s.use_case == "llm-fine-tuning":
        return OrderedDict(), None  # the nodes create the adapter from their provisioned model
    d, k = model_shape(s)
    fresh = M.init_model(s.use_case, d, k, s.hidden_units, s.seed)
    if not s.checkpoint_resume:
        return fresh, None
    found = F.read_latest(s.checkpoint_dir)
    if found is None:
        log(INFO, "checkpoint-resume: no %s in %s, starting fresh", F.LATEST_NPZ, s.checkpoint_dir)
        return fresh, None
    model, meta = found
    want = {n: tuple(a.shape) for n, a in fresh.items()}
    got = {n: tuple(a.shape) for n, a in model.items()}
    if want != got:
        raise S.ConfigError(f"checkpoint-resume: {s.checkpoint_dir}/{F.LATEST_NPZ} holds arrays "
                            f"{got}, this run's model needs {want}")
    origin = {"run_id": meta.get("run_id"), "round": meta.get("round"), "file": meta.get("file")}
    log(INFO, "checkpoint-resume: starting from %s (run %s, round %s)",
        origin["file"], origin["run_id"], origin["round"])
    return model, origin


def wait_for_nodes(grid: Grid, s: S.Settings, status: F.StatusFile, what: str) -> bool:
    """Block until `nodes_needed` SuperNodes are connected, before round 1 and again whenever
    nodes were lost (Flower would wait too, silently and forever); node-wait-timeout > 0
    bounds each wait. Keeps `connected_nodes` in the status file while waiting. Returns
    whether it had to wait."""
    start = time.monotonic()
    last_log = start - WAIT_LOG_EVERY_S
    last_count = None
    while True:
        count = len(list(grid.get_node_ids()))
        if count >= s.nodes_needed:
            if last_count is not None:
                log(INFO, "%d node(s) connected (minimum %d): %s", count, s.nodes_needed, what)
            return last_count is not None
        if count != last_count:
            status.update(status="waiting", connected_nodes=count)
            last_count = count
        now = time.monotonic()
        if s.node_wait_timeout and now - start > s.node_wait_timeout:
            raise TimeoutError(f"{what}: only {count} of the minimum {s.nodes_needed} nodes "
                               f"connected within node-wait-timeout={s.node_wait_timeout:g}s")
        if now - last_log >= WAIT_LOG_EVERY_S:
            log(INFO, "waiting for nodes (%s): %d connected, minimum %d", what, count, s.nodes_needed)
            last_log = now
        time.sleep(1.0)


def _numpy(arrays: ArrayRecord):
    return OrderedDict((k, np.asarray(v.numpy(), dtype=np.float64)) for k, v in arrays.items())


def run(grid: Grid, context: Context) -> None:
    rc = context.run_config
    status = F.StatusFile(str(rc.get("status-file", "")), context.run_id)
    try:
        s = S.parse(rc)
        status.doc.update(num_rounds=s.num_rounds, strategy=s.strategy, use_case=s.use_case)
        if s.use_case == "llm-fine-tuning" and s.strategy == "FedAdam":
            raise S.ConfigError("FedAdam needs an initial model on the server; llm-fine-tuning "
                                "creates its adapter on the nodes: use another strategy")
        log(INFO, "appliance app: use case %s, strategy %s, %d round(s), min nodes train %d / "
            "evaluate %d / available %d", s.use_case, s.strategy, s.num_rounds,
            s.min_train_nodes, s.min_evaluate_nodes, s.min_available_nodes)
        strategy = make_strategy(s)
        model, resumed_from = initial_model(s)
        ckpt = None
        if s.checkpoint_enabled:
            ckpt = F.Checkpointer(s.checkpoint_dir, s.checkpoint_interval, s.num_rounds, {
                "run_id": str(context.run_id), "strategy": s.strategy, "use_case": s.use_case,
                "resumed_from": resumed_from})
        wait_for_nodes(grid, s, status, "starting round 1")
        status.update(status="running", connected_nodes=None,
                      message=f"resumed from {resumed_from}" if resumed_from else "")

        def before_sampling(rnd: int) -> None:
            # Nodes lost mid-run (a SuperNode restarting): wait for the minimum again.
            if wait_for_nodes(grid, s, status, f"round {rnd}"):
                status.update(status="running", connected_nodes=None)

        strategy.before_sampling = before_sampling

        def evaluate_fn(rnd: int, arrays: ArrayRecord):
            # Called before round 1 (rnd 0) and after each round's federated evaluation.
            if rnd == 0:
                return None
            m = strategy.evaluated.get(rnd)
            loss = float(m["loss"]) if m is not None and "loss" in m else None
            acc = float(m["accuracy"]) if m is not None and "accuracy" in m else None
            if loss is None:
                log(WARNING, "round %d/%d: no evaluation metrics", rnd, s.num_rounds)
            else:
                log(INFO, "round %d/%d: loss=%.4f accuracy=%.4f", rnd, s.num_rounds, loss, acc)
            if ckpt is not None and ckpt.due(rnd):
                path = ckpt.write(rnd, _numpy(arrays), {"loss": loss, "accuracy": acc})
                status.doc["checkpoint"] = str(path)
                log(INFO, "checkpoint: %s", path)
            train = strategy.trained.get(rnd)
            status.round_done(rnd, loss, acc, dict(train) if train is not None else {},
                              strategy.reply_counts.get(rnd, {}))
            return None

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(OrderedDict((k, Array(v)) for k, v in model.items())),
            num_rounds=s.num_rounds,
            timeout=s.round_timeout,
            evaluate_fn=evaluate_fn,
        )
        status.update(status="completed", connected_nodes=None)
        log(INFO, "appliance app: completed %d round(s): loss=%s accuracy=%s",
            s.num_rounds, status.doc["loss"], status.doc["accuracy"])
    except BaseException as e:
        try:
            status.update(status="failed", message=f"{type(e).__name__}: {e}")
        except OSError as write_error:
            log(WARNING, "cannot write status file: %s", write_error)
        raise


@app.main()
def main(grid: Grid, context: Context) -> None:
    run(grid, context)
