"""ClientApp: trains and evaluates the global model on this node's data, per use case.

The framework comes from the node's image: env FL_ML_FRAMEWORK = sklearn (default: numpy
training, scikit-learn datasets) | pytorch | tensorflow. tabular-classification always trains
with numpy; image-classification uses the image's framework; llm-fine-tuning needs pytorch and
provisioned data. torch/tensorflow are imported only by their backends.
"""

import os
from collections import OrderedDict

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from . import data as D
from . import model as M
from . import settings as S

app = ClientApp()

FRAMEWORKS = ("sklearn", "pytorch", "tensorflow")


class _NumpyBackend:
    """The sklearn variant: numpy SGD (model.py)."""

    @staticmethod
    def train(model, x, y, epochs, lr, batch_size, mu, seed):
        return M.train(model, x, y, epochs, lr, batch_size, mu, np.random.default_rng(seed))

    @staticmethod
    def loss_accuracy(model, x, y):
        return M.loss_accuracy(model, x, y)


def framework() -> str:
    fw = os.environ.get("FL_ML_FRAMEWORK", "").strip().lower() or "sklearn"
    if fw not in FRAMEWORKS:
        raise ValueError(f"FL_ML_FRAMEWORK={fw!r} must be one of {', '.join(FRAMEWORKS)}")
    return fw


def backend(use_case: str):
    """The trainer for this use case on this node's image."""
    fw = framework()
    if use_case == "tabular-classification" or fw == "sklearn":
        return _NumpyBackend
    if fw == "pytorch":
        from . import torch_backend

        return torch_backend
    from . import tf_backend

    return tf_backend


def _model(msg: Message):
    arrays = msg.content["arrays"]
    return OrderedDict((k, np.asarray(v.numpy(), dtype=np.float64)) for k, v in arrays.items())


def _node_data(context: Context, model):
    rc = context.run_config
    use_case = S.get_str(rc, "use-case")
    num_classes = list(model.values())[-1].shape[0]
    nd = D.load_node_data(use_case, context.node_config, num_classes, S.get_int(rc, "seed"))
    M.check_shapes(model, use_case, num_classes, nd.x_train.shape[1], f"node data {nd.source}")
    return use_case, nd


def _seed(context: Context, server_round: int) -> list[int]:
    """Per node and round, so shuffles differ between rounds but repeat across reruns."""
    pid = int(context.node_config.get("partition-id", 0))
    return [S.get_int(context.run_config, "seed"), pid, server_round]


@app.train()
def train(msg: Message, context: Context) -> Message:
    rc = context.run_config
    if S.get_str(rc, "use-case") == "llm-fine-tuning":
        from . import llm

        return llm.train(msg, context)
    model = _model(msg)
    use_case, nd = _node_data(context, model)
    cfg = msg.content["config"]
    mu = float(cfg["proximal-mu"]) if "proximal-mu" in cfg else 0.0  # sent by FedProx only
    rnd = int(cfg["server-round"]) if "server-round" in cfg else 0
    b = backend(use_case)
    new = b.train(model, nd.x_train, nd.y_train, S.get_int(rc, "local-epochs"),
                  S.get_float(rc, "learning-rate"), S.get_int(rc, "batch-size"), mu,
                  _seed(context, rnd))
    loss, acc = b.loss_accuracy(new, nd.x_train, nd.y_train)
    content = RecordDict({
        "arrays": ArrayRecord(OrderedDict((k, Array(np.asarray(v, dtype=np.float64)))
                                          for k, v in new.items())),
        # proximal_mu shows that the FedProx term was applied (0.0 for other strategies).
        "metrics": MetricRecord({"train_loss": loss, "train_accuracy": acc, "proximal_mu": mu,
                                 "num-examples": len(nd.x_train)}),
    })
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    rc = context.run_config
    if S.get_str(rc, "use-case") == "llm-fine-tuning":
        from . import llm

        return llm.evaluate(msg, context)
    model = _model(msg)
    use_case, nd = _node_data(context, model)
    loss, acc = backend(use_case).loss_accuracy(model, nd.x_eval, nd.y_eval)
    content = RecordDict({
        "metrics": MetricRecord({"loss": loss, "accuracy": acc, "num-examples": len(nd.x_eval)}),
    })
    return Message(content=content, reply_to=msg)
