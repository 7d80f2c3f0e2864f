using System.Diagnostics;
using LayerPrune.Efficiency;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Planning;

namespace LayerPrune.Bench;

/// <summary>
/// Streamed LoRA heal (issue 14, <see cref="HealOptions.Offload"/>) on a real-shape checkpoint without writing outputs (a
/// 7B merged checkpoint is 13.5 GB): opens a <see cref="HealSession"/> (streamed, or resident with --resident), runs
/// --steps optimizer steps and prints each step's loss, tokens/s, CPU seconds and the peak RSS; OUT.partial is removed.
/// Usage: <c>heal-stream --model DIR --data FILE [--dtype bf16] [--steps 1] [--batch 1] [--seq-len 32] [--resident]</c>.
/// Run it under <c>/usr/bin/time -v</c> for the whole process's peak.
/// </summary>
public static class HealStreamBench
{
    /// <summary>Runs the measurement and prints one line per step.</summary>
    public static void Run(TextWriter output, string dir, string[] args)
    {
        string Arg(string name, string fallback) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault() ?? fallback;
        var (device, dtype) = ComputeTarget.Resolve("cpu", Arg("--dtype", "auto"));
        bool offload = !args.Contains("--resident");
        string outDir = Path.Combine(Path.GetTempPath(), $"layerprune-heal-stream-{Guid.NewGuid():N}");
        var o = new HealOptions
        {
            ModelDir = dir, DataPath = Arg("--data", BenchPaths.Sample(Path.Combine("data", "kjv", "train.txt"))), OutDir = outDir,
            Steps = int.Parse(Arg("--steps", "1")), Batch = int.Parse(Arg("--batch", "1")), SeqLen = int.Parse(Arg("--seq-len", "32")),
            Quant = BaseQuantization.None, Offload = offload, Device = device, Dtype = dtype, SaveEvery = 1_000_000,
        };
        var sw = Stopwatch.StartNew();
        try
        {
            using var session = HealSession.Open(o);
            output.WriteLine($"heal-stream {dir}: {(offload ? "streamed" : "resident")}, {ComputeTarget.Name(dtype)}, batch {o.Batch} × " +
                $"{o.SeqLen}, CPU flags {CpuFeatures.Summary}; opened in {sw.Elapsed.TotalSeconds:F1} s, " +
                $"RSS {HealBenchmarks.Gb(ProcessMemory.Read()?.Rss)}, " +
                $"{session.TrainableParameters:N0} trainable parameters; peak RSS while opening {HealBenchmarks.Gb(ProcessMemory.Read()?.Peak)}");
            ProcessMemory.ResetPeak();
            while (!session.IsFinished)
            {
                var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
                long reads = session.Model.LayerReads;
                var step = session.Step();
                double cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
                var m = ProcessMemory.Read();
                output.WriteLine($"  step {step.Step}: loss {step.TrainLoss:F6}, {step.TokensPerSecond:F1} tok/s, CPU {cpu:F1} s, " +
                    $"{session.Model.LayerReads - reads} layer reads; RSS {HealBenchmarks.Gb(m?.Rss)} (anonymous {HealBenchmarks.Gb(m?.Anonymous)}, file " +
                    $"{HealBenchmarks.Gb(m?.File)}), peak since opened {HealBenchmarks.Gb(m?.Peak)}");
            }
        }
        finally
        {
            if (Directory.Exists(Healer.PartialDir(outDir))) Directory.Delete(Healer.PartialDir(outDir), true);
        }
    }
}
