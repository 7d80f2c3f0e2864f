#!/usr/bin/env python3
"""HF transformers' per-choice log-likelihoods of the first 20 kjv-cloze rows in fp32 with TF32 OFF (issue 29).

The shared reference (tests/fixtures/reference/kjv-llama-16l.json, choice_loglikelihoods_first20) was computed on an H100
with TF32 matmuls and differs from an fp64 computation by up to 4e-3; this regenerates it exactly in fp32 so that
KjvReferenceTests can assert 1e-3 again. The token ids come from LayerPrune (`bench gpu cloze-requests`), so no tokenizer
package is needed here: score = sum over the continuation tokens of log_softmax(logits)[position - 1, token].

Usage (bench/gpu/run.sh runs it): python3 hf_cloze_reference.py cloze_requests.json MODEL_DIR OUT.json
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> int:
    requests_path, model_dir, out_path = sys.argv[1:4]
    # Exact fp32: no TF32 in matmuls or convolutions, no reduced-precision reductions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").to(device).eval()
    items = json.load(open(requests_path))["items"]
    value = []
    with torch.no_grad():
        for item in items:
            row = []
            for req in item:
                ctx, cont = req["context"], req["continuation"]
                ids = torch.tensor([ctx + cont], device=device)
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
                positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=device)
                row.append(logp[positions, torch.tensor(cont, device=device)].double().sum().item())
            value.append(row)
    import transformers
    out = {
        "produced_with": f"HF transformers {transformers.__version__}, torch {torch.__version__}, fp32 on {device}"
                         + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "")
                         + ", TF32 off (matmul and cuDNN), eager attention",
        "protocol": f"kjv-cloze rows 1-{len(items)}, per choice in order: sum of the continuation tokens' log-probs given "
                    "[BOS] + sp(context) (token ids from LayerPrune's tokenizer, identical to SentencePiece's)",
        "value": value,
    }
    json.dump(out, open(out_path, "w"), indent=1)
    print(f"hf cloze reference: {len(value)} rows written to {out_path} ({out['produced_with']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
