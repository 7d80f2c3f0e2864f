using LayerPrune.Checkpoints;
using LayerPrune.Modeling.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>What one <see cref="CausalLM.Forward"/> call runs and returns.</summary>
public sealed class ForwardOptions
{
    /// <summary>
    /// Original layer indices to run, in order (default: all). Skipping layers in memory = pruning without writing a checkpoint.
    /// </summary>
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
    /// <summary>Sublayers skipped in memory (attention and/or MLP of original layers); null = none.</summary>
    public SublayerMask? Skip { get; init; }
    /// <summary>
    /// Begin after the first Depth layers of <see cref="Layers"/> from Stream [B, T, H], the residual stream those layers
    /// compute for this input (stored by a <see cref="PrefixCache"/>), instead of embedding the ids; null = from the
    /// embedding. Slots of a KV cache for the skipped layers stay empty. The caller keeps the tensor.
    /// </summary>
    public (Tensor Stream, int Depth)? Start { get; init; }
}

/// <summary>
/// A decoder-only causal LM (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, PhiForCausalLM):
/// model.embed_tokens → model.layers → final norm → lm_head. Weights are views of a memory-mapped checkpoint; the module
/// tree (<see cref="Module.NamedModules"/>) names them as the HF state dict does. What differs per family comes from
/// <see cref="Architecture"/>.
/// </summary>
public sealed class CausalLM : Module
{
    /// <summary>The parsed config.json.</summary>
    public ModelConfig Config { get; }
    /// <summary>The open checkpoint the weights are mapped from.</summary>
    public Checkpoint Checkpoint { get; }
    /// <summary>The family descriptor of <see cref="Config"/>.</summary>
    public Architecture Architecture { get; }
    /// <summary>The compute device.</summary>
    public Device Device { get; }
    /// <summary>The compute dtype.</summary>
    public ScalarType Dtype { get; }
    /// <summary>True when layers are read from the checkpoint per use instead of kept resident.</summary>
    public bool Offloaded { get; private set; }
    /// <summary>num_hidden_layers.</summary>
    public int NumLayers => Config.NumLayers;
    /// <summary>HF model: embed_tokens, layers, final norm.</summary>
    public DecoderModel Model { get; }
    /// <summary>HF lm_head (a view of embed_tokens when tied).</summary>
    public Linear LmHead { get; }
    /// <summary>lm_head shares embed_tokens and is not stored (HF _tied_weights_keys).</summary>
    public bool TiedHead { get; }

    readonly Weights _weights;
    readonly Func<Tensor, Tensor> _act;
    readonly Rope _rope;

    /// <summary>The name prefix of every tensor of layer <paramref name="i"/>, e.g. "model.layers.3.".</summary>
    public string LayerPrefix(int i) => Architecture.LayerPrefix(i);

    CausalLM(Checkpoint ckpt, Device device, ScalarType dtype, bool offload)
    {
        Checkpoint = ckpt;
        Config = ckpt.Config;
        Architecture = Architecture.For(Config);
        Device = device;
        Dtype = dtype;
        Offloaded = offload;
        _act = DecoderLayer.Activation(Config.HiddenAct);
        _weights = new Weights(new CheckpointWeights(this));
        _rope = new Rope(Config.Rope, Config.HeadDim, device);
        try
        {
            (Model, LmHead, TiedHead) = Architecture.Build(Config, _weights, _act, residentLayers: !offload);
        }
        catch
        {
            _rope.Dispose();
            throw;
        }
        Add("model", Model);
        Add(Architecture.LmHeadName, LmHead);
        // Offloaded layers are not read here: Checkpoint.Open validated every tensor's name, shape and dtype from the headers.
        // Weights converted to the compute dtype no longer need the file pages they were read from: unmap them
        // (weights used in place keep their mapping alive). Without this a bf16 checkpoint run in fp32 stays resident twice.
        ckpt.ReleaseMappings();
    }

    /// <summary>
    /// Opens the checkpoint in <paramref name="dir"/> and builds the model (layers resident unless <paramref name="offload"/>).
    /// </summary>
    public static CausalLM Load(string dir, Device? device = null, ScalarType dtype = ScalarType.Float32, bool offload = false)
    {
        var ckpt = Checkpoint.Open(dir);
        try { return new CausalLM(ckpt, device ?? CPU, dtype, offload); }
        catch { ckpt.Dispose(); throw; }
    }

    /// <summary>Reads tensors from the checkpoint in the compute dtype and device.</summary>
    sealed class CheckpointWeights(CausalLM m) : IWeightSource
    {
        public Tensor Required(string name, long[] shape) => m.W(name);
        public Tensor? Optional(string name, long[] shape, bool read) => read && m.Checkpoint.Contains(name) ? m.W(name) : null;
    }

    /// <summary>A stored tensor in the compute dtype and device (zero-copy when they already match: a view of the mapping).</summary>
    Tensor W(string name)
    {
        var t = Checkpoint.Load(name);
        var r = t.to(Dtype, Device);
        if (!ReferenceEquals(r, t)) t.Dispose();
        return r;
    }

    /// <summary>
    /// Builds layer <paramref name="i"/> from the checkpoint (used directly when offloading: one layer resident at a time).
    /// </summary>
    public DecoderLayer LoadLayer(int i)
    {
        // Reading leaves nothing behind but the layer's tensors (SafeTensorsFile.Load frees its intermediate view of the
        // mapping, W the stored tensor it converted), so a released mapping is unmapped as soon as the layer is freed.
        var layer = Architecture.BuildLayer(Config, _weights.At(Architecture.LayersName).At(i), i, _act);
        LayerReads++;
        LayerLoaded?.Invoke(i, layer);
        return layer;
    }

    /// <summary>
    /// Keeps <paramref name="layer"/> (built by <see cref="LoadLayer"/>(<paramref name="i"/>), e.g. quantized as it was read)
    /// as the resident layer i; once every layer is resident the model is no longer <see cref="Offloaded"/>. The model owns it.
    /// </summary>
    public void KeepResident(int i, DecoderLayer layer)
    {
        Model.Layers.Fill(i, layer);
        if (Enumerable.Range(0, NumLayers).All(k => Model.Layers[k] is not null))
            Offloaded = false;
    }

    /// <summary>
    /// The linears of layer 0, 1, … with full names (e.g. "model.layers.3.mlp.up_proj"), reading each layer from the checkpoint
    /// when reached; once its linears have been consumed, <paramref name="done"/>(i, layer) keeps or frees the layer and its
    /// pages are released. For setting up an offloaded model one layer at a time (NF4 quantization, LoRA adapters).
    /// </summary>
    public IEnumerable<(string Name, Linear Linear)> LinearsLayerByLayer(Action<int, DecoderLayer> done)
    {
        ArgumentNullException.ThrowIfNull(done);
        for (int i = 0; i < NumLayers; i++)
        {
            var layer = LoadLayer(i);
            foreach (var (name, linear) in layer.Linears())
                yield return (LayerPrefix(i) + name, linear);
            done(i, layer);
            ReleaseStreamedPages();
        }
    }

    /// <summary>Layers built from the checkpoint by <see cref="LoadLayer"/> so far (streamed reads, plus validation at load).</summary>
    public long LayerReads { get; private set; }

    /// <summary>
    /// Called with (i, layer) for every layer <see cref="LoadLayer"/> builds, before it is used: a streamed heal attaches
    /// its resident LoRA adapters here (the layer's weights are freed after the use; what the hook attaches is not).
    /// </summary>
    public Action<int, DecoderLayer>? LayerLoaded { get; set; }

    /// <summary>
    /// Calls <paramref name="apply"/>(k, layer) for the k-th executed layer of <paramref name="layers"/> (null: all), in order:
    /// the resident layer, or when offloaded the layer read from the checkpoint for this call and freed after it. Layer-major
    /// passes over many sequences use it so that each streamed layer is read once for all of them.
    /// </summary>
    public void ForEachLayer(IReadOnlyList<int>? layers, Action<int, DecoderLayer> apply)
    {
        var order = layers ?? Enumerable.Range(0, NumLayers).ToArray();
        for (int k = 0; k < order.Count; k++)
        {
            if (Model.Layers[order[k]] is { } resident)
            {
                apply(k, resident);
                continue;
            }
            using (var streamed = LoadLayer(order[k]))
                apply(k, streamed);
            ReleaseStreamedPages();
        }
    }

    /// <summary>
    /// After a streamed layer is freed: drop the checkpoint's mapping handles so that pages read only for that layer leave
    /// the resident set (weights converted to the compute dtype no longer view them; mappings still viewed stay).
    /// </summary>
    void ReleaseStreamedPages() => Checkpoint.ReleaseMappings();

    /// <summary>The resident layer i (throws when offloaded).</summary>
    public DecoderLayer Layer(int i) => Model.Layers[i] ?? throw new InvalidOperationException("model is offloaded: use LoadLayer");

    /// <summary>Token embeddings: input ids [B, T] → [B, T, H].</summary>
    public Tensor Embed(Tensor inputIds)
    {
        using var ids = inputIds.to(Device);
        return Model.EmbedTokens.Forward(ids);
    }

    /// <summary>Final norm + lm_head: hidden [B, T, H] → logits [B, T, V].</summary>
    public Tensor Head(Tensor hidden)
    {
        using var n = Model.Norm.Forward(hidden);
        return LmHead.Forward(n);
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
            if (attentionMask.shape[1] != S)
                throw new ArgumentException($"attention mask has {attentionMask.shape[1]} positions, expected {S} (cached + new)");
            valid = attentionMask.to(Device).to(ScalarType.Bool);               // [B, S]
            positions = (valid.to(ScalarType.Int64).cumsum(1) - 1).clamp_min(0).narrow(1, past, T);
        }
        else positions = (arange(past, S, dtype: ScalarType.Int64, device: Device)).unsqueeze(0).expand(batch, T);
        var (cos, sin) = _rope.CosSin(positions, Dtype);
        var a = new AttentionInputs
        {
            Rope = _rope, Cos = cos.MoveToOuterDisposeScope(), SinSigned = sin.MoveToOuterDisposeScope(), Skip = Skip,
        };

        bool needFull = valid is not null || (past > 0 && T > 1);
        var windows = Config.SlidingWindows.Where(w => w is not null).Select(w => w!.Value).Distinct().ToList();
        if (needFull || windows.Count > 0)
        {
            var q = arange(past, S, dtype: ScalarType.Int64, device: Device).unsqueeze(1);  // [T, 1]
            var k = arange(0, S, dtype: ScalarType.Int64, device: Device).unsqueeze(0);     // [1, S]
            var causal = k.le(q);                                                             // [T, S]
            Tensor Additive(Tensor allowed)
            {
                var allowedB = allowed.unsqueeze(0).unsqueeze(0);                                 // [1, 1, T, S]
                if (valid is not null) allowedB = allowedB.logical_and(valid.unsqueeze(1).unsqueeze(1));  // [B, 1, T, S]
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
        if (cache is not null && cache.Layers != order.Count)
            throw new ArgumentException($"cache has {cache.Layers} layer slots, {order.Count} layers run");
        long B = inputIds.shape[0], T = inputIds.shape[1], past = cache?.Length ?? 0;
        using var att = PrepareAttention(B, T, past, attentionMask);
        att.Skip = options?.Skip ?? Skip;
        var prefix = PrefixCache is { } pc && att.Skip is null && PrefixCache.Usable(cache, options) ? pc : null;
        var (resumed, start) = options?.Start is { } given ? (given.Stream.alias(), given.Depth)
            : prefix?.Resume(inputIds, attentionMask, order) ?? (null, 0);
        if (start < 0 || start > order.Count || resumed is not null && !resumed.shape.SequenceEqual([B, T, Config.HiddenSize]))
            throw new ArgumentException($"start after {start} of {order.Count} layers with a stream of shape "
                + $"[{string.Join(", ", resumed?.shape ?? [])}], expected [{B}, {T}, {Config.HiddenSize}]");
        var h = resumed ?? Embed(inputIds);
        for (int k = start; k < order.Count; k++)
        {
            options?.OnResidual?.Invoke(k, h);
            int i = order[k];
            if (Model.Layers[i] is { } layer) h = RunLayer(layer, h, att, cache, k);
            else h = RunStreamedLayer(i, h, att, cache, k);
            PrefixCache?.CountLayer(B);
            prefix?.Offer(inputIds, attentionMask, order, k + 1, NumLayers, h);
        }
        options?.OnResidual?.Invoke(order.Count, h);
        cache?.Advance(past + T);
        if (options?.LastPositionOnly == true) h = h.narrow(1, T - 1, 1);
        return (options?.HiddenOnly == true ? h : Head(h)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Sublayers every forward skips unless <see cref="ForwardOptions.Skip"/> names its own (also in
    /// <see cref="PrepareAttention"/>'s inputs, for layer-major passes); null = none. A sweep sets it while it evaluates a
    /// sublayer variant in memory.
    /// </summary>
    public SublayerMask? Skip { get; set; }

    /// <summary>
    /// Residual streams shared by layer subsets of this model, reused across forwards (the sweep attaches one while it
    /// evaluates variants); null = none. It also counts the layer forwards run while attached.
    /// </summary>
    public PrefixCache? PrefixCache { get; set; }

    /// <summary>
    /// Activation checkpointing per decoder layer for training (HF gradient_checkpointing_enable); null = off. Applies to
    /// resident layers in forward passes that record a graph and use no KV cache.
    /// </summary>
    public GradientCheckpointing? GradientCheckpointing { get; set; }

    Tensor RunLayer(DecoderLayer layer, Tensor h, AttentionInputs att, KvCache? cache, int slot)
    {
        if (GradientCheckpointing is { } settings && cache is null && is_grad_enabled())
        {
            // A frozen embedding's output needs no grad, but the checkpoint's output must (HF enable_input_require_grads).
            var input = h.requires_grad ? h : h.detach().requires_grad_(true);
            return LayerCheckpoint.Apply(layer, input, att, settings);
        }
        return layer.Forward(h, att, cache, slot);
    }

    /// <summary>
    /// An offloaded layer: read for this call and freed after it; in a training pass with checkpointing it is read again for
    /// the recompute in backward (<see cref="LayerCheckpoint"/>), so no layer's weights stay alive between the two.
    /// </summary>
    Tensor RunStreamedLayer(int i, Tensor h, AttentionInputs att, KvCache? cache, int slot)
    {
        if (GradientCheckpointing is { } settings && cache is null && is_grad_enabled())
        {
            var input = h.requires_grad ? h : h.detach().requires_grad_(true);
            return LayerCheckpoint.Apply(new StreamedLayer(this, i), input, att, settings);
        }
        Tensor y;
        using (var streamed = LoadLayer(i))
            y = streamed.Forward(h, att, cache, slot);
        ReleaseStreamedPages();
        return y;
    }

    /// <summary>Layer i of an offloaded model, built from the checkpoint per use.</summary>
    sealed class StreamedLayer(CausalLM model, int i) : IStreamedLayer
    {
        public DecoderLayer Acquire() => model.LoadLayer(i);

        public void Release(DecoderLayer layer)
        {
            layer.Dispose();
            model.ReleaseStreamedPages();
        }
    }

    /// <summary>
    /// Every stored weight with its HF name (resident models only), e.g. for writing a merged checkpoint: the module tree's
    /// state dict without a tied lm_head (HF save_pretrained drops tied weights too).
    /// </summary>
    public IEnumerable<(string name, Tensor tensor)> NamedTensors()
    {
        if (Offloaded) throw new InvalidOperationException("model is offloaded: use LoadLayer");
        foreach (var (name, t) in StateDict())
            if (!(TiedHead && name.StartsWith(Architecture.LmHeadName + ".", StringComparison.Ordinal)))
                yield return (name, t);
    }

    /// <summary>Linear modules of the decoder layers with HF names, e.g. "model.layers.3.self_attn.q_proj".</summary>
    public IEnumerable<(string name, Linear linear)> NamedLinears()
    {
        if (Offloaded) throw new InvalidOperationException("model is offloaded: use LoadLayer");
        foreach (var entry in Model.Layers.NamedModules<Linear>(Architecture.LayersName))
            yield return entry;
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        base.Dispose();
        _rope.Dispose();
        Checkpoint.Dispose();
    }
}
