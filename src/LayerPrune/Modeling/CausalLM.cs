using LayerPrune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

public sealed class ForwardOptions
{
    /// <summary>Original layer indices to run, in order (default: all). Skipping layers in memory = pruning without writing a checkpoint.</summary>
    public IReadOnlyList<int>? Layers { get; init; }
    /// <summary>
    /// Called with (k, x): x [B, T, H] is the residual stream entering the k-th executed layer; k = number of executed layers
    /// gives the last layer's output before the final norm. x is disposed after the call: copy what you keep.
    /// </summary>
    public Action<int, Tensor>? OnResidual { get; init; }
    /// <summary>Return logits only for the last position ([B, 1, V]).</summary>
    public bool LastPositionOnly { get; init; }
    /// <summary>Skip the final norm and lm_head; Forward returns the last residual stream [B, T, H] (for similarity passes).</summary>
    public bool HiddenOnly { get; init; }
}

/// <summary>
/// A decoder-only causal LM (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, PhiForCausalLM):
/// embed_tokens → decoder layers → final norm → lm_head. Weights come from a memory-mapped checkpoint.
/// </summary>
public sealed class CausalLM : IDisposable
{
    public ModelConfig Config { get; }
    public Checkpoint Checkpoint { get; }
    public Device Device { get; }
    public ScalarType Dtype { get; }
    public bool Offloaded { get; }
    public int NumLayers => Config.NumLayers;

    readonly Tensor _embedTokens;      // [V, H]
    readonly DecoderLayer?[] _layers;  // null entries when offloaded (loaded per use)
    readonly INorm _finalNorm;
    readonly Linear _lmHead;
    readonly Rope _rope;

    public string LayerPrefix(int i) => $"model.layers.{i}.";

    CausalLM(Checkpoint ckpt, Device device, ScalarType dtype, bool offload)
    {
        Checkpoint = ckpt; Config = ckpt.Config; Device = device; Dtype = dtype; Offloaded = offload;
        _rope = new Rope(Config.Rope, Config.HeadDim, device);
        _embedTokens = W("model.embed_tokens.weight");
        var c = Config;
        if (c.Family == ArchitectureFamily.Phi)
        {
            _finalNorm = new LayerNorm(W("model.final_layernorm.weight"), W("model.final_layernorm.bias"), c.NormEps);
            _lmHead = new Linear(W("lm_head.weight"), W("lm_head.bias"));
        }
        else
        {
            _finalNorm = new RmsNorm(W("model.norm.weight"), c.NormEps);
            // Tied embeddings: lm_head shares embed_tokens (the file may or may not hold a copy).
            _lmHead = new Linear(c.TieWordEmbeddings || !ckpt.Contains("lm_head.weight") ? _embedTokens.alias() : W("lm_head.weight"), null);
        }
        _layers = new DecoderLayer?[c.NumLayers];
        if (!offload) for (int i = 0; i < c.NumLayers; i++) _layers[i] = LoadLayer(i);
        else ValidateLayerTensors();
        // Weights converted to the compute dtype no longer need the file pages they were read from: unmap them
        // (weights used in place keep their mapping alive). Without this a bf16 checkpoint run in fp32 stays resident twice.
        ckpt.ReleaseMappings();
    }

    public static CausalLM Load(string dir, Device? device = null, ScalarType dtype = ScalarType.Float32, bool offload = false)
    {
        var ckpt = Checkpoint.Open(dir);
        try { return new CausalLM(ckpt, device ?? CPU, dtype, offload); }
        catch { ckpt.Dispose(); throw; }
    }

    /// <summary>A stored tensor in the compute dtype and device (zero-copy when they already match: a view of the mapping).</summary>
    Tensor W(string name)
    {
        var t = Checkpoint.Load(name);
        var r = t.to(Dtype, Device);
        if (!ReferenceEquals(r, t)) t.Dispose();
        return r;
    }
    Tensor? Optional(string name) => Checkpoint.Contains(name) ? W(name) : null;

    /// <summary>Builds layer <paramref name="i"/> from the checkpoint (used directly when offloading: one layer resident at a time).</summary>
    public DecoderLayer LoadLayer(int i) => Config.Family == ArchitectureFamily.Phi
        ? new PhiDecoderLayer(Config, W, LayerPrefix(i), _rope, i)
        : new LlamaDecoderLayer(Config, W, Optional, LayerPrefix(i), _rope, i);

    void ValidateLayerTensors()
    {
        for (int i = 0; i < NumLayers; i++)
            using (var l = LoadLayer(i)) { } // mapping views only: checks every tensor exists, costs no RAM for fp32 storage
    }

    /// <summary>The resident layer i (throws when offloaded).</summary>
    public DecoderLayer Layer(int i) => _layers[i] ?? throw new InvalidOperationException("model is offloaded: use LoadLayer");

    public Tensor Embed(Tensor inputIds)
    {
        using var ids = inputIds.to(Device);
        using var flat = ids.reshape(-1);
        using var rows = _embedTokens.index_select(0, flat);
        return rows.view(inputIds.shape[0], inputIds.shape[1], -1);
    }

    /// <summary>Final norm + lm_head: hidden [B, T, H] → logits [B, T, V].</summary>
    public Tensor Head(Tensor hidden)
    {
        using var n = _finalNorm.Forward(hidden);
        return _lmHead.Forward(n);
    }

    /// <summary>
    /// Rotary tables and masks for T new positions after <paramref name="past"/> cached ones.
    /// attentionMask: [B, past + T] with 1 = real token, 0 = padding (left or right); null = no padding.
    /// Positions follow HF generate: cumsum(mask) − 1 (relative positions are what RoPE sees, so left padding is exact).
    /// </summary>
    public AttentionInputs PrepareAttention(long batch, long T, long past, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        long S = past + T;
        Tensor positions;
        Tensor? valid = null;
        if (attentionMask is not null)
        {
            if (attentionMask.shape[1] != S) throw new ArgumentException($"attention mask has {attentionMask.shape[1]} positions, expected {S} (cached + new)");
            valid = attentionMask.to(Device).to(ScalarType.Bool);               // [B, S]
            positions = (valid.to(ScalarType.Int64).cumsum(1) - 1).clamp_min(0).narrow(1, past, T);
        }
        else positions = (arange(past, S, dtype: ScalarType.Int64, device: Device)).unsqueeze(0).expand(batch, T);
        var (cos, sin) = _rope.CosSin(positions, Dtype);
        var a = new AttentionInputs { Cos = cos.MoveToOuterDisposeScope(), SinSigned = sin.MoveToOuterDisposeScope() };

        bool needFull = valid is not null || (past > 0 && T > 1);
        var windows = Config.SlidingWindows.Where(w => w is not null).Select(w => w!.Value).Distinct().ToList();
        if (needFull || windows.Count > 0)
        {
            var q = arange(past, S, dtype: ScalarType.Int64, device: Device).unsqueeze(1);  // [T, 1]
            var k = arange(0, S, dtype: ScalarType.Int64, device: Device).unsqueeze(0);     // [1, S]
            var causal = k.le(q);                                                             // [T, S]
            Tensor Additive(Tensor allowed)
            {
                var allowedB = valid is null ? allowed.unsqueeze(0).unsqueeze(0) : allowed.unsqueeze(0).unsqueeze(0).logical_and(valid.unsqueeze(1).unsqueeze(1));
                // Large negative instead of −inf: fully masked rows (padding queries) give a uniform softmax, not NaN (as HF eager).
                var zero = zeros(1, dtype: Dtype, device: Device);
                var min = full(1, Dtype == ScalarType.Float32 ? float.MinValue : -1e4, dtype: Dtype, device: Device);
                return where(allowedB, zero, min).MoveToOuterDisposeScope();                  // [B|1, 1, T, S]
            }
            if (needFull) a.FullMask = Additive(causal);
            foreach (int w in windows) a.SlidingMasks[w] = Additive(causal.logical_and((q - k).lt(w)));
        }
        return a;
    }

    /// <summary>Logits [B, T, V] for input ids [B, T] (int64), continuing from <paramref name="cache"/> when given.</summary>
    public Tensor Forward(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null, ForwardOptions? options = null)
    {
        using var scope = NewDisposeScope();
        var order = options?.Layers ?? Enumerable.Range(0, NumLayers).ToArray();
        if (cache is not null && cache.Layers != order.Count) throw new ArgumentException($"cache has {cache.Layers} layer slots, {order.Count} layers run");
        long B = inputIds.shape[0], T = inputIds.shape[1], past = cache?.Length ?? 0;
        using var att = PrepareAttention(B, T, past, attentionMask);
        var h = Embed(inputIds);
        for (int k = 0; k < order.Count; k++)
        {
            options?.OnResidual?.Invoke(k, h);
            int i = order[k];
            if (_layers[i] is { } layer) h = layer.Forward(h, att, cache, k);
            else using (var streamed = LoadLayer(i)) h = streamed.Forward(h, att, cache, k);
        }
        options?.OnResidual?.Invoke(order.Count, h);
        if (options?.LastPositionOnly == true) h = h.narrow(1, T - 1, 1);
        return (options?.HiddenOnly == true ? h : Head(h)).MoveToOuterDisposeScope();
    }

    /// <summary>Every weight with its HF name (resident models only), e.g. for writing a merged checkpoint.</summary>
    public IEnumerable<(string name, Tensor tensor)> NamedTensors()
    {
        yield return ("model.embed_tokens.weight", _embedTokens);
        for (int i = 0; i < NumLayers; i++) foreach (var (n, t) in Layer(i).Tensors()) yield return (LayerPrefix(i) + n, t);
        string normName = Config.Family == ArchitectureFamily.Phi ? "model.final_layernorm" : "model.norm";
        foreach (var (n, t) in _finalNorm.Tensors()) yield return ($"{normName}.{n}", t);
        if (!(Config.TieWordEmbeddings || !Checkpoint.Contains("lm_head.weight")))
        {
            yield return ("lm_head.weight", _lmHead.Weight!);
            if (_lmHead.Bias is not null) yield return ("lm_head.bias", _lmHead.Bias);
        }
    }

    /// <summary>Linear modules of the decoder layers with HF names, e.g. "model.layers.3.self_attn.q_proj".</summary>
    public IEnumerable<(string name, Linear linear)> NamedLinears()
    {
        for (int i = 0; i < NumLayers; i++) foreach (var (n, l) in Layer(i).Linears()) yield return (LayerPrefix(i) + n, l);
    }

    public void Dispose()
    {
        foreach (var l in _layers) l?.Dispose();
        _embedTokens.Dispose(); _finalNorm.Dispose(); _lmHead.Dispose(); _rope.Dispose();
        Checkpoint.Dispose();
    }
}
