using System.Text.Json.Nodes;

namespace LayerPrune.Efficiency;

/// <summary>The median and range of repeated measurements.</summary>
public sealed record Spread(double Median, double Min, double Max, IReadOnlyList<double> Samples)
{
    /// <summary>Median (mean of the middle two for an even count), minimum and maximum of <paramref name="samples"/>.</summary>
    public static Spread Of(IReadOnlyList<double> samples)
    {
        if (samples.Count == 0) throw new ArgumentException("no samples", nameof(samples));
        var sorted = samples.Order().ToArray();
        int mid = sorted.Length / 2;
        double median = sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
        return new Spread(median, sorted[0], sorted[^1], samples.ToArray());
    }

    /// <summary>(max − min) / median: 0.1 = the repeats spread over 10 % of the median.</summary>
    public double RelativeRange => Median > 0 ? (Max - Min) / Median : 0;

    /// <summary>{"median", "min", "max", "samples"}.</summary>
    public JsonObject ToJson() => new()
    {
        ["median"] = Median, ["min"] = Min, ["max"] = Max,
        ["samples"] = new JsonArray(Samples.Select(s => (JsonNode?)s).ToArray()),
    };

    /// <summary>Reads <see cref="ToJson"/>'s output.</summary>
    public static Spread FromJson(JsonObject o) =>
        Of(o["samples"]!.AsArray().Select(s => s!.GetValue<double>()).ToArray());
}

/// <summary>
/// Efficiency of one model or in-memory layer subset on this machine: prefill and decode speed (batch 1, KV cache),
/// weight and KV-cache bytes, resident memory. Speeds are tokens per second over <see cref="Repeats"/> timed rounds.
/// </summary>
/// <param name="Label">What was measured, e.g. "unpruned".</param>
/// <param name="Model">The checkpoint folder (full path).</param>
/// <param name="ModelLayers">Decoder layers of the loaded model.</param>
/// <param name="LayersRun">Original indices of the layers that ran (fewer than <paramref name="ModelLayers"/> for in-memory
/// pruning).</param>
/// <param name="Device">Compute device, e.g. "cpu".</param>
/// <param name="Dtype">Compute dtype, e.g. "Float32".</param>
/// <param name="PromptLength">Prefill tokens.</param>
/// <param name="DecodeTokens">Decode steps per round.</param>
/// <param name="Warmup">Untimed rounds.</param>
/// <param name="Repeats">Timed rounds.</param>
/// <param name="PrefillTokensPerSecond">PromptLength / prefill seconds, per round.</param>
/// <param name="DecodeTokensPerSecond">DecodeTokens / decode seconds, per round.</param>
/// <param name="WeightBytes">Bytes of the weights this run holds in memory (<see cref="EfficiencyMeter.WeightBytes"/>).</param>
/// <param name="KvCacheBytes">Bytes of the KV cache after PromptLength + DecodeTokens positions (measured from the cache tensors).</param>
/// <param name="Resident">Resident memory attributed to the model's load, when it was measured.</param>
/// <param name="Process">Process-wide counters at the end (VmHWM: the peak since start or the last reset, for everything the process
/// held).</param>
/// <param name="Machine">CPU model, SIMD flags, cores, libtorch threads.</param>
/// <param name="PrefillTokensPerCpuSecond">PromptLength / CPU seconds the process used in the prefill, per round: the cost
/// of the work itself, much less sensitive than wall-clock speed to other processes competing for the cores (on CPU).</param>
/// <param name="DecodeTokensPerCpuSecond">Same for decoding.</param>
public sealed record EfficiencyResult(
    string Label, string Model, int ModelLayers, int[] LayersRun, string Device, string Dtype,
    int PromptLength, int DecodeTokens, int Warmup, int Repeats,
    Spread PrefillTokensPerSecond, Spread DecodeTokensPerSecond,
    long WeightBytes, long KvCacheBytes, ResidentMemory? Resident, MemorySnapshot? Process, MachineInfo Machine,
    Spread? PrefillTokensPerCpuSecond = null, Spread? DecodeTokensPerCpuSecond = null)
{
    /// <summary>Median seconds per decoded token.</summary>
    public double DecodeSecondsPerToken => 1 / DecodeTokensPerSecond.Median;

    /// <summary>KV-cache bytes per cached position (layers without attention cache nothing).</summary>
    public long KvCacheBytesPerToken => KvCacheBytes / Math.Max(1, PromptLength + DecodeTokens);

    /// <summary>This result with the CPU-time rates in place of the wall-clock ones (for <see cref="EfficiencyComparison"/>).</summary>
    public EfficiencyResult OnCpuTime() => this with
    {
        PrefillTokensPerSecond = PrefillTokensPerCpuSecond ?? throw new InvalidOperationException($"{Label}: no CPU-time rates"),
        DecodeTokensPerSecond = DecodeTokensPerCpuSecond ?? throw new InvalidOperationException($"{Label}: no CPU-time rates"),
    };

    /// <summary>
    /// The numbers a sweep row carries for this variant against the unpruned <paramref name="reference"/> measured in the
    /// same run: decode/prefill tokens/s and speed-ups, weight and KV-cache bytes, the fraction of weight bytes saved.
    /// </summary>
    public IReadOnlyDictionary<string, double> RowFields(EfficiencyResult reference)
    {
        var c = EfficiencyComparison.Of(reference, this);
        var row = new Dictionary<string, double>
        {
            ["decode_tokens_per_second"] = DecodeTokensPerSecond.Median,
            ["prefill_tokens_per_second"] = PrefillTokensPerSecond.Median,
            ["decode_speedup"] = c.DecodeSpeedup,
            ["prefill_speedup"] = c.PrefillSpeedup,
            ["weight_bytes"] = WeightBytes,
            ["weight_saved_fraction"] = c.WeightSavedFraction,
            ["kv_cache_bytes"] = KvCacheBytes,
        };
        if (Resident is not null) row["resident_bytes"] = Resident.Bytes;
        return row;
    }

    /// <summary>Everything, snake_case (the `bench --json` output and what a sweep stores to resume without re-measuring).</summary>
    public JsonObject ToJson()
    {
        var o = new JsonObject
        {
            ["label"] = Label, ["model"] = Model, ["model_layers"] = ModelLayers,
            ["layers_run"] = new JsonArray(LayersRun.Select(i => (JsonNode?)i).ToArray()),
            ["device"] = Device, ["dtype"] = Dtype,
            ["prompt_length"] = PromptLength, ["decode_tokens"] = DecodeTokens, ["warmup"] = Warmup, ["repeats"] = Repeats,
            ["prefill_tokens_per_second"] = PrefillTokensPerSecond.ToJson(),
            ["decode_tokens_per_second"] = DecodeTokensPerSecond.ToJson(),
            ["prefill_tokens_per_cpu_second"] = PrefillTokensPerCpuSecond?.ToJson(),
            ["decode_tokens_per_cpu_second"] = DecodeTokensPerCpuSecond?.ToJson(),
            ["weight_bytes"] = WeightBytes, ["kv_cache_bytes"] = KvCacheBytes, ["kv_cache_bytes_per_token"] = KvCacheBytesPerToken,
            ["cpu_model"] = Machine.CpuModel,
            ["cpu_flags"] = new JsonArray(Machine.CpuFlags.Select(f => (JsonNode?)f).ToArray()),
            ["cores"] = Machine.Cores, ["torch_threads"] = Machine.TorchThreads,
        };
        if (Resident is not null)
        {
            o["resident"] = new JsonObject
            {
                ["bytes"] = Resident.Bytes, ["anonymous"] = Resident.Anonymous, ["file"] = Resident.File, ["peak"] = Resident.Peak,
            };
        }
        if (Process is not null)
        {
            o["process"] = new JsonObject
            {
                ["vm_rss"] = Process.Rss, ["vm_hwm"] = Process.Peak, ["rss_anon"] = Process.Anonymous, ["rss_file"] = Process.File,
            };
        }
        return o;
    }

    /// <summary>Reads <see cref="ToJson"/>'s output (e.g. a finished sweep variant on resume).</summary>
    public static EfficiencyResult FromJson(JsonObject o)
    {
        ResidentMemory? resident = o["resident"] is JsonObject r
            ? new ResidentMemory(Long(r, "bytes"), Long(r, "anonymous"), Long(r, "file"), r["peak"]?.GetValue<long>())
            : null;
        MemorySnapshot? process = o["process"] is JsonObject p
            ? new MemorySnapshot(Long(p, "vm_rss"), Long(p, "vm_hwm"), Long(p, "rss_anon"), Long(p, "rss_file"))
            : null;
        var machine = new MachineInfo(o["cpu_model"]?.GetValue<string>() ?? "",
            o["cpu_flags"]?.AsArray().Select(f => f!.GetValue<string>()).ToArray() ?? [],
            Int(o, "cores"), Int(o, "torch_threads"));
        return new EfficiencyResult(
            o["label"]!.GetValue<string>(), o["model"]!.GetValue<string>(), Int(o, "model_layers"),
            o["layers_run"]!.AsArray().Select(i => i!.GetValue<int>()).ToArray(),
            o["device"]!.GetValue<string>(), o["dtype"]!.GetValue<string>(),
            Int(o, "prompt_length"), Int(o, "decode_tokens"), Int(o, "warmup"), Int(o, "repeats"),
            Spread.FromJson(o["prefill_tokens_per_second"]!.AsObject()), Spread.FromJson(o["decode_tokens_per_second"]!.AsObject()),
            Long(o, "weight_bytes"), Long(o, "kv_cache_bytes"), resident, process, machine,
            o["prefill_tokens_per_cpu_second"] is JsonObject pc ? Spread.FromJson(pc) : null,
            o["decode_tokens_per_cpu_second"] is JsonObject dc ? Spread.FromJson(dc) : null);
    }

    static long Long(JsonObject o, string key) => o[key]?.GetValue<long>() ?? 0;
    static int Int(JsonObject o, string key) => o[key]?.GetValue<int>() ?? 0;
}

/// <summary>
/// A pruned variant against the unpruned reference measured in the same run.
/// The ideal decode speed-up from removing layers is L / L_kept for the decoder layers' share of the step time only:
/// the embedding, final norm, lm_head and per-step overhead stay. With <c>fixedCost</c> (the same model timed with zero
/// layers, i.e. everything but the decoder layers) that share is measured: t = t0 + t_layers, and
/// <see cref="LayerDecodeSpeedup"/> = (t_ref − t0) / (t_variant − t0) is what to compare with L / L_kept.
/// </summary>
/// <param name="DecodeSpeedup">Variant decode tokens/s / reference decode tokens/s (medians).</param>
/// <param name="PrefillSpeedup">Same for prefill.</param>
/// <param name="IdealLayerSpeedup">L / L_kept: layers run by the reference / by the variant.</param>
/// <param name="LayerDecodeSpeedup">Speed-up of the decoder layers' share of a decode step (needs the zero-layer timing).</param>
/// <param name="IdealDecodeSpeedup">Whole-step ideal t_ref / (t0 + (t_ref − t0) · L_kept / L) (needs the zero-layer timing).</param>
/// <param name="WeightBytesSaved">Reference weight bytes − variant weight bytes (= the removed layers' bytes).</param>
/// <param name="WeightSavedFraction">WeightBytesSaved / reference weight bytes.</param>
/// <param name="ResidentBytesSaved">Measured resident memory of the reference load − of the variant load, when both were
/// measured.</param>
public sealed record EfficiencyComparison(
    double DecodeSpeedup, double PrefillSpeedup, double IdealLayerSpeedup, double? LayerDecodeSpeedup, double? IdealDecodeSpeedup,
    long WeightBytesSaved, double WeightSavedFraction, long? ResidentBytesSaved)
{
    /// <summary>snake_case fields; the measured-share ones are null without a zero-layer run.</summary>
    public JsonObject ToJson() => new()
    {
        ["decode_speedup"] = DecodeSpeedup, ["prefill_speedup"] = PrefillSpeedup, ["ideal_layer_speedup"] = IdealLayerSpeedup,
        ["layer_decode_speedup"] = LayerDecodeSpeedup, ["ideal_decode_speedup"] = IdealDecodeSpeedup,
        ["weight_bytes_saved"] = WeightBytesSaved, ["weight_saved_fraction"] = WeightSavedFraction,
        ["resident_bytes_saved"] = ResidentBytesSaved,
    };

    /// <summary>
    /// Compares <paramref name="variant"/> with <paramref name="reference"/>; <paramref name="fixedCost"/> is a zero-layer run.
    /// <paramref name="cpuTime"/>: from tokens per CPU-second instead of wall-clock tokens/s (all three must have them).
    /// </summary>
    public static EfficiencyComparison Of(EfficiencyResult reference, EfficiencyResult variant, EfficiencyResult? fixedCost = null,
        bool cpuTime = false)
    {
        if (cpuTime)
        {
            reference = reference.OnCpuTime();
            variant = variant.OnCpuTime();
            fixedCost = fixedCost?.OnCpuTime();
        }
        double tRef = reference.DecodeSecondsPerToken, tVar = variant.DecodeSecondsPerToken;
        double idealLayers = (double)reference.LayersRun.Length / Math.Max(1, variant.LayersRun.Length);
        double? layerSpeedup = null, idealStep = null;
        if (fixedCost is not null)
        {
            double t0 = fixedCost.DecodeSecondsPerToken;
            layerSpeedup = (tRef - t0) / (tVar - t0);
            idealStep = tRef / (t0 + (tRef - t0) / idealLayers);
        }
        long saved = reference.WeightBytes - variant.WeightBytes;
        long? residentSaved = reference.Resident is not null && variant.Resident is not null
            ? reference.Resident.Bytes - variant.Resident.Bytes : null;
        return new EfficiencyComparison(
            variant.DecodeTokensPerSecond.Median / reference.DecodeTokensPerSecond.Median,
            variant.PrefillTokensPerSecond.Median / reference.PrefillTokensPerSecond.Median,
            idealLayers, layerSpeedup, idealStep, saved, (double)saved / reference.WeightBytes, residentSaved);
    }
}
