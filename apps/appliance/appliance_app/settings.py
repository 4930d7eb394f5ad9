"""Typed, validated view of the run config, and the one map from strategy name to class.

flower-init validates the same rules at boot; the ServerApp checks them again (defence in
depth) because anyone can submit this app with `flwr run --run-config ...`.
"""

from dataclasses import dataclass
from typing import Any, Mapping

USE_CASES = ("tabular-classification", "image-classification", "llm-fine-tuning")


class ConfigError(ValueError):
    """A run-config value that is missing, of the wrong type, or out of range."""


def _get(rc: Mapping[str, Any], key: str) -> Any:
    if key not in rc:
        raise ConfigError(f"run config: key {key!r} is missing (declared in pyproject.toml?)")
    return rc[key]


def get_int(rc: Mapping[str, Any], key: str) -> int:
    """An integer value (TOML int); a bool or a float is refused, not truncated."""
    v = _get(rc, key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"run config: {key}={v!r} must be an integer")
    return v


def get_float(rc: Mapping[str, Any], key: str) -> float:
    """A float value; an int is accepted (a hand-written `--run-config k=1` means 1.0)."""
    v = _get(rc, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"run config: {key}={v!r} must be a number")
    return float(v)


def get_bool(rc: Mapping[str, Any], key: str) -> bool:
    v = _get(rc, key)
    if not isinstance(v, bool):
        raise ConfigError(f"run config: {key}={v!r} must be true or false")
    return v


def get_str(rc: Mapping[str, Any], key: str) -> str:
    v = _get(rc, key)
    if not isinstance(v, str):
        raise ConfigError(f"run config: {key}={v!r} must be a string")
    return v


# Canonical spelling of each supported strategy (FL_STRATEGY), matched case-insensitively.
STRATEGIES = ("FedAvg", "FedProx", "FedAdam", "Krum", "Bulyan", "FedTrimmedAvg")


@dataclass(frozen=True)
class Settings:
    """Everything the ServerApp needs from the run config, typed and checked."""

    use_case: str
    num_rounds: int
    strategy: str
    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    proximal_mu: float
    server_learning_rate: float
    num_malicious_nodes: int
    trim_beta: float
    round_timeout: float
    node_wait_timeout: float
    hidden_units: int
    num_features: int
    num_classes: int
    seed: int
    checkpoint_enabled: bool
    checkpoint_interval: int
    checkpoint_dir: str
    checkpoint_resume: bool
    status_file: str

    @property
    def nodes_needed(self) -> int:
        """Nodes that must be connected before round 1 (Flower samples max of these)."""
        return max(self.min_available_nodes, self.min_train_nodes, self.min_evaluate_nodes)


def canonical_strategy(name: str) -> str:
    for s in STRATEGIES:
        if s.lower() == name.lower():
            return s
    raise ConfigError(f"run config: strategy={name!r} must be one of {', '.join(STRATEGIES)}")


def parse(rc: Mapping[str, Any]) -> Settings:
    """Read and validate every key; raises ConfigError listing all problems at once."""
    s = Settings(
        use_case=get_str(rc, "use-case"),
        num_rounds=get_int(rc, "num-server-rounds"),
        strategy=canonical_strategy(get_str(rc, "strategy")),
        fraction_train=get_float(rc, "fraction-train"),
        fraction_evaluate=get_float(rc, "fraction-evaluate"),
        min_train_nodes=get_int(rc, "min-train-nodes"),
        min_evaluate_nodes=get_int(rc, "min-evaluate-nodes"),
        min_available_nodes=get_int(rc, "min-available-nodes"),
        proximal_mu=get_float(rc, "proximal-mu"),
        server_learning_rate=get_float(rc, "server-learning-rate"),
        num_malicious_nodes=get_int(rc, "num-malicious-nodes"),
        trim_beta=get_float(rc, "trim-beta"),
        round_timeout=get_float(rc, "round-timeout"),
        node_wait_timeout=get_float(rc, "node-wait-timeout"),
        hidden_units=get_int(rc, "hidden-units"),
        num_features=get_int(rc, "num-features"),
        num_classes=get_int(rc, "num-classes"),
        seed=get_int(rc, "seed"),
        checkpoint_enabled=get_bool(rc, "checkpoint-enabled"),
        checkpoint_interval=get_int(rc, "checkpoint-interval"),
        checkpoint_dir=get_str(rc, "checkpoint-dir"),
        checkpoint_resume=get_bool(rc, "checkpoint-resume"),
        status_file=get_str(rc, "status-file"),
    )
    problems = check(s)
    if problems:
        raise ConfigError("invalid run config: " + "; ".join(problems))
    return s


def byzantine_problem(strategy: str, n: int, f: int) -> str | None:
    """The Krum/Bulyan bound on n = min-train-nodes, which Flower itself does not enforce."""
    if strategy == "Krum" and n < 2 * f + 3:
        return (f"Krum needs min-train-nodes >= 2*num-malicious-nodes + 3 (n >= 2f+3): "
                f"n={n}, f={f}, 2*{f}+3={2 * f + 3}")
    if strategy == "Bulyan" and n < 4 * f + 3:
        return (f"Bulyan needs min-train-nodes >= 4*num-malicious-nodes + 3 (n >= 4f+3): "
                f"n={n}, f={f}, 4*{f}+3={4 * f + 3}")
    return None


def check(s: Settings) -> list[str]:
    """Every rule broken by `s`, as messages naming key, value and rule."""
    p: list[str] = []
    if s.use_case not in USE_CASES:
        p.append(f"use-case={s.use_case!r} must be one of {', '.join(USE_CASES)}")
    if s.num_rounds < 1:
        p.append(f"num-server-rounds={s.num_rounds} must be >= 1")
    for key, v in (("fraction-train", s.fraction_train), ("fraction-evaluate", s.fraction_evaluate)):
        if not 0.0 < v <= 1.0:
            p.append(f"{key}={v} must be in (0, 1]")
    for key, v in (("min-train-nodes", s.min_train_nodes), ("min-evaluate-nodes", s.min_evaluate_nodes),
                   ("min-available-nodes", s.min_available_nodes)):
        if v < 1:
            p.append(f"{key}={v} must be >= 1")
    if s.num_malicious_nodes < 0:
        p.append(f"num-malicious-nodes={s.num_malicious_nodes} must be >= 0")
    bz = byzantine_problem(s.strategy, s.min_train_nodes, s.num_malicious_nodes)
    if bz:
        p.append(bz)
    if s.strategy == "FedProx" and s.proximal_mu < 0:
        p.append(f"proximal-mu={s.proximal_mu} must be >= 0")
    if s.strategy == "FedAdam" and not s.server_learning_rate > 0:
        p.append(f"server-learning-rate={s.server_learning_rate} must be > 0")
    if s.strategy == "FedTrimmedAvg" and not 0.0 <= s.trim_beta < 0.5:
        p.append(f"trim-beta={s.trim_beta} must be in [0, 0.5)")
    if not s.round_timeout > 0:
        p.append(f"round-timeout={s.round_timeout} must be > 0")
    if s.node_wait_timeout < 0:
        p.append(f"node-wait-timeout={s.node_wait_timeout} must be >= 0 (0 = wait forever)")
    if s.hidden_units < 1:
        p.append(f"hidden-units={s.hidden_units} must be >= 1")
    if s.num_features < 0 or s.num_classes < 0 or s.num_classes == 1:
        p.append(f"num-features={s.num_features}, num-classes={s.num_classes}: "
                 "0 (the bundled dataset's) or a positive size, at least 2 classes")
    if s.checkpoint_interval < 1:
        p.append(f"checkpoint-interval={s.checkpoint_interval} must be >= 1")
    if (s.checkpoint_enabled or s.checkpoint_resume) and not s.checkpoint_dir.startswith("/"):
        p.append(f"checkpoint-dir={s.checkpoint_dir!r} must be an absolute path when "
                 "checkpoint-enabled or checkpoint-resume is true")
    return p


def strategy_class(name: str):
    """The Message-API class for a canonical strategy name (imported lazily: tests of the
    rules above need no flwr)."""
    from flwr.serverapp import strategy as S

    return {
        "FedAvg": S.FedAvg,
        "FedProx": S.FedProx,
        "FedAdam": S.FedAdam,
        "Krum": S.Krum,
        "Bulyan": S.Bulyan,
        "FedTrimmedAvg": S.FedTrimmedAvg,
    }[name]


def strategy_kwargs(s: Settings) -> dict[str, Any]:
    """Constructor arguments: the shared FedAvg ones plus each strategy's own parameter."""
    kw: dict[str, Any] = dict(
        fraction_train=s.fraction_train,
        fraction_evaluate=s.fraction_evaluate,
        min_train_nodes=s.min_train_nodes,
        min_evaluate_nodes=s.min_evaluate_nodes,
        min_available_nodes=s.min_available_nodes,
    )
    extra = {
        "FedProx": {"proximal_mu": s.proximal_mu},
        "FedAdam": {"eta": s.server_learning_rate},
        "Krum": {"num_malicious_nodes": s.num_malicious_nodes},
        "Bulyan": {"num_malicious_nodes": s.num_malicious_nodes},
        "FedTrimmedAvg": {"beta": s.trim_beta},
    }
    kw.update(extra.get(s.strategy, {}))
    return kw
