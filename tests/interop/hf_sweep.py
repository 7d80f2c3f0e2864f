#!/usr/bin/env python3
"""Independent HF transformers run of LayerPrune's sweep protocol, compared with a sweep's results.json.

Needs python3 with torch, transformers and sentencepiece (not part of `dotnet test`). For every row of results.json it
removes the row's layers from a fresh HF model (renumbering self_attn.layer_idx), computes the validation loss with the
same protocol (lines → [BOS]+sp(line), concatenated, consecutive seq_len chunks, first max_chunks, mean next-token CE)
and the mc accuracy (harness loglikelihood of " choice" continuations), and checks |Δloss| ≤ 1e-3 and |Δacc| ≤ one item.

    dotnet run --project src/LayerPrune.Cli -- sweep --out sweep-out            # the README's main command
    python3 tests/interop/hf_sweep.py sweep-out/results.json
"""
import json
import math
import sys

import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM


def chunks(path, sp, seq_len, max_chunks):
    ids = []
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line:
            ids += [1] + sp.encode(line)
    n = len(ids) // seq_len
    if max_chunks:
        n = min(n, max_chunks)
    return torch.tensor(ids[: n * seq_len]).view(n, seq_len)


def pruned(model_dir, removed):
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    keep = [l for i, l in enumerate(m.model.layers) if i not in set(removed)]
    for i, l in enumerate(keep):
        l.self_attn.layer_idx = i
    m.model.layers = torch.nn.ModuleList(keep)
    m.config.num_hidden_layers = len(keep)
    return m


@torch.no_grad()
def loss(m, x, batch=8):
    total, count = 0.0, 0
    for b in x.split(batch):
        logp = m(b).logits[:, :-1].float().log_softmax(-1)
        total -= logp.gather(2, b[:, 1:, None]).sum().item()
        count += b[:, 1:].numel()
    return total / count


@torch.no_grad()
def mc_acc(m, sp, path, limit):
    rows = [json.loads(l) for l in open(path)][:limit]
    correct = 0
    for r in rows:
        ctx = [1] + sp.encode(r["context"])
        scores = []
        for c in r["choices"]:
            whole = [1] + sp.encode(r["context"] + c)
            logp = m(torch.tensor([whole])).logits[0].float().log_softmax(-1)
            scores.append(sum(logp[p - 1, whole[p]].item() for p in range(len(ctx), len(whole))))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == r["label"])
    return correct / len(rows), len(rows)


def main():
    res = json.load(open(sys.argv[1]))
    cfg = res["config"]
    sp = spm.SentencePieceProcessor(model_file=f"{cfg['model']}/tokenizer.model")
    tasks = {t.split(":", 1)[0]: t.split(":", 1)[1] for t in cfg["tasks"]}
    x = chunks(tasks["loss"], sp, cfg["seq_len"], cfg["max_chunks"]) if "loss" in tasks else None
    bad = 0
    for row in res["rows"]:
        m = pruned(cfg["model"], row["removed"])
        msg = f"{row['strategy']:>10} n={row['n']:>2}"
        if x is not None:
            hf = loss(m, x)
            ok = abs(hf - row["validation_loss"]) <= 1e-3
            bad += not ok
            msg += f"  loss HF {hf:.5f} LayerPrune {row['validation_loss']:.5f} {'ok' if ok else 'MISMATCH'}"
        if "mc" in tasks:
            acc, n = mc_acc(m, sp, tasks["mc"], cfg["limit"])
            ok = abs(acc - row["mc_acc"]) * n <= 1 + 1e-9
            bad += not ok
            msg += f"  mc_acc HF {acc:.4f} LayerPrune {row['mc_acc']:.4f} {'ok' if ok else 'MISMATCH'}"
        print(msg, flush=True)
    print("all rows agree" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
