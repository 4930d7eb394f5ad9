"""llm-fine-tuning: federated LoRA fine-tuning of a provisioned causal language model.

Nothing is downloaded: each node must have, in its data directory (/app/data),
* ``model/``: a Hugging Face causal-LM directory (``config.json``, tokenizer files, weights);
* ``train.jsonl``: one JSON object per line with a ``"text"`` string; optional ``test.jsonl``.
Without them the ClientApp refuses before importing anything heavy, and the ServerApp ends
the run with that message. Training needs torch, transformers and peft (pytorch image).

The global model is the LoRA adapter only: the ServerApp starts with no arrays, every node
creates the same adapter from the same seed in round 1, and the strategy averages adapters.
"""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict

from . import data as D
from . import settings as S

MAX_LENGTH = 256
LORA_RANK = 8
EVAL_LINES = 64


class MissingData(D.DataError):
    """The use case has no provisioned data on this node."""


def required_files(d: Path) -> list[Path]:
    return [d / "model" / "config.json", d / "train.jsonl"]


def check_provisioned(d: Path) -> None:
    """Refuse to start without the model and the training text, naming what is missing."""
    missing = [str(p) for p in required_files(d) if not p.is_file()]
    if missing:
        raise MissingData(
            f"llm-fine-tuning refuses to start: no provisioned data in {d} (missing: "
            f"{', '.join(missing)}). Provision a Hugging Face causal-LM directory at {d}/model "
            f"(config.json, tokenizer, weights) and training text at {d}/train.jsonl (one JSON "
            "object per line with a \"text\" field) on the node's data disk; nothing is "
            "downloaded at run time.")


def _texts(path: Path) -> list[str]:
    out = []
    with path.open() as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise D.DataError(f"{path}:{lineno}: not JSON: {e}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise D.DataError(f"{path}:{lineno}: expected an object with a \"text\" string")
            out.append(obj["text"])
    if not out:
        raise D.DataError(f"{path}: no lines")
    return out


def _setup(msg: Message, context: Context):
    """Check the data, then load model + adapter (imports torch/transformers/peft here)."""
    d = D.data_dir(context.node_config)
    check_provisioned(d)
    try:
        import torch
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise RuntimeError(f"llm-fine-tuning needs torch, transformers and peft in the image "
                           f"(pytorch variant): {e}") from None
    from . import torch_backend

    device = torch_backend.configure_gpu()
    torch.manual_seed(S.get_int(context.run_config, "seed"))
    tok = AutoTokenizer.from_pretrained(d / "model", local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(d / "model", local_files_only=True)
    model = get_peft_model(base, LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK,
                                            target_modules="all-linear", lora_dropout=0.0,
                                            task_type="CAUSAL_LM"))
    arrays = msg.content["arrays"]
    if len(arrays) > 0:
        set_peft_model_state_dict(model, {k: torch.from_numpy(np.asarray(v.numpy()))
                                          for k, v in arrays.items()})
    return d, tok, model.to(device), device


def _batches(tok, texts, batch_size, device):
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=MAX_LENGTH)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        yield {k: v.to(device) for k, v in enc.items()}, labels.to(device)


def _adapter(model) -> "OrderedDict[str, np.ndarray]":
    from peft import get_peft_model_state_dict

    return OrderedDict((k, v.detach().cpu().float().numpy())
                       for k, v in get_peft_model_state_dict(model).items())


def train(msg: Message, context: Context) -> Message:
    d, tok, model, device = _setup(msg, context)
    import torch

    rc = context.run_config
    texts = _texts(d / "train.jsonl")
    cfg = msg.content["config"]
    mu = float(cfg["proximal-mu"]) if "proximal-mu" in cfg else 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=S.get_float(rc, "learning-rate"))
    model.train()
    total, steps = 0.0, 0
    for _ in range(S.get_int(rc, "local-epochs")):
        for batch, labels in _batches(tok, texts, S.get_int(rc, "batch-size"), device):
            loss = model(**batch, labels=labels).loss
            if mu > 0:  # FedProx proximal term on the adapter weights
                loss = loss + mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(params, start))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + float(loss), steps + 1
    content = RecordDict({
        "arrays": ArrayRecord(OrderedDict((k, Array(v)) for k, v in _adapter(model).items())),
        "metrics": MetricRecord({"train_loss": total / max(steps, 1), "num-examples": len(texts)}),
    })
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    d, tok, model, device = _setup(msg, context)
    import torch

    test = d / "test.jsonl"
    texts = _texts(test) if test.is_file() else _texts(d / "train.jsonl")[-EVAL_LINES:]
    model.eval()
    loss_sum, hits, count = 0.0, 0, 0
    with torch.no_grad():
        for batch, labels in _batches(tok, texts, S.get_int(context.run_config, "batch-size"), device):
            out = model(**batch, labels=labels)
            n = int((labels[:, 1:] != -100).sum())
            loss_sum += float(out.loss) * n
            pred = out.logits[:, :-1].argmax(-1)
            mask = labels[:, 1:] != -100
            hits += int((pred[mask] == labels[:, 1:][mask]).sum())
            count += n
    content = RecordDict({"metrics": MetricRecord({
        "loss": loss_sum / max(count, 1), "accuracy": hits / max(count, 1),
        "num-examples": len(texts)})})
    return Message(content=content, reply_to=msg)

