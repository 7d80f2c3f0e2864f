using System.Diagnostics;
using LayerPrune.Data;
using LayerPrune.Efficiency;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using LayerPrune.Pruning;
using LayerPrune.Similarity;
using LayerPrune.Tokenization;

namespace LayerPrune.Bench;

/// <summary>
/// Issue 24 ("Speed and memory"): the linear repair's fit against one similarity pass over the same calibration chunks, in
/// one run. Usage: <c>repair-fit --model DIR [--dtype bf16|fp32] [--chunks 64] [--seq-len 256] [--data FILE] [--offload]
/// --layers S-E</c> (S-E: the removed block, 0-based inclusive; --offload: both passes stream the layers from the checkpoint,
/// and the weights are the checkpoint's safetensors bytes). Chunks follow the sweep's repair rows (<see cref="PreTokenized.LossChunks"/>).
/// Prints seconds of each, fit / similarity (target ≤ 1.5×), the peak RSS of each phase and of the process against the
/// weights' bytes, the CPU flags and the load average.
/// </summary>
public static class RepairFitBench
{
    /// <summary>Runs the measurement.</summary>
    public static void Run(TextWriter o, string dir, string[] args)
    {
        string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
        var (device, dtype) = ComputeTarget.Resolve("cpu", Arg("--dtype", "bf16"));
        int chunksWanted = int.Parse(Arg("--chunks", "64")), seqLen = int.Parse(Arg("--seq-len", "256"));
        string data = Arg("--data", BenchPaths.Sample(Path.Combine("data", "kjv", "train.txt")));
        string spec = args.SkipWhile(a => a != "--layers").Skip(1).FirstOrDefault()
            ?? throw new ArgumentException("repair-fit: --layers S-E is required");
        var sw = Stopwatch.StartNew();
        bool offload = args.Contains("--offload");
        using var model = CausalLM.Load(dir, device, dtype, offload);
        double loadS = sw.Elapsed.TotalSeconds;
        var plan = PrunePlan.FromLayerSpec(spec, model.NumLayers);
        var chunks = PreTokenized.LossChunks(data, TokenizerLoader.Load(dir), seqLen, chunksWanted, model.Config.VocabSize);
        long weights = offload
            ? Directory.GetFiles(dir, "*.safetensors").Sum(f => new FileInfo(f).Length)
            : EfficiencyMeter.WeightBytes(model);
        string Gb(long? b) => b is long v ? $"{v / 1e9:F2} GB" : "n/a";
        string streamed = offload ? "offloaded (layers streamed), " : "";
        o.WriteLine($"repair-fit {dir}: {ComputeTarget.Name(dtype)}, {model.NumLayers} layers, removed {spec}, {streamed}" +
            $"{chunks.Count} chunks × " +
            $"{seqLen} tokens from {data}; CPU flags {CpuFeatures.Summary}, torch threads {TorchSharp.torch.get_num_threads()}");
        o.WriteLine($"  loaded in {loadS:F1} s, weights {Gb(weights)}, RSS {Gb(ProcessMemory.Read()?.Rss)}, " +
            $"peak while loading {Gb(ProcessMemory.Read()?.Peak)}");

        ProcessMemory.ResetPeak();
        sw.Restart();
        var sim = LayerSimilarity.Compute(model, chunks);
        double simS = sw.Elapsed.TotalSeconds;
        long? simPeak = ProcessMemory.Read()?.Peak;
        GC.KeepAlive(sim);

        ProcessMemory.ResetPeak();
        sw.Restart();
        using (var repair = LinearRepair.Fit(model, plan, chunks, new RepairOptions { Method = "linear" })) { }
        double fitS = sw.Elapsed.TotalSeconds;
        long? fitPeak = ProcessMemory.Read()?.Peak;

        o.WriteLine($"  similarity pass: {simS:F1} s, peak RSS {Gb(simPeak)} ({(simPeak ?? 0) / (double)weights:F2}× weights)");
        o.WriteLine($"  linear repair fit: {fitS:F1} s, peak RSS {Gb(fitPeak)} ({(fitPeak ?? 0) / (double)weights:F2}× weights)");
        o.WriteLine($"  fit / similarity: {fitS / simS:F2}× (target ≤ 1.5×: {(fitS / simS <= 1.5 ? "met" : "NOT met")})");
        string load = File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "n/a";
        o.WriteLine($"  load average (1/5/15 min, /proc/loadavg): {load}");
    }
}
