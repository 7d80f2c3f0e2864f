using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sublayers;

/// <summary>
/// An independent forward of a golden checkpoint with plain tensor ops in float64 (no LayerPrune module code): HF
/// modeling_llama.py / modeling_phi.py written out, with chosen attention and MLP sublayers replaced by the identity.
/// </summary>
public static class PlainForward
{
    /// <summary>Logits [T, V] for one unpadded sequence, attention of <paramref name="noAttention"/> and MLP of
    /// <paramref name="noMlp"/> removed.</summary>
    public static Tensor Logits(string dir, long[] ids, ISet<int> noAttention, ISet<int> noMlp,
        Action<int, bool, Tensor, Tensor>? onSublayer = null)
    {
        var c = ModelConfig.Load(dir);
        using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        using var scope = NewDisposeScope();
        Tensor W(string name) => file.Load(name).to(ScalarType.Float64);
        Tensor? Opt(string name) => file.Tensors.ContainsKey(name) ? W(name) : null;
        bool phi = c.ModelType == "phi";
        long T = ids.Length, H = c.HiddenSize, d = c.HeadDim;
        var x = W("model.embed_tokens.weight").index_select(0, tensor(ids));               // [T, H]

        // RoPE tables: inv_freq = 1/theta^(2i/r) on the first r = head_dim·partial dims (llama3: per-wavelength rescale).
        int r = (int)(d * c.Rope.PartialRotaryFactor);
        var inv = new double[r / 2];
        for (int i = 0; i < r / 2; i++)
        {
            double f = 1.0 / Math.Pow(c.Rope.Theta, 2.0 * i / r);
            if (c.Rope.Type == "llama3")
            {
                double wl = 2 * Math.PI / f, low = c.Rope.OriginalMaxPositions / c.Rope.LowFreqFactor;
                double high = c.Rope.OriginalMaxPositions / c.Rope.HighFreqFactor;
                if (wl > low) f /= c.Rope.Factor;
                else if (wl >= high)
                {
                    double s = (c.Rope.OriginalMaxPositions / wl - c.Rope.LowFreqFactor) / (c.Rope.HighFreqFactor - c.Rope.LowFreqFactor);
                    f = (1 - s) * f / c.Rope.Factor + s * f;
                }
            }
            inv[i] = f;
        }
        // HF computes inv_freq in float32: round the same way so the angles agree.
        var invT = tensor(inv.Select(v => (double)(float)v).ToArray());
        var freqs = arange(T, dtype: ScalarType.Float64).unsqueeze(1) * invT.unsqueeze(0);   // [T, r/2]
        var emb = cat([freqs, freqs], 1);
        var cos = emb.cos().unsqueeze(1);                                                      // [T, 1, r]
        var sin = emb.sin().unsqueeze(1);
        Tensor Rope(Tensor q)                                                                    // [T, heads, d]
        {
            var rot = q.narrow(2, 0, r);
            var half1 = rot.narrow(2, 0, r / 2);
            var half2 = rot.narrow(2, r / 2, r / 2);
            var rotated = rot * cos + cat([-half2, half1], 2) * sin;
            return r == d ? rotated : cat([rotated, q.narrow(2, r, d - r)], 2);
        }
        Tensor Lin(Tensor v, string name) => Opt(name + ".bias") is { } b
            ? v.matmul(W(name + ".weight").t()) + b : v.matmul(W(name + ".weight").t());
        Tensor Rms(Tensor v, string name) => W(name + ".weight") * (v / (v.pow(2).mean([-1], keepdim: true) + c.NormEps).sqrt());
        Tensor Ln(Tensor v, string name)
        {
            var mu = v.mean([-1], keepdim: true);
            var var_ = (v - mu).pow(2).mean([-1], keepdim: true);
            return (v - mu) / (var_ + c.NormEps).sqrt() * W(name + ".weight") + W(name + ".bias");
        }

        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            Tensor Attn(Tensor n)
            {
                var q = Rope(Lin(n, p + "self_attn.q_proj").view(T, c.NumHeads, d));
                var k = Rope(Lin(n, p + "self_attn.k_proj").view(T, c.NumKvHeads, d));
                var v = Lin(n, p + "self_attn.v_proj").view(T, c.NumKvHeads, d);
                int rep = c.NumHeads / c.NumKvHeads;
                k = k.repeat_interleave(rep, 1);
                v = v.repeat_interleave(rep, 1);
                var scores = q.permute(1, 0, 2).matmul(k.permute(1, 2, 0)) / Math.Sqrt(d);     // [heads, T, T]
                var qi = arange(T).unsqueeze(1);
                var kj = arange(T).unsqueeze(0);
                var allowed = kj.le(qi);
                if (c.SlidingWindows[i] is int w) allowed = allowed.logical_and((qi - kj).lt(w));
                scores = scores.masked_fill(allowed.logical_not(), double.NegativeInfinity);
                var o = scores.softmax(-1).matmul(v.permute(1, 0, 2)).permute(1, 0, 2).reshape(T, c.NumHeads * d);
                return Lin(o, p + (phi ? "self_attn.dense" : "self_attn.o_proj"));
            }
            if (phi)
            {
                if (noAttention.Contains(i) && noMlp.Contains(i)) continue;
                var n = Ln(x, p + "input_layernorm");
                var y = x;
                if (!noAttention.Contains(i))
                {
                    var attn = Attn(n);
                    onSublayer?.Invoke(i, true, x, x + attn);
                    y = y + attn;
                }
                if (!noMlp.Contains(i))
                {
                    var a = Lin(n, p + "mlp.fc1");
                    var g = 0.5 * a * (1.0 + (Math.Sqrt(2.0 / Math.PI) * (a + 0.044715 * a.pow(3))).tanh());
                    var mlp = Lin(g, p + "mlp.fc2");
                    onSublayer?.Invoke(i, false, x, x + mlp);
                    y = y + mlp;
                }
                x = y;
                continue;
            }
            if (!noAttention.Contains(i))
            {
                var h = x + Attn(Rms(x, p + "input_layernorm"));
                onSublayer?.Invoke(i, true, x, h);
                x = h;
            }
            if (!noMlp.Contains(i))
            {
                var n = Rms(x, p + "post_attention_layernorm");
                var gate = Lin(n, p + "mlp.gate_proj");
                var o = x + Lin(gate * gate.sigmoid() * Lin(n, p + "mlp.up_proj"), p + "mlp.down_proj");
                onSublayer?.Invoke(i, false, x, o);
                x = o;
            }
        }
        var final = phi ? Ln(x, "model.final_layernorm") : Rms(x, "model.norm");
        var head = Opt("lm_head.weight") is { } lm && !c.TieWordEmbeddings ? lm : W("model.embed_tokens.weight");
        var logits = final.matmul(head.t());
        if (Opt("lm_head.bias") is { } hb) logits = logits + hb;
        return logits.MoveToOuterDisposeScope();
    }
}
