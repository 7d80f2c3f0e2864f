using System.Diagnostics;
using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Efficiency;

/// <summary>How an efficiency measurement runs: a fixed prompt, then greedy decoding with the KV cache at batch 1.</summary>
public sealed record EfficiencyOptions
{
    /// <summary>Prompt tokens of the prefill (one forward pass over [1, PromptLength]).</summary>
    public int PromptLength { get; init; } = 128;
    /// <summary>Tokens decoded one at a time after the prefill (each step: [1, 1] in, KV cache grows by one).</summary>
    public int DecodeTokens { get; init; } = 32;
    /// <summary>Untimed rounds before the timed ones (allocator, caches and lazily mapped pages warm up).</summary>
    public int Warmup { get; init; } = 1;
    /// <summary>Timed rounds; medians and ranges are taken over them.</summary>
    public int Repeats { get; init; } = 5;
    /// <summary>Seed of the prompt's token ids (uniform over the vocabulary; content does not change the cost).</summary>
    public int Seed { get; init; }

    /// <summary>Throws a usage error naming the parameter when a value is out of range.</summary>
    public void Validate()
    {
        if (PromptLength < 1) throw LayerPruneException.Invalid(nameof(PromptLength), PromptLength, "must be at least 1");
        if (DecodeTokens < 1) throw LayerPruneException.Invalid(nameof(DecodeTokens), DecodeTokens, "must be at least 1");
        if (Warmup < 0) throw LayerPruneException.Invalid(nameof(Warmup), Warmup, "must be 0 or more");
        if (Repeats < 1) throw LayerPruneException.Invalid(nameof(Repeats), Repeats, "must be at least 1");
    }
}

/// <summary>One thing to time: a resident model and the original layers it runs (null = all; [] = none, i.e. embedding and head
/// only).</summary>
/// <param name="Label">Name in the output, e.g. "unpruned" or "layers 8-15 removed".</param>
/// <param name="Model">The model (resident, not offloaded).</param>
/// <param name="Layers">Original layer indices run in order (in-memory pruning, like <see cref="ForwardOptions.Layers"/>).</param>
/// <param name="Resident">Resident memory measured when the model was loaded (<see cref="EfficiencyMeter.LoadMeasured"/>), if it
/// was.</param>
/// <param name="Skip">Sublayers skipped in memory (<see cref="ForwardOptions.Skip"/>); null = none.</param>
public sealed record EfficiencyTarget(string Label, CausalLM Model, IReadOnlyList<int>? Layers = null, ResidentMemory? Resident = null,
    SublayerMask? Skip = null);

/// <summary>
/// Process memory that appeared while a model was loaded and each of its weights read once, in bytes:
/// resident anonymous pages (converted weights, allocator) plus resident file pages (memory-mapped weights used in place),
/// after minus before. Resident shared memory (RssShmem: on .NET the double-mapped JIT code, which grows when methods are
/// recompiled in the background) is left out; it is in VmRSS. <paramref name="Peak"/> is VmHWM during the load minus VmRSS before
/// (null where the peak counter could not be reset).
/// </summary>
public sealed record ResidentMemory(long Bytes, long Anonymous, long File, long? Peak);

/// <summary>Measures prefill and decode speed, weight and KV-cache bytes and resident memory of models or in-memory layer
/// subsets.</summary>
public static class EfficiencyMeter
{
    /// <summary>
    /// Loads a checkpoint and attributes to it the process memory that appears while it loads and every weight is read once
    /// (so that memory-mapped weights used in place count as resident). No forward pass runs inside the measurement:
    /// activations and KV caches are the run's, not the model's (<see cref="EfficiencyResult.KvCacheBytes"/>).
    /// The caller owns the returned model. The numbers are differences of process-wide counters: other threads allocating
    /// at the same time would be counted too.
    /// </summary>
    public static (CausalLM model, ResidentMemory memory) LoadMeasured(string dir, Device device, ScalarType dtype, EfficiencyOptions o)
    {
        o.Validate();
        ProcessMemory.ReturnFreedMemoryPromptly();
        WarmUpLoad(dir, device, dtype);
        ProcessMemory.Settle();
        var before = ProcessMemory.Read();
        bool peakReset = ProcessMemory.ResetPeak();
        var model = CausalLM.Load(dir, device, dtype);
        try
        {
            Touch(model);
            ProcessMemory.Settle();
            var after = ProcessMemory.Read();
            var memory = before is null || after is null
                ? new ResidentMemory(0, 0, 0, null)
                : new ResidentMemory(after.Anonymous + after.File - before.Anonymous - before.File, after.Anonymous - before.Anonymous,
                    after.File - before.File,
                    peakReset ? after.Peak - before.Rss : null);
            return (model, memory);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Times every target: <see cref="EfficiencyOptions.Warmup"/> untimed rounds, then <see cref="EfficiencyOptions.Repeats"/>
    /// timed rounds. A round runs each target once (one prefill + decode), starting with a different target each round, so
    /// that load on the machine drifting over time affects all targets alike (their ratios are what matters).
    /// </summary>
    public static IReadOnlyList<EfficiencyResult> Measure(IReadOnlyList<EfficiencyTarget> targets, EfficiencyOptions o)
    {
        o.Validate();
        if (targets.Count == 0) throw new ArgumentException("no targets to measure", nameof(targets));
        var layers = targets.Select(t => CheckTarget(t)).ToArray();
        var prompts = targets.Select(t => Prompt(t.Model, o)).ToArray();
        var prefill = targets.Select(_ => new List<double>()).ToArray();
        var decode = targets.Select(_ => new List<double>()).ToArray();
        var prefillCpu = targets.Select(_ => new List<double>()).ToArray();
        var decodeCpu = targets.Select(_ => new List<double>()).ToArray();
        var kvBytes = new long[targets.Count];
        for (int round = 0; round < o.Warmup + o.Repeats; round++)
        {
            for (int j = 0; j < targets.Count; j++)
            {
                int t = (round + j) % targets.Count;
                var time = TimeOnce(targets[t].Model, layers[t], prompts[t], o.DecodeTokens, out kvBytes[t], targets[t].Skip);
                if (round < o.Warmup) continue;
                prefill[t].Add(o.PromptLength / time.Prefill);
                decode[t].Add(o.DecodeTokens / time.Decode);
                prefillCpu[t].Add(o.PromptLength / time.PrefillCpu);
                decodeCpu[t].Add(o.DecodeTokens / time.DecodeCpu);
            }
        }
        var machine = MachineInfo.Current();
        var process = ProcessMemory.Read();
        return targets.Select((t, i) => new EfficiencyResult(
            t.Label, Path.GetFullPath(t.Model.Checkpoint.Directory), t.Model.NumLayers, layers[i].ToArray(),
            t.Model.Device.ToString(), t.Model.Dtype.ToString(), o.PromptLength, o.DecodeTokens, o.Warmup, o.Repeats,
            Spread.Of(prefill[i]), Spread.Of(decode[i]), WeightBytes(t.Model, layers[i]), kvBytes[i],
            t.Resident, process, machine, Spread.Of(prefillCpu[i]), Spread.Of(decodeCpu[i]))).ToList();
    }

    /// <summary>
    /// Bytes of the weights a run of <paramref name="layers"/> holds in memory, in the compute dtype: embedding, the
    /// given decoder layers, final norm and lm_head (a tied lm_head shares the embedding and is counted once).
    /// For a layer subset this equals the weights of the pruned checkpoint with those layers, loaded the same way.
    /// </summary>
    public static long WeightBytes(CausalLM model, IReadOnlyList<int>? layers = null)
    {
        if (model.Offloaded)
            throw new LayerPruneException(
                $"{model.Checkpoint.Directory}: efficiency needs a resident model (an offloaded one streams every layer from disk at " +
                "each step)");
        var kept = (layers ?? Enumerable.Range(0, model.NumLayers)).ToHashSet();
        return model.NamedTensors()
            .Where(nt => LayerOf(nt.name) is not int i || kept.Contains(i))
            .Sum(nt => nt.tensor.NumberOfElements * nt.tensor.ElementSize);
    }

    /// <summary>The decoder layer a tensor name belongs to ("model.layers.7.mlp.up_proj.weight" → 7), or null.</summary>
    public static int? LayerOf(string name)
    {
        const string prefix = "model.layers.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal)) return null;
        int end = name.IndexOf('.', prefix.Length);
        return end > prefix.Length && int.TryParse(name.AsSpan(prefix.Length, end - prefix.Length), out int i) ? i : null;
    }

    static int[] CheckTarget(EfficiencyTarget t)
    {
        if (t.Model.Offloaded)
            throw new LayerPruneException(
                $"{t.Model.Checkpoint.Directory}: efficiency needs a resident model (an offloaded one streams every layer from disk at " +
                "each step)");
        var layers = (t.Layers ?? Enumerable.Range(0, t.Model.NumLayers)).ToArray();
        foreach (int i in layers)
            if (i < 0 || i >= t.Model.NumLayers)
                throw LayerPruneException.Usage($"{t.Label}: layer {i} is out of range (the model has layers 0-{t.Model.NumLayers - 1})");
        return layers;
    }

    /// <summary>
    /// Loads the model once, reads every weight and frees it again, so that what any first load brings into the process
    /// for good (libtorch and .NET code pages, JIT-compiled methods, thread pools) is resident before the measured load.
    /// No forward pass: its activations would leave freed heap blocks that the measured load reuses without growing RSS.
    /// </summary>
    static void WarmUpLoad(string dir, Device device, ScalarType dtype)
    {
        using var model = CausalLM.Load(dir, device, dtype);
        Touch(model);
    }

    /// <summary>Reads every weight once (a sum per tensor), so that weights used in place from the file mapping are resident.</summary>
    static void Touch(CausalLM model)
    {
        using var _ = no_grad();
        foreach (var (_, t) in model.NamedTensors())
            t.sum().Dispose(); // CPU: computed before it returns
    }

    /// <summary>The prompt's token ids: seeded, uniform over the vocabulary.</summary>
    static long[] Prompt(CausalLM model, EfficiencyOptions o)
    {
        var random = new Random(o.Seed);
        return Enumerable.Range(0, o.PromptLength).Select(_ => (long)random.Next(model.Config.VocabSize)).ToArray();
    }

    /// <summary>
    /// One prefill over the prompt and <paramref name="decodeTokens"/> greedy steps with the KV cache (as TextGenerator),
    /// each ending in the argmax read back to the host (a synchronisation point on CUDA). Returns the wall-clock seconds of
    /// each phase and the CPU seconds the process used in it.
    /// </summary>
    static PhaseTimes TimeOnce(CausalLM model, IReadOnlyList<int> layers, long[] prompt, int decodeTokens, out long kvBytes,
        SublayerMask? skip)
    {
        var process = System.Diagnostics.Process.GetCurrentProcess();
        using var _ = no_grad();
        // Zero layers (embedding + head only): no cache slots, nothing to cache.
        using var cache = layers.Count > 0 ? new KvCache(layers.Count) : null;
        var forward = new ForwardOptions { Layers = layers, LastPositionOnly = true, Skip = skip };
        double cpu0 = Cpu(process);
        var sw = Stopwatch.StartNew();
        long next = Step(model, prompt, cache, forward);
        double prefill = sw.Elapsed.TotalSeconds;
        double cpu1 = Cpu(process);
        sw.Restart();
        for (int step = 0; step < decodeTokens; step++) next = Step(model, [next], cache, forward);
        double decode = sw.Elapsed.TotalSeconds;
        double cpu2 = Cpu(process);
        kvBytes = cache?.Bytes ?? 0;
        return new PhaseTimes(prefill, decode, cpu1 - cpu0, cpu2 - cpu1);
    }

    /// <summary>Seconds of wall clock and of process CPU time of one round's two phases.</summary>
    readonly record struct PhaseTimes(double Prefill, double Decode, double PrefillCpu, double DecodeCpu);

    static double Cpu(System.Diagnostics.Process process)
    {
        process.Refresh();
        return process.TotalProcessorTime.TotalSeconds;
    }

    static long Step(CausalLM model, long[] ids, KvCache? cache, ForwardOptions forward)
    {
        using var scope = NewDisposeScope();
        var input = tensor(ids, [1, ids.Length]);
        var logits = model.Forward(input, cache: cache, options: forward)[0, -1].to(ScalarType.Float32).cpu(); // [V]
        return logits.argmax().item<long>();
    }
}
