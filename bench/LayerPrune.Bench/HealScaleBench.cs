using System.Diagnostics;
using LayerPrune.Efficiency;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// QLoRA training speed on a real-shape checkpoint (issue 14), one process, same batch: tokens/s of the inference
/// forward of the plain model (no_grad, weights in the compute dtype), of the NF4 + LoRA model's forward, and of a
/// training step (forward + backward + clip + AdamW, r 8 on every projection, dropout 0.05) with activation checkpointing,
/// once replaying the frozen matmuls' outputs and once recomputing them; ratios to both forwards. Usage:
/// <c>heal-scale --model DIR [--dtype bf16] [--batch 4] [--seq-len 128] [--repeats 2] [--both] [--reference]</c> (--both: also
/// without checkpointing, which keeps every layer's activations; --reference: the NF4 forward and step again with the
/// torch-op reference dequantization, a same-run before/after).
/// </summary>
public static class HealScaleBench
{
    /// <summary>Runs the measurement and prints one line per configuration.</summary>
    public static void Run(TextWriter output, string dir, string[] args)
    {
        string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
        var (device, dtype) = ComputeTarget.Resolve("cpu", Arg("--dtype", "auto"));
        int batch = int.Parse(Arg("--batch", "4"));
        int seqLen = int.Parse(Arg("--seq-len", "128"));
        int repeats = int.Parse(Arg("--repeats", "2"));
        double tokens = (double)batch * seqLen;
        using var model = CausalLM.Load(dir, device, dtype);
        output.WriteLine($"heal-scale {dir}: {ComputeTarget.Name(dtype)}, batch {batch} × {seqLen}, CPU flags {CpuFeatures.Summary}, " +
            $"torch threads {get_num_threads()}, median of {repeats} after a warm-up; RSS {HealBenchmarks.Gb(ProcessMemory.Read()?.Rss)} after load");
        foreach (var (_, t) in model.NamedTensors())
            t.requires_grad_(false);
        using var g = new Generator(0);
        using var ids = randint(0, model.Config.VocabSize, [batch, seqLen], generator: g, dtype: ScalarType.Int64);
        var seqs = Enumerable.Range(0, batch).Select(b => ids[b].data<long>().Select(x => (int)x).ToArray()).ToList();

        var (forwardS, forwardCpu) = Measure(repeats, () => Forward(model, ids));
        output.WriteLine($"  forward, plain {ComputeTarget.Name(dtype)} weights: {tokens / forwardS,7:F1} tok/s " +
            $"({forwardS:F2} s, CPU {forwardCpu:F2} s)");

        // Baseline for the quantization: a plain bf16 → fp32 convert of the same weights (already resident from the forwards).
        var toQuantize = model.NamedLinears().Where(l => l.name != "lm_head" && l.linear.Weight is not null).ToList();
        double weights = toQuantize.Sum(l => (double)l.linear.Weight!.NumberOfElements);
        var (convertS, convertCpu) = Time(() =>
        {
            foreach (var (_, l) in toQuantize)
                l.Weight!.to(ScalarType.Float32).Dispose();
        });
        output.WriteLine($"  baseline, {ComputeTarget.Name(dtype)} → fp32 convert of the {weights / 1e6:F0} M weights to quantize: " +
            $"{weights / 1e6 / convertS,7:F0} M weights/s ({convertS:F2} s, CPU {convertCpu:F2} s)");
        IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters = [];
        var (quantS, quantCpu) = Time(() => adapters = LoraInjector.Inject(model.NamedLinears(),
            new LoraSettings(LoraSettings.AllLinear, 8, 16, 0.05), 0, BaseQuantization.Nf4));
        output.WriteLine($"  NF4 quantization + LoRA injection: {weights / 1e6 / quantS,7:F0} M weights/s ({quantS:F2} s, " +
            $"CPU {quantCpu:F2} s) = {convertS / quantS:F2} × the convert's speed");
        ProcessMemory.Settle();
        output.WriteLine($"  RSS {HealBenchmarks.Gb(ProcessMemory.Read()?.Rss)} after NF4 quantization");
        using var dropout = new Generator(1);
        foreach (var (_, a) in adapters)
        {
            a.DropoutGenerator = dropout;
            a.Training = false;
        }
        var (nf4S, nf4Cpu) = Measure(repeats, () => Forward(model, ids));
        output.WriteLine($"  forward, NF4 + LoRA:  {tokens / nf4S,7:F1} tok/s ({nf4S:F2} s, CPU {nf4Cpu:F2} s) = " +
            $"{forwardS / nf4S:F3} × plain forward");
        foreach (var (_, a) in adapters)
            a.Training = true;
        var parameters = adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
        using var opt = torch.optim.AdamW(parameters, 3e-4);
        // Before the CPU-loop step, so that both steps see the machine of the same minutes.
        if (args.Contains("--reference"))
            ReferencePasses(output, model, ids, seqs, parameters, opt, adapters, dropout, forwardS, tokens, repeats);
        var modes = new List<(string Name, GradientCheckpointing? Settings)>
        {
            ("checkpointing on, every frozen output replayed", new GradientCheckpointing { PreservedGenerators = [dropout], ReplayFanRatio = 0 }),
            ("checkpointing on, full recompute", new GradientCheckpointing { PreservedGenerators = [dropout] }),
        };
        // The default's choice for this batch (HealOptions.ReplayFanRatio), when it is neither of the two above.
        if (MemoryPlanner.AutoReplayFanRatio(model.Config, batch, seqLen, dtype) is double auto &&
            MemoryPlanner.FrozenOutputBytes(model.Config, batch, seqLen, dtype, auto) < MemoryPlanner.FrozenOutputBytes(model.Config, batch, seqLen, dtype, 0))
        {
            var names = MemoryPlanner.ReplayedProjections(model.Config, auto).Select(p => p.Name);
            modes.Insert(1, ($"checkpointing on, default replay ({string.Join(", ", names)})",
                new GradientCheckpointing { PreservedGenerators = [dropout], ReplayFanRatio = auto }));
        }
        if (args.Contains("--both")) modes.Add(("checkpointing off", null));
        foreach (var (name, settings) in modes)
        {
            model.GradientCheckpointing = settings;
            ProcessMemory.ResetPeak();
            var (trainS, trainCpu) = Measure(repeats, () => HealBenchmarks.TrainStep(model, seqs, parameters, opt));
            output.WriteLine($"  train step, {name}: {tokens / trainS,7:F1} tok/s " +
                $"({trainS:F2} s, CPU {trainCpu:F2} s) = {forwardS / trainS:F3} × plain forward, {nf4S / trainS:F3} × NF4 forward; " +
                $"peak RSS {HealBenchmarks.Gb(ProcessMemory.Read()?.Peak)} while training");
        }
        model.GradientCheckpointing = null;
    }

    /// <summary>
    /// The NF4 forward and the checkpointed step again with every NF4 weight dequantized by the torch-op reference path
    /// (<see cref="Nf4Weight.DequantizeReference"/>, the implementation before the CPU loop): a same-run before/after.
    /// </summary>
    static void ReferencePasses(TextWriter output, CausalLM model, Tensor ids, List<int[]> seqs,
        List<TorchSharp.Modules.Parameter> parameters,
        torch.optim.Optimizer opt, IReadOnlyList<(string Name, LoraAdapter Adapter)> adapters, Generator dropout, double forwardS,
        double tokens, int repeats)
    {
        var swapped = model.NamedLinears().Where(l => l.linear.Quantized is Nf4Weight).Select(l => l.linear).ToList();
        foreach (var l in swapped)
            l.Quantized = new ReferenceNf4((Nf4Weight)l.Quantized!);
        foreach (var (_, a) in adapters)
            a.Training = false;
        var (nf4S, nf4Cpu) = Measure(repeats, () => Forward(model, ids));
        output.WriteLine($"  forward, NF4 + LoRA, reference dequantize:  {tokens / nf4S,7:F1} tok/s ({nf4S:F2} s, CPU {nf4Cpu:F2} s) = " +
            $"{forwardS / nf4S:F3} × plain forward");
        foreach (var (_, a) in adapters)
            a.Training = true;
        model.GradientCheckpointing = new GradientCheckpointing { PreservedGenerators = [dropout] };
        var (trainS, trainCpu) = Measure(repeats, () => HealBenchmarks.TrainStep(model, seqs, parameters, opt));
        output.WriteLine($"  train step, checkpointing on, reference dequantize: {tokens / trainS,7:F1} tok/s " +
            $"({trainS:F2} s, CPU {trainCpu:F2} s) = {forwardS / trainS:F3} × plain forward, {nf4S / trainS:F3} × its NF4 forward");
        model.GradientCheckpointing = null;
        foreach (var l in swapped)
            l.Quantized = ((ReferenceNf4)l.Quantized!).Weight;
    }

    /// <summary>An NF4 weight whose dequantization takes the torch-op reference path.</summary>
    sealed class ReferenceNf4(Nf4Weight weight) : IQuantizedWeight
    {
        public Nf4Weight Weight => weight;
        public long[] Shape => weight.Shape;
        public Tensor Dequantize(ScalarType dtype) => weight.DequantizeReference(dtype);
        public void Dispose() => weight.Dispose();
    }

    static void Forward(CausalLM model, Tensor ids)
    {
        using var _ = no_grad();
        using var logits = model.Forward(ids);
    }

    /// <summary>Wall and process-CPU seconds of one run.</summary>
    static (double Wall, double Cpu) Time(Action a)
    {
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        a();
        return (sw.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds);
    }

    /// <summary>Median wall and process-CPU seconds of <paramref name="n"/> runs after one warm-up.</summary>
    static (double Wall, double Cpu) Measure(int n, Action a)
    {
        a();
        var runs = new List<(double Wall, double Cpu)>();
        for (int i = 0; i < n; i++)
            runs.Add(Time(a));
        runs.Sort();
        return runs[n / 2];
    }
}
