using System.Diagnostics;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Healing throughput: tokens/s of one LoRA training step (forward + backward + clip + AdamW, r 8 on every projection)
/// as a ratio to forward-only tokens/s (no_grad), same model (samples/kjv-llama-16l, fp32 CPU), batch and sequence
/// length, measured in the same run; for an fp32 base and an NF4 base.
/// </summary>
public static class HealBenchmarks
{
    /// <summary>Bytes as "x.xx GB" (<see cref="MemoryPlanner.Gb"/>); "n/a" where the counter could not be read.</summary>
    public static string Gb(long? bytes) => bytes is long b ? MemoryPlanner.Gb(b) : "n/a";

    public static void Run(TextWriter output, int batch = 8, int seqLen = 256, int iterations = 3)
    {
        string dir = Path.Combine(RepoRoot(), "samples", "kjv-llama-16l");
        using var g = new Generator(0);
        using var ids = randint(0, 2048, [batch, seqLen], generator: g, dtype: ScalarType.Int64);
        double tokens = (double)batch * seqLen;
        output.WriteLine($"Healing throughput, kjv-llama-16l fp32 CPU, batch {batch} × {seqLen} tokens (torch threads {get_num_threads()}, median of {iterations}):");
        foreach (var quant in new[] { BaseQuantization.None, BaseQuantization.Nf4 })
        {
            using var model = CausalLM.Load(dir);
            foreach (var (_, t) in model.NamedTensors()) t.requires_grad_(false);
            double forwardMs;
            using (no_grad()) forwardMs = Median(iterations, () => { using var l = model.Forward(ids); });
            var adapters = LoraInjector.Inject(model.NamedLinears(), new LoraSettings(LoraSettings.AllLinear, 8, 16, 0.05), 0, quant);
            var parameters = adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
            using var opt = torch.optim.AdamW(parameters, 3e-4);
            double adaptedForwardMs;
            foreach (var (_, a) in adapters) a.Training = false;
            using (no_grad()) adaptedForwardMs = Median(iterations, () => { using var l = model.Forward(ids); });
            foreach (var (_, a) in adapters) a.Training = true;
            var seqs = Enumerable.Range(0, batch).Select(b => ids[b].data<long>().Select(x => (int)x).ToArray()).ToList();
            double trainMs = Median(iterations, () => TrainStep(model, seqs, parameters, opt));
            output.WriteLine($"  base {(quant == BaseQuantization.Nf4 ? "nf4 " : "fp32")}: forward-only {tokens / forwardMs * 1000,8:F0} tok/s (base), " +
                $"{tokens / adaptedForwardMs * 1000,8:F0} tok/s (with adapters); train step {tokens / trainMs * 1000,8:F0} tok/s " +
                $"= {forwardMs / trainMs:F3} × forward-only");
        }
    }

    /// <summary>One optimizer step as heal takes it: forward, loss, backward, clip to norm 1, AdamW.</summary>
    internal static void TrainStep(CausalLM model, IReadOnlyList<int[]> seqs, IEnumerable<TorchSharp.Modules.Parameter> parameters,
        torch.optim.Optimizer opt)
    {
        opt.zero_grad();
        using var loss = Healer.Loss(model, seqs);
        loss.backward();
        torch.nn.utils.clip_grad_norm_(parameters, 1.0);
        opt.step();
    }

    static double Median(int n, Action a)
    {
        a(); // warm-up
        var times = new List<double>();
        for (int i = 0; i < n; i++) { var sw = Stopwatch.StartNew(); a(); times.Add(sw.Elapsed.TotalMilliseconds); }
        times.Sort();
        return times[n / 2];
    }

    static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LayerPrune.sln"))) return d.FullName;
        throw new InvalidOperationException("LayerPrune.sln not found above " + AppContext.BaseDirectory);
    }
}
