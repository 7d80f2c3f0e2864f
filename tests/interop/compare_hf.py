#!/usr/bin/env python3
"""Load a LayerPrune-pruned checkpoint with HF transformers and compare its logits with LayerPrune's.

Needs python3 with torch, transformers and safetensors (not part of `dotnet test`; run it where they are installed,
e.g. the GPU machine). Steps:

    dotnet run --project src/LayerPrune.Cli -- prune --model samples/kjv-llama-16l --layers 6-13 --out /tmp/kjv-n8
    dotnet run --project src/LayerPrune.Cli -- generate --model /tmp/kjv-n8 --prompt "And God said unto Moses" \
        --max-new-tokens 16 --greedy --json --logits /tmp/lp-logits.safetensors > /tmp/lp.json
    python3 tests/interop/compare_hf.py /tmp/kjv-n8 /tmp/lp.json /tmp/lp-logits.safetensors

Passes when HF's fp32 logits of the prompt equal LayerPrune's within --tol (default 1e-4 absolute, eager attention)
and HF's greedy continuation equals LayerPrune's token for token.
"""
import argparse
import json
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("generate_json")
    ap.add_argument("logits_file")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    lp = json.load(open(a.generate_json))
    ours = load_file(a.logits_file)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    ids = ours["input_ids"].unsqueeze(0)
    with torch.no_grad():
        hf_logits = model(ids).logits[0]
        out = model.generate(ids, max_new_tokens=lp["new_tokens"], do_sample=False)
    diff = (hf_logits - ours["logits"]).abs().max().item()
    same_tokens = out[0].tolist() == lp["token_ids"]
    print(f"{a.model_dir}: {model.config.num_hidden_layers} layers; max |logit diff| = {diff:.3e} (tol {a.tol}); greedy continuation identical: {same_tokens}")
    return 0 if diff <= a.tol and same_tokens else 1


if __name__ == "__main__":
    sys.exit(main())
