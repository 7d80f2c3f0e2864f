using LayerPrune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>A normalization over the last (hidden) dimension.</summary>
public abstract class Norm : Module
{
    /// <summary>x [.., H] → normalized [.., H].</summary>
    public abstract Tensor Forward(Tensor x);
}

/// <summary>LlamaRMSNorm: x / sqrt(mean(x²) + eps) computed in fp32, then × weight in the input dtype.</summary>
public sealed class RmsNorm : Norm
{
    readonly Tensor _weight;  // [H]
    readonly double _eps;
    /// <summary>The scale [H] (for the batch-1 decode path, <see cref="DecodeLayer"/>).</summary>
    internal Tensor Weight => _weight;
    /// <summary>variance_epsilon.</summary>
    internal double Eps => _eps;

    /// <summary>"weight" [<paramref name="hidden"/>] from <paramref name="w"/>.</summary>
    public RmsNorm(Weights w, long hidden, double eps)
    {
        _weight = Param("weight", w, hidden);
        _eps = eps;
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = x.to(ScalarType.Float32);
        var normed = h * rsqrt(h.pow(2).mean([-1], keepdim: true) + _eps);
        return (_weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>torch.nn.LayerNorm (Phi).</summary>
public sealed class LayerNorm : Norm
{
    readonly Tensor _weight, _bias;  // [H]
    readonly double _eps;

    /// <summary>"weight" and "bias" [<paramref name="hidden"/>] from <paramref name="w"/>.</summary>
    public LayerNorm(Weights w, long hidden, double eps)
    {
        _weight = Param("weight", w, hidden);
        _bias = Param("bias", w, hidden);
        _eps = eps;
    }

    /// <inheritdoc/>
    public override Tensor Forward(Tensor x) => nn.functional.layer_norm(x, [_weight.shape[0]], _weight, _bias, _eps);
}

/// <summary>torch.nn.Embedding: token ids → rows of "weight" [V, H].</summary>
public sealed class Embedding : Module
{
    /// <summary>The table [V, H] (a view of the checkpoint; a tied lm_head shares it).</summary>
    public Tensor Weight { get; }

    /// <summary>"weight" [<paramref name="vocab"/>, <paramref name="hidden"/>] from <paramref name="w"/>.</summary>
    public Embedding(Weights w, long vocab, long hidden) => Weight = Param("weight", w, vocab, hidden);

    /// <summary>ids [B, T] (int64, on the table's device) → [B, T, H].</summary>
    public Tensor Forward(Tensor ids)
    {
        using var flat = ids.reshape(-1);
        using var rows = Weight.index_select(0, flat);
        return rows.view(ids.shape[0], ids.shape[1], -1);
    }
}

/// <summary>What every layer of one forward call shares: rotary tables and attention masks.</summary>
public sealed class AttentionInputs : IDisposable
{
    /// <summary>The model's rotary embedding (not owned).</summary>
    public required Rope Rope;
    /// <summary>cos and signed sin [B, 1, T, rotaryDim] (see <see cref="Rope.CosSin"/>).</summary>
    public required Tensor Cos, SinSigned;
    /// <summary>Additive mask [B, 1, T, S] for full-attention layers; null = plain causal (T == S, no padding).</summary>
    public Tensor? FullMask;
    /// <summary>Additive mask for sliding-window layers, keyed by window size.</summary>
    public Dictionary<int, Tensor> SlidingMasks { get; } = new();
    /// <summary>Sublayers skipped in this call (in-memory sublayer removal, original layer indices); null = none.</summary>
    public SublayerMask? Skip;

    /// <inheritdoc/>
    public void Dispose()
    {
        Cos.Dispose();
        SinSigned.Dispose();
        FullMask?.Dispose();
        foreach (var m in SlidingMasks.Values) m.Dispose();
    }
}

/// <summary>Multi-head attention with grouped-query K/V, RoPE and an optional sliding window (HF LlamaAttention / PhiAttention).</summary>
public sealed class Attention : Module
{
    readonly int _heads, _kvHeads, _headDim;
    /// <summary>Query heads, key/value heads and head_dim (for <see cref="DecodeLayer"/>).</summary>
    internal (int Heads, int KvHeads, int HeadDim) Shape => (_heads, _kvHeads, _headDim);

    /// <summary>Query projection [heads·d, H].</summary>
    public Linear Q { get; }
    /// <summary>Key projection [kvHeads·d, H].</summary>
    public Linear K { get; }
    /// <summary>Value projection [kvHeads·d, H].</summary>
    public Linear V { get; }
    /// <summary>Output projection [H, heads·d] ("o_proj"; Phi: "dense").</summary>
    public Linear O { get; }
    /// <summary>Keys with q − k ≥ window are masked; null = full attention.</summary>
    public int? SlidingWindow { get; }

    /// <summary>
    /// q_proj, k_proj, v_proj and the output projection named <paramref name="outputName"/> for layer
    /// <paramref name="layerIndex"/> of <paramref name="c"/>; q/k/v biases must exist when <paramref name="qkvBias"/>, the
    /// output bias when <paramref name="outputBias"/> (otherwise each bias is read when stored).
    /// </summary>
    public Attention(ModelConfig c, Weights w, int layerIndex, string outputName, bool qkvBias, bool outputBias)
    {
        _heads = c.NumHeads;
        _kvHeads = c.NumKvHeads;
        _headDim = c.HeadDim;
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        Q = Add("q_proj", w, s => new Linear(s, q, h, qkvBias));
        K = Add("k_proj", w, s => new Linear(s, kv, h, qkvBias));
        V = Add("v_proj", w, s => new Linear(s, kv, h, qkvBias));
        O = Add(outputName, w, s => new Linear(s, h, q, outputBias));
        SlidingWindow = c.SlidingWindows[layerIndex];
    }

    /// <summary>
    /// x [B, T, H] → [B, T, H], appending this layer's keys/values to <paramref name="cache"/> slot <paramref name="slot"/>.
    /// </summary>
    public Tensor Forward(Tensor x, AttentionInputs a, KvCache? cache, int slot)
    {
        using var scope = NewDisposeScope();
        long B = x.shape[0], T = x.shape[1];
        var qkv = Gemv.TryFused(x, Q, K, V) ?? [Q.Forward(x), K.Forward(x), V.Forward(x)];   // one loop at batch 1 (Gemv)
        var query = qkv[0].view(B, T, _heads, _headDim).transpose(1, 2);    // [B, h, T, d]
        var key = qkv[1].view(B, T, _kvHeads, _headDim).transpose(1, 2);    // [B, kvh, T, d]
        var value = qkv[2].view(B, T, _kvHeads, _headDim).transpose(1, 2);
        query = a.Rope.Apply(query, a.Cos, a.SinSigned);
        key = a.Rope.Apply(key, a.Cos, a.SinSigned);
        if (cache is not null) (key, value) = cache.Append(slot, key, value);    // [B, kvh, S, d]
        if (_kvHeads != _heads)
        {
            key = key.repeat_interleave(_heads / _kvHeads, dim: 1);
            value = value.repeat_interleave(_heads / _kvHeads, dim: 1);
        }
        Tensor? mask = SlidingWindow is int win && a.SlidingMasks.TryGetValue(win, out var sm) ? sm : a.FullMask;
        var attn = UseEager(query, key)
            ? EagerAttention(query, key, value, mask)
            : mask is null
                ? nn.functional.scaled_dot_product_attention(query, key, value, is_casual: T > 1)
                : nn.functional.scaled_dot_product_attention(query, key, value, attn_mask: mask);
        var merged = attn.transpose(1, 2).reshape(B, T, _heads * _headDim);   // [B, T, h·d]
        return O.Forward(merged).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Score elements (B·heads·T·S) up to which a training pass on CPU takes <see cref="EagerAttention"/>: measured with
    /// `bench -- heal-profile` (TinyLlama shape, bf16, AVX512-BF16), forward + backward of eager vs SDPA's flash kernel was
    /// 6 vs 28 ms at 4×128 and 18 vs 75 ms at 8×128 positions, but 359 vs 260 ms at 16×256.
    /// </summary>
    public const long EagerAttentionElements = 1L << 22;

    /// <summary>
    /// Whether this call takes the eager path: a training pass (a graph is recorded, or a checkpointed layer runs its
    /// forward or recompute, so both take the same path) on CPU with at most <see cref="EagerAttentionElements"/> scores.
    /// Inference always takes SDPA.
    /// </summary>
    static bool UseEager(Tensor query, Tensor key) =>
        (is_grad_enabled() || LayerCheckpoint.Active) && query.device_type == DeviceType.CPU &&
        query.shape[0] * query.shape[1] * query.shape[2] * key.shape[2] <= EagerAttentionElements;

    /// <summary>
    /// HF eager_attention_forward (modeling_llama.py): softmax(q·kᵀ·d^−½ + mask) in fp32, cast to q's dtype, times v.
    /// q [B, h, T, d], k/v [B, h, S, d], mask additive [B|1, 1, T, S] or null = causal (T == S).
    /// </summary>
    static Tensor EagerAttention(Tensor query, Tensor key, Tensor value, Tensor? mask)
    {
        using var scope = NewDisposeScope();
        long T = query.shape[2], S = key.shape[2];
        var scores = query.matmul(key.transpose(2, 3)).mul_(1.0 / Math.Sqrt(query.shape[3]));  // [B, h, T, S]
        if (mask is not null) scores = scores + mask;
        else if (T > 1)
        {
            var future = ones(T, S, dtype: ScalarType.Bool, device: query.device).triu(1);       // key after query
            scores = scores.masked_fill(future, double.NegativeInfinity);
        }
        var probs = nn.functional.softmax(scores, -1, ScalarType.Float32).to(query.dtype);
        return probs.matmul(value).MoveToOuterDisposeScope();
    }
}

/// <summary>One decoder block: its children are named as in the HF state dict (self_attn, mlp, input_layernorm, ...).</summary>
public abstract class DecoderLayer : Module
{
    /// <summary>The layer's 0-based index in the model it was read from (what <see cref="SublayerMask"/> refers to).</summary>
    public int Index { get; protected init; }

    /// <summary>Residual stream in → residual stream out, [B, T, H].</summary>
    public abstract Tensor Forward(Tensor h, AttentionInputs a, KvCache? cache, int slot);

    /// <summary>Linear sub-modules with HF names relative to the layer, e.g. "self_attn.q_proj", "mlp.down_proj".</summary>
    public IEnumerable<(string name, Linear linear)> Linears() => NamedModules<Linear>();

    /// <summary>Every tensor with HF names relative to the layer (e.g. "input_layernorm.weight").</summary>
    public IEnumerable<(string name, Tensor tensor)> Tensors() => StateDict();

    /// <summary>The activation named by config.json hidden_act (HF ACT2FN); throws for names not supported.</summary>
    public static Func<Tensor, Tensor> Activation(string name) => name switch
    {
        "silu" or "swish" => x => nn.functional.silu(x),
        "gelu" => x => nn.functional.gelu(x),
        // gelu_new / gelu_pytorch_tanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        "gelu_new" or "gelu_pytorch_tanh" => GeluTanh,
        "relu" => x => nn.functional.relu(x),
        _ => throw new LayerPruneException(
            $"unsupported hidden_act '{name}' (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)"),
    };

    /// <summary>HF NewGELUActivation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    static Tensor GeluTanh(Tensor x)
    {
        using var scope = NewDisposeScope();
        var inner = Math.Sqrt(2.0 / Math.PI) * (x + 0.044715 * x.pow(3));
        return (0.5 * x * (1.0 + inner.tanh())).MoveToOuterDisposeScope();
    }
}

/// <summary>HF nn.ModuleList of decoder layers: children "0", "1", ...; a slot is empty while its layer is not resident.</summary>
public sealed class LayerList : Module
{
    readonly DecoderLayer?[] _layers;

    /// <summary><paramref name="count"/> slots, filled by <paramref name="build"/> (null: all empty, layers loaded per use).</summary>
    public LayerList(int count, Func<int, DecoderLayer>? build)
    {
        _layers = new DecoderLayer?[count];
        if (build is null) return;
        for (int i = 0; i < count; i++)
            _layers[i] = build(i);
    }

    /// <summary>Layer <paramref name="i"/>, or null when it is not resident.</summary>
    public DecoderLayer? this[int i] => _layers[i];

    /// <summary>Fills the empty slot <paramref name="i"/> (a layer built after the model, e.g. quantized as it was read).</summary>
    internal void Fill(int i, DecoderLayer layer)
    {
        if (_layers[i] is not null) throw new InvalidOperationException($"layer {i} is already resident");
        _layers[i] = layer;
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Module Module)> NamedChildren()
    {
        for (int i = 0; i < _layers.Length; i++)
            if (_layers[i] is { } layer)
                yield return (i.ToString(System.Globalization.CultureInfo.InvariantCulture), layer);
    }
}

/// <summary>HF LlamaModel / PhiModel: embed_tokens → layers → final norm (named by the family).</summary>
public sealed class DecoderModel : Module
{
    /// <summary>embed_tokens.</summary>
    public Embedding EmbedTokens { get; }
    /// <summary>layers.</summary>
    public LayerList Layers { get; }
    /// <summary>The final norm ("norm"; Phi: "final_layernorm").</summary>
    public Norm Norm { get; }

    /// <summary>The model body of <paramref name="c"/>; <paramref name="buildLayer"/> null leaves the layers unloaded.</summary>
    public DecoderModel(ModelConfig c, Families.Architecture arch, Weights w, Func<Weights, int, DecoderLayer>? buildLayer)
    {
        EmbedTokens = Add("embed_tokens", w, s => new Embedding(s, c.VocabSize, c.HiddenSize));
        Layers = Add("layers", w, s => new LayerList(c.NumLayers, buildLayer is null ? null : i => buildLayer(s.At(i), i)));
        Norm = Add(arch.FinalNormName, w, s => arch.BuildFinalNorm(c, s));
    }
}
