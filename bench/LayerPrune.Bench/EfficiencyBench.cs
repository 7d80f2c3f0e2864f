using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Issue 19: what removing half the layers buys, measured in one run. Four targets are timed round-robin:
/// the unpruned model, the same model skipping the deepest half in memory, that variant written as a checkpoint,
/// and the model with zero layers (embedding + final norm + lm_head + per-step overhead: the part pruning cannot remove).
/// </summary>
public static class EfficiencyBench
{
    /// <summary>Prints the targets, the speed-ups against the ideal and the memory saved against the removed layers' bytes.</summary>
    public static void Run(TextWriter o, string modelDir, string[] args)
    {
        var (device, dtype) = ComputeTarget.Resolve("cpu", Arg(args, "--dtype") ?? "fp32");
        var opts = new EfficiencyOptions
        {
            PromptLength = int.Parse(Arg(args, "--prompt-length") ?? "128", CultureInfo.InvariantCulture),
            DecodeTokens = int.Parse(Arg(args, "--decode-tokens") ?? "32", CultureInfo.InvariantCulture),
            Repeats = int.Parse(Arg(args, "--repeats") ?? "7", CultureInfo.InvariantCulture),
            Warmup = 1,
        };
        if (Arg(args, "--threads") is { } threads) set_num_threads(int.Parse(threads, CultureInfo.InvariantCulture));
        string tmp = Path.Combine(Path.GetTempPath(), $"layerprune-efficiency-{Guid.NewGuid():N}");
        try
        {
            var (full, fullMemory) = EfficiencyMeter.LoadMeasured(modelDir, device, dtype, opts);
            using var _full = full;
            int L = full.NumLayers;
            var plan = PrunePlan.Deepest(L / 2, L);
            CheckpointPruner.Write(full.Checkpoint, plan, tmp);
            var (pruned, prunedMemory) = EfficiencyMeter.LoadMeasured(tmp, device, dtype, opts);
            using var _pruned = pruned;
            string removed = $"{plan.Removed.First()}-{plan.Removed.Last()}";
            if (args.Contains("--pair"))
            {
                // Only the two 8-layer variants, checkpoint first: is the in-memory skip slower, independent of target order?
                var pair = EfficiencyMeter.Measure([
                    new EfficiencyTarget("checkpoint", pruned), new EfficiencyTarget("skip in memory", full, plan.Kept)], opts);
                foreach (var x in pair) o.WriteLine($"  {x.Label,-28} decode {Rate(x.DecodeTokensPerSecond)}, prefill {Rate(x.PrefillTokensPerSecond)}");
                o.WriteLine($"  checkpoint / skip decode {pair[0].DecodeTokensPerSecond.Median / pair[1].DecodeTokensPerSecond.Median:F3}");
                return;
            }
            var results = EfficiencyMeter.Measure([
                new EfficiencyTarget("unpruned", full, null, fullMemory),
                new EfficiencyTarget($"skip {removed} in memory", full, plan.Kept),
                new EfficiencyTarget($"checkpoint without {removed}", pruned, null, prunedMemory),
                new EfficiencyTarget("zero layers", full, []),
            ], opts);
            Print(o, modelDir, plan, results, FlopIdeal(full, plan.Kept, opts));
            if (Arg(args, "--json-out") is { } jsonPath)
                File.WriteAllText(jsonPath, new JsonArray(results.Select(r => (JsonNode?)r.ToJson()).ToArray()).ToJsonString(new() { WriteIndented = true }));
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        }
    }

    static void Print(TextWriter o, string modelDir, PrunePlan plan, IReadOnlyList<EfficiencyResult> r, double flopIdeal)
    {
        var m = r[0].Machine;
        o.WriteLine($"efficiency: {modelDir}, {r[0].Device} {r[0].Dtype}, prompt {r[0].PromptLength}, decode {r[0].DecodeTokens} tokens at batch 1, "
            + $"{r[0].Repeats} rounds (+{r[0].Warmup} warm-up), targets interleaved");
        o.WriteLine($"            CPU {m.CpuModel}, flags {string.Join(" ", m.CpuFlags)}, {m.Cores} cores, {m.TorchThreads} libtorch threads");
        foreach (var x in r)
        {
            string resident = x.Resident is { } res ? $", resident {MiB(res.Bytes)} (anon {MiB(res.Anonymous)}, file {MiB(res.File)}, load peak {MiB(res.Peak ?? 0)})" : "";
            o.WriteLine($"  {x.Label,-28} {x.LayersRun.Length,3} layers: prefill {Rate(x.PrefillTokensPerSecond)}, decode {Rate(x.DecodeTokensPerSecond)}; "
                + $"weights {MiB(x.WeightBytes)}, KV cache {MiB(x.KvCacheBytes)}{resident}");
        }
        Compare(o, plan, r, flopIdeal, cpuTime: false);
        o.WriteLine("  the same, from tokens per CPU-second of the process (the work itself; robust to other processes competing for the cores):");
        Compare(o, plan, r, flopIdeal, cpuTime: true);
    }

    static void Compare(TextWriter o, PrunePlan plan, IReadOnlyList<EfficiencyResult> all, double flopIdeal, bool cpuTime)
    {
        var r = cpuTime ? all.Select(x => x.OnCpuTime()).ToList() : all.ToList();
        foreach (var x in cpuTime ? r : [])
            o.WriteLine($"  {x.Label,-28} {x.LayersRun.Length,3} layers: prefill {Rate(x.PrefillTokensPerSecond)}, decode {Rate(x.DecodeTokensPerSecond)} per CPU-second");
        var (unpruned, skip, ckpt, zero) = (r[0], r[1], r[2], r[3]);
        var c = EfficiencyComparison.Of(unpruned, skip, zero);
        double ratioLayers = c.LayerDecodeSpeedup!.Value / c.IdealLayerSpeedup;
        o.WriteLine($"  zero-layer share of an unpruned decode step: {zero.DecodeSecondsPerToken / unpruned.DecodeSecondsPerToken:P1} "
            + $"({zero.DecodeSecondsPerToken * 1e3:F2} of {unpruned.DecodeSecondsPerToken * 1e3:F2} ms)");
        o.WriteLine($"  decode speed-up, {plan.Removed.Length} of {plan.OriginalLayers} layers removed: {c.DecodeSpeedup:F3}× whole step "
            + $"(ideal {c.IdealDecodeSpeedup:F3}× from the measured layer share, {flopIdeal:F3}× from FLOPs); prefill {c.PrefillSpeedup:F3}×");
        o.WriteLine($"  decoder layers' share of the step (step − zero-layer step): {c.LayerDecodeSpeedup:F3}× vs ideal L/L_kept = {c.IdealLayerSpeedup:F3}: "
            + $"{ratioLayers:F3} of ideal — {(Math.Abs(ratioLayers - 1) <= 0.15 ? "PASS" : "FAIL")} (within 15 %)");
        double stepRatio = c.DecodeSpeedup / c.IdealDecodeSpeedup!.Value;
        o.WriteLine($"  whole step vs its ideal: {stepRatio:F3} — {(Math.Abs(stepRatio - 1) <= 0.15 ? "PASS" : "FAIL")} (within 15 %)");
        double same = ckpt.DecodeTokensPerSecond.Median / skip.DecodeTokensPerSecond.Median;
        double noise = Math.Max(ckpt.DecodeTokensPerSecond.RelativeRange, skip.DecodeTokensPerSecond.RelativeRange);
        o.WriteLine($"  checkpoint / in-memory skip decode: {same:F3} (repeat range up to {noise:P0}); prefill {ckpt.PrefillTokensPerSecond.Median / skip.PrefillTokensPerSecond.Median:F3}");
        if (cpuTime) return;
        long removedBytes = c.WeightBytesSaved;
        o.WriteLine($"  removed layers' weight bytes {MiB(removedBytes)} = checkpoint weights saved {MiB(unpruned.WeightBytes - ckpt.WeightBytes)}");
        if (unpruned.Resident is { } a && ckpt.Resident is { } b)
        {
            double ratio = (double)(a.Bytes - b.Bytes) / removedBytes;
            o.WriteLine($"  resident memory saved (unpruned load − checkpoint load): {MiB(a.Bytes - b.Bytes)} = {ratio:F3} × the removed layers' bytes — "
                + $"{(Math.Abs(ratio - 1) <= 0.05 ? "PASS" : "FAIL")} (within 5 %)");
        }
    }

    /// <summary>Ideal decode speed-up from FLOPs per token: 2 per weight of every matmul + attention over the cache (embedding lookup free).</summary>
    static double FlopIdeal(CausalLM m, int[] kept, EfficiencyOptions o)
    {
        var c = m.Config;
        double cacheLength = o.PromptLength + o.DecodeTokens / 2.0;
        double perLayer = 2.0 * m.Layer(0).Linears().Sum(x => (double)x.linear.InFeatures * x.linear.OutFeatures) + 4.0 * c.NumHeads * c.HeadDim * cacheLength;
        double head = 2.0 * c.HiddenSize * c.VocabSize;
        return (head + c.NumLayers * perLayer) / (head + kept.Length * perLayer);
    }


    static string Rate(Spread s) => $"{s.Median:F1} tok/s [{s.Min:F1}–{s.Max:F1}]";
    static string MiB(long bytes) => $"{bytes / (double)(1 << 20):F2} MiB";
    static string? Arg(string[] args, string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
}
