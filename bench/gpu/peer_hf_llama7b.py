# Copied from the project's shared peer benchmark (HF transformers + PEFT reference for the GPU race).
# Peer baseline for the GPU machine: HF transformers + PEFT on a random-init Llama-2-7B-shaped model, bf16, SDPA.
# Usage there: python3 peer_hf_llama7b.py OUT.json  (prints forward tokens/s with and without hidden states, LoRA train tokens/s)
# bench/gpu/run.sh --dry-run adds --tiny: the same code on the CPU in fp32 with a 4-layer, 64-wide model and 2 x 32 batches
# (LayerPrune's change to the shared copy; without --tiny every number and shape is the shared script's).
import torch, time, math, json, sys
from transformers import LlamaConfig, LlamaForCausalLM
tiny = "--tiny" in sys.argv[2:]
torch.backends.cuda.matmul.allow_tf32 = True
if tiny:
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256, rms_norm_eps=1e-5)
    dev, dtype, B, T, Bt, Tt, reps = "cpu", torch.float32, 2, 32, 2, 32, 1
else:
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)
    dev, dtype, B, T, Bt, Tt, reps = "cuda", torch.bfloat16, 8, 1024, 4, 1024, 5
cfg._attn_implementation = "sdpa"
torch.set_default_dtype(dtype)
def sync():
    if dev == "cuda": torch.cuda.synchronize()
t0 = time.time()
with torch.device(dev):
    m = LlamaForCausalLM(cfg).eval()
sync(); print("init s", round(time.time()-t0, 1), flush=True)
nparam = sum(p.numel() for p in m.parameters()); print("params", nparam)
res = {"params": nparam}
V, L, H = cfg.vocab_size, cfg.num_hidden_layers, cfg.hidden_size
ids = torch.randint(0, V, (B, T), device=dev)
def run(hidden):
    with torch.no_grad():
        o = m(input_ids=ids, output_hidden_states=hidden, use_cache=False)
        if hidden:
            hs = torch.stack([h[:, -1, :].float() for h in o.hidden_states])  # PruneMe takes last token of each hidden state
            n = hs / hs.norm(dim=-1, keepdim=True)
            cos = torch.einsum("lbh,mbh->blm", n, n).clamp(-1, 1)
            ad = torch.arccos(cos).mean(0) / math.pi
            return ad
for hidden in (False, True):
    run(hidden); sync()
    t = time.time()
    for _ in range(reps): run(hidden)
    sync(); dt = (time.time() - t) / reps
    tok = B * T
    fl = 2 * nparam * tok + 4 * L * T * T * H * B / 2
    key = "fwd_hidden" if hidden else "fwd"
    res[key] = {"tokens_per_s": tok/dt, "tflops": fl/dt/1e12, "s_per_batch": dt}
    print(key, res[key], flush=True)
# peak memory
res["max_mem_gb"] = torch.cuda.max_memory_allocated()/2**30 if dev == "cuda" else None
# LoRA training step (bf16 base, r=64 on all linear), peft
try:
    from peft import LoraConfig, get_peft_model
    pm = get_peft_model(m, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]))
    pm.gradient_checkpointing_enable(); pm.enable_input_require_grads()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randint(0, V, (Bt, Tt), device=dev)
    pm.train()
    for i in range(6):
        if i == 2: sync(); t = time.time()
        loss = pm(input_ids=x, labels=x, use_cache=False).loss
        loss.backward(); opt.step(); opt.zero_grad()
    sync(); dt = (time.time()-t)/4
    res["lora_train"] = {"tokens_per_s": Bt*Tt/dt, "s_per_step": dt}
    print("lora", res["lora_train"], flush=True)
except Exception as e:
    res["lora_error"] = repr(e); print("lora error", e)
json.dump(res, open(sys.argv[1], "w"), indent=1)
