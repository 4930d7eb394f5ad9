#!/usr/bin/env python3
"""Provision a node's data directory for llm-fine-tuning with a tiny causal LM made here (issue
#18): nothing comes from a hub. Run it with the pytorch image's Python (torch, transformers and
tokenizers are there), e.g.

    build/image/pytorch/rootfs/opt/flower/venv/bin/python tools/tiny_llm.py DATA_DIR [--seed N]

It writes DATA_DIR/model/ (a 2-layer GPT-2 built from a config, random weights, and a word-level
tokenizer trained on the text below, saved with save_pretrained: config.json, model.safetensors,
tokenizer.json, ...) and DATA_DIR/train.jsonl + test.jsonl (one {"text": ...} per line), the
layout appliance_app/llm.py reads. Small enough to fine-tune a LoRA round on a CPU in seconds."""
import argparse
import json
import os
import random

WORDS = ("the federated model learns from data that never leaves the node while the server "
         "averages the adapters of every round and each site keeps its own private text").split()


def sentences(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--seed", type=int, default=0, help="the text differs per node; the model does not")
    ap.add_argument("--lines", type=int, default=96)
    a = ap.parse_args()

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    import torch

    model_dir = os.path.join(a.data_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    fast.save_pretrained(model_dir)
    torch.manual_seed(1234)  # the same base model on every node
    cfg = GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    for name, n, seed in (("train.jsonl", a.lines, a.seed), ("test.jsonl", a.lines // 4, a.seed + 1000)):
        with open(os.path.join(a.data_dir, name), "w") as f:
            for s in sentences(n, seed):
                f.write(json.dumps({"text": s}) + "\n")
    # save_pretrained writes the weights 0600: the app runs as uid 49999 and must read them
    # (flower-init warns at boot about what it cannot read; docs/data.md).
    for root, dirs, files in os.walk(a.data_dir):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o755)
        for n in files:
            os.chmod(os.path.join(root, n), 0o644)
    os.chmod(a.data_dir, 0o755)
    print(json.dumps({"model": model_dir, "parameters": sum(p.numel() for p in GPT2LMHeadModel(cfg).parameters()),
                      "vocab": len(fast)}))


if __name__ == "__main__":
    main()
