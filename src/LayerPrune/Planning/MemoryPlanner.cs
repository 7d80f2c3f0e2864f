using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Planning;

/// <summary>What a command does with the model, which decides the memory it needs besides the weights.</summary>
public enum Workload
{
    /// <summary>Forward passes that keep only residual states (similarity): no logits.</summary>
    Similarity,
    /// <summary>Forward passes with logits and log-softmax (loss, log-likelihood tasks, sweeps).</summary>
    Evaluate,
    /// <summary>KV-cache decoding of one batch.</summary>
    Generate,
    /// <summary>LoRA / QLoRA training: saved activations, adapter parameters, gradients and AdamW state.</summary>
    Heal,
}

/// <summary>The inputs of a memory estimate: the model, where and how it runs, and the batch.</summary>
public sealed record MemoryRequest
{
    /// <summary>The model's config (shapes and the storage dtype of its safetensors).</summary>
    public required ModelConfig Config { get; init; }
    /// <summary>The dtype the model computes in.</summary>
    public required ScalarType ComputeDtype { get; init; }
    /// <summary>What the command does.</summary>
    public required Workload Workload { get; init; }
    /// <summary>Sequences per forward pass.</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>Tokens per sequence (for Generate: prompt + new tokens).</summary>
    public int SeqLen { get; init; } = 256;
    /// <summary>Heal: the frozen base is NF4 (QLoRA) rather than the compute dtype.</summary>
    public bool Nf4Base { get; init; }
    /// <summary>Heal: LoRA rank.</summary>
    public int LoraRank { get; init; } = 8;
    /// <summary>
    /// Heal: activation checkpointing per decoder layer (only each layer's input is kept for backward). A streamed heal
    /// (offload) reads each layer twice per micro-batch (forward, recompute) and keeps one layer's weights resident.
    /// </summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>
    /// Heal: the frozen matmuls' outputs with in/out ≥ this are kept for the recompute (null: none;
    /// <see cref="MemoryPlanner.FrozenOutputBytes"/>).
    /// </summary>
    public double? ReplayFanRatio { get; init; }
    /// <summary>The safetensors dtype of the layer weights (e.g. "BF16"); null: config.json's torch_dtype.</summary>
    public string? StorageDtype { get; init; }
    /// <summary>Whether the command can stream layers from the mapping when the resident plan does not fit.</summary>
    public bool CanOffload { get; init; }
}

/// <summary>Estimated peak bytes, by kind. Weights that are views of the memory-mapped files are page cache, not heap.</summary>
/// <param name="Weights">Weights copied into process memory (converted dtype, NF4 codes, or the resident layer when offloading).</param>
/// <param name="MappedWeights">Weights used in place from the file mapping (reclaimable page cache).</param>
/// <param name="Activations">Peak activations, attention scores and logits of one batch.</param>
/// <param name="Training">Adapter parameters, gradients and AdamW moments.</param>
/// <param name="Runtime">The .NET runtime and libtorch themselves.</param>
public sealed record MemoryEstimate(long Weights, long MappedWeights, long Activations, long Training, long Runtime)
{
    /// <summary>Bytes that must fit in available memory (everything but the mapped weights).</summary>
    public long Required => Weights + Activations + Training + Runtime;
}

/// <summary>The decision: run resident or streamed, with the numbers it was based on.</summary>
/// <param name="Offload">Stream layers from the mapping (one resident at a time).</param>
/// <param name="Estimate">The estimate of the chosen mode.</param>
/// <param name="AvailableBytes">Memory available to this process when planned.</param>
/// <param name="Notice">One line to tell the user when the plan differs from what they asked (streaming chosen).</param>
public sealed record MemoryPlan(bool Offload, MemoryEstimate Estimate, long AvailableBytes, string? Notice);

/// <summary>The work cannot fit in memory in any mode the command supports; says what would make it fit.</summary>
public sealed class MemoryPlanException(string message, long neededBytes, long availableBytes, string? fixParameter)
    : Exception(message)
{
    /// <summary>Bytes the cheapest supported mode needs.</summary>
    public long NeededBytes { get; } = neededBytes;
    /// <summary>Bytes available when planned.</summary>
    public long AvailableBytes { get; } = availableBytes;
    /// <summary>The parameter whose change makes it fit (e.g. "dtype", "offload", "batchSize"), when one would.</summary>
    public string? FixParameter { get; } = fixParameter;
}

/// <summary>
/// Estimates a command's peak memory before the model is loaded and chooses resident or streamed execution, so a
/// model too big for the machine is streamed or refused up front with the numbers, never killed by the OOM killer.
/// </summary>
public static class MemoryPlanner
{
    /// <summary>Fraction of available memory a plan may use (the rest absorbs allocator slack and estimate error).</summary>
    public const double Headroom = 0.85;

    /// <summary>The .NET runtime + libtorch + tokenizer, measured as the RSS of <c>layerprune info</c> (~0.4 GB) rounded up.</summary>
    public const long RuntimeBytes = 600L << 20;

    /// <summary>
    /// Streamed evaluation: the residual streams of the sequences that share one read of each layer (a group of batches)
    /// stay below this many bytes.
    /// </summary>
    public const long StreamGroupBytes = 1L << 30;

    /// <summary>
    /// Memory available to this process: MemAvailable from /proc/meminfo, lowered to the cgroup v2 limit minus usage
    /// when a limit is set (containers, CI runners). long.MaxValue when neither can be read (non-Linux).
    /// </summary>
    public static long AvailableBytes()
    {
        long available = long.MaxValue;
        try
        {
            if (File.Exists("/proc/meminfo"))
                foreach (var line in File.ReadLines("/proc/meminfo"))
                    if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
                        available = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
            string max = "/sys/fs/cgroup/memory.max", current = "/sys/fs/cgroup/memory.current";
            if (File.Exists(max) && File.Exists(current) && long.TryParse(File.ReadAllText(max).Trim(), out long limit))
                available = Math.Min(available, limit - long.Parse(File.ReadAllText(current).Trim()));
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            // Unknown: plan as if memory were plentiful (the estimate is still reported).
        }
        return available;
    }

    /// <summary>The estimate for running resident (<paramref name="offload"/> false) or streamed.</summary>
    public static MemoryEstimate Estimate(MemoryRequest r, bool offload)
    {
        var c = r.Config;
        long elt = ElementSize(r.ComputeDtype);
        long layerParams = LayerLinearParams(c);
        long embedParams = (long)c.VocabSize * c.HiddenSize;
        long headParams = c.TieWordEmbeddings ? 0 : embedParams;
        bool mapped = StorageMatches(r.StorageDtype ?? c.StorageDtype, r.ComputeDtype);
        long B = Math.Max(1, r.BatchSize), T = Math.Max(1, r.SeqLen), H = c.HiddenSize, I = c.IntermediateSize;

        long weights, mappedWeights;
        if (r.Workload == Workload.Heal && r.Nf4Base)
        {
            // NF4: 4 bits per weight + an fp32 absmax per 64 (bitsandbytes layout); embeddings and head stay as they are.
            // One layer in the compute dtype on top: the layer being read and quantized at load, later the dequantized
            // weights of the layer being recomputed; and the dequantize scratch buffers of QuantizedMatmul (one per calling
            // thread, the size of the largest projection: counted for the forward's thread and the backward's).
            long nf4Codes = Nf4BaseBytes(c);
            long scratch = 2 * LargestLinearParams(c) * elt;
            weights = nf4Codes + layerParams * elt + scratch + (mapped ? 0 : (embedParams + headParams) * elt);
            mappedWeights = mapped ? (embedParams + headParams) * elt : 0;
        }
        else
        {
            long layersResident = offload ? layerParams : c.NumLayers * layerParams;
            long all = (layersResident + embedParams + headParams) * elt;
            weights = mapped ? (offload ? layerParams * elt : 0) : all;
            mappedWeights = mapped ? (c.NumLayers * layerParams + embedParams + headParams) * elt : 0;
        }

        // One layer's transient activations: q/k/v/o and MLP intermediates, plus the [B, heads, T, T] scores when
        // SDPA falls back to the math path (fp32 softmax).
        long layerActivations = B * T * (6 * H + 3 * I) * elt + B * c.NumHeads * T * T * 4;
        long residual = B * T * H * elt * 2;
        long logits = B * T * c.VocabSize * 4 * 2; // fp32 logits + log-softmax
        // Evaluation applies lm_head and log-softmax to chunks of positions: logits in the compute dtype, fp32 and log-softmax.
        long chunkLogits = Math.Min(B * T, Evaluation.TokenLogProbs.RowsPerChunk(c.VocabSize)) * c.VocabSize * (elt + 4 + 4);
        long streamGroup = offload ? StreamGroupBytes : 0;
        long activations = r.Workload switch
        {
            Workload.Similarity => residual + layerActivations + B * (c.NumLayers + 1L) * H * 4,
            Workload.Evaluate => residual + layerActivations + chunkLogits + streamGroup,
            Workload.Generate => KvCacheBytes(c, B, T, elt) + layerActivations / T + B * c.VocabSize * 4 * 2,
            // Backward keeps every layer's activations, or with checkpointing only every layer's input plus the one layer
            // being recomputed; and the logits' softmax and gradient.
            Workload.Heal => (r.GradientCheckpointing ? c.NumLayers * (residual / 2) + layerActivations : c.NumLayers * layerActivations)
                + residual + logits * 3 / 2 + (r.ReplayFanRatio is double ratio ? FrozenOutputBytes(c, B, T, r.ComputeDtype, ratio) : 0),
            _ => throw new ArgumentOutOfRangeException(nameof(r)),
        };
        long training = 0;
        if (r.Workload == Workload.Heal)
        {
            // LoRA A [r, in] and B [out, r] on each linear, fp32: parameter, gradient, AdamW m and v.
            long loraParams = c.NumLayers * (long)r.LoraRank * LayerLinearInOutSum(c);
            training = loraParams * 4 * 4;
        }
        return new MemoryEstimate(weights, mappedWeights, activations, training, RuntimeBytes);
    }

    /// <summary>
    /// Resident when it fits in <see cref="Headroom"/> of <paramref name="availableBytes"/> (default: measured now);
    /// otherwise streamed when the command can; otherwise throws <see cref="MemoryPlanException"/> with the numbers.
    /// </summary>
    public static MemoryPlan Plan(MemoryRequest r, bool forceOffload = false, long? availableBytes = null)
    {
        long available = availableBytes ?? AvailableBytes();
        long budget = available == long.MaxValue ? long.MaxValue : (long)(available * Headroom);
        var resident = Estimate(r, offload: false);
        if (forceOffload && r.CanOffload)
            return new MemoryPlan(true, Estimate(r, offload: true), available, null);
        if (resident.Required <= budget)
            return new MemoryPlan(false, resident, available, null);
        if (r.CanOffload)
        {
            var streamed = Estimate(r, offload: true);
            if (streamed.Required <= budget)
            {
                string notice = $"the model needs {Gb(resident.Required)} resident but {Gb(available)} is available: "
                    + "streaming one layer at a time from the checkpoint (slower, same results)";
                return new MemoryPlan(true, streamed, available, notice);
            }
            resident = streamed;
        }
        string? fix = FixParameter(r, budget);
        string hint = fix switch
        {
            "dtype" => "a bf16 compute dtype would fit",
            "batchSize" => "a smaller batch would fit",
            "offload" => "a streamed heal of the unquantized base would fit",
            _ => "no setting of this command makes it fit on this machine",
        };
        throw new MemoryPlanException(
            $"needs about {Gb(resident.Required)} of memory but {Gb(available)} is available ({hint})",
            resident.Required, available, fix);
    }

    /// <summary>Decimal gigabytes with two digits, e.g. "27.12 GB".</summary>
    public static string Gb(long bytes) => bytes == long.MaxValue ? "unlimited" : $"{bytes / 1e9:F2} GB";

    static string? FixParameter(MemoryRequest r, long budget)
    {
        if (r.ComputeDtype == ScalarType.Float32)
        {
            var bf16 = r with { ComputeDtype = ScalarType.BFloat16 };
            if (Estimate(bf16, r.CanOffload).Required <= budget)
                return "dtype";
        }
        if (r.BatchSize > 1 && Estimate(r with { BatchSize = 1 }, r.CanOffload).Required <= budget)
            return "batchSize";
        // A heal that cannot stream (NF4 base, or no checkpointing) may fit streamed: unquantized base, checkpointing on.
        var streamedHeal = r with { Nf4Base = false, GradientCheckpointing = true, CanOffload = true };
        if (r.Workload == Workload.Heal && !r.CanOffload && Estimate(streamedHeal, offload: true).Required <= budget)
            return "offload";
        return null;
    }

    static long KvCacheBytes(ModelConfig c, long b, long t, long elt) => 2L * c.NumLayers * b * c.NumKvHeads * c.HeadDim * t * elt;

    /// <summary>The NF4 layer weights: 4 bits per weight and an fp32 absmax per block of 64 (bitsandbytes' layout).</summary>
    public static long Nf4BaseBytes(ModelConfig c)
    {
        long layerParams = LayerLinearParams(c);
        return c.NumLayers * (layerParams / 2 + layerParams / 64 * 4);
    }

    /// <summary>One layer's linear projections (HF names), with their in and out features.</summary>
    public static IReadOnlyList<(string Name, long In, long Out)> LayerProjections(ModelConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim, i = c.IntermediateSize;
        return c.Family == ArchitectureFamily.Phi
            ? [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("dense", q, h), ("fc1", h, i), ("fc2", i, h)]
            : [("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h), ("gate_proj", h, i), ("up_proj", h, i),
               ("down_proj", i, h)];
    }

    /// <summary>
    /// What a heal with <see cref="Modeling.GradientCheckpointing.ReplayFanRatio"/> keeps between the forward and backward
    /// passes: the outputs of every layer's projections with in/out ≥ <paramref name="ratio"/> (B·T·out values each, in the
    /// compute dtype).
    /// </summary>
    public static long FrozenOutputBytes(ModelConfig c, long batch, long seqLen, ScalarType dtype, double ratio)
    {
        long outputs = ReplayedProjections(c, ratio).Sum(p => p.Out);
        return c.NumLayers * batch * seqLen * outputs * ElementSize(dtype);
    }

    /// <summary>
    /// The projections a replay at <paramref name="ratio"/> keeps (<see cref="Modeling.GradientCheckpointing.Replays"/>).
    /// </summary>
    public static IEnumerable<(string Name, long In, long Out)> ReplayedProjections(ModelConfig c, double ratio) =>
        LayerProjections(c).Where(p => Modeling.GradientCheckpointing.Replays(ratio, p.In, p.Out));

    /// <summary>
    /// The replay ratio a heal takes by default: the projections in order of in/out (the recompute work saved per value
    /// kept), as many groups of equal ratio as keep <see cref="FrozenOutputBytes"/> within the NF4 base's own bytes
    /// (<see cref="Nf4BaseBytes"/>); null when not even the first group fits.
    /// </summary>
    public static double? AutoReplayFanRatio(ModelConfig c, long batch, long seqLen, ScalarType dtype)
    {
        double? chosen = null;
        foreach (double ratio in LayerProjections(c).Select(p => (double)p.In / p.Out).Distinct().OrderDescending())
        {
            if (FrozenOutputBytes(c, batch, seqLen, dtype, ratio) > Nf4BaseBytes(c)) break;
            chosen = ratio;
        }
        return chosen;
    }

    /// <summary>Weights of one decoder layer's linear projections (norms and biases are negligible).</summary>
    static long LayerLinearParams(ModelConfig c) => LayerProjections(c).Sum(p => p.In * p.Out);

    /// <summary>Weights of one layer's largest linear projection (q/o or an MLP matrix).</summary>
    static long LargestLinearParams(ModelConfig c) => LayerProjections(c).Max(p => p.In * p.Out);

    /// <summary>Σ (in + out) over one layer's linears: a rank-r LoRA adds r·(in + out) parameters to each.</summary>
    static long LayerLinearInOutSum(ModelConfig c) => LayerProjections(c).Sum(p => p.In + p.Out);

    /// <summary>Whether stored weights are used in place: the safetensors dtype (BF16) or config name (bfloat16) matches.</summary>
    static bool StorageMatches(string? storage, ScalarType compute) => (storage?.ToLowerInvariant(), compute) switch
    {
        ("bf16" or "bfloat16", ScalarType.BFloat16) => true,
        ("f16" or "float16", ScalarType.Float16) => true,
        ("f32" or "float32", ScalarType.Float32) => true,
        _ => false,
    };

    static long ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float32 => 4,
        ScalarType.BFloat16 or ScalarType.Float16 => 2,
        ScalarType.Float64 => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, "not a floating-point compute dtype"),
    };
}
