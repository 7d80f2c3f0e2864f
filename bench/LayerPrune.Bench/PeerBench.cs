using System.Diagnostics;
using System.Globalization;
using LayerPrune.Efficiency;
using LayerPrune.Gguf;
using LayerPrune.Modeling;
using LLama;
using LLama.Common;
using LLama.Native;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Issue 30: our CPU inference beside llama.cpp's on the same checkpoint, in one process and one run. The model is
/// exported to a temporary GGUF of the same dtype (bf16 → BF16, fp32 → F32) and run by llama.cpp through LLamaSharp
/// 0.30 (CPU backend) with the same thread count, the same prompt ids and the same number of greedy decode steps.
/// Rounds alternate between the two, so load on the machine drifting over time affects both alike.
/// Prints prefill and decode tokens/s of each, their ratios, and the effective weight bandwidth of decoding
/// (weight bytes × tokens/s: every weight is read once per token at batch 1).
/// </summary>
public static class PeerBench
{
    /// <summary>
    /// peer --model DIR [--peer llamacpp] [--dtype bf16|fp32] [--threads 2] [--prompt-length 128] [--decode-tokens 32]
    /// [--repeats 5] [--with-torch-linear]
    /// </summary>
    public static void Run(TextWriter o, string modelDir, string[] args)
    {
        string peer = Arg(args, "--peer") ?? "llamacpp";
        if (peer != "llamacpp") throw new ArgumentException($"--peer {peer}: only llamacpp is supported");
        string dtypeName = Arg(args, "--dtype") ?? "bf16";
        var (device, dtype) = ComputeTarget.Resolve("cpu", dtypeName);
        int threads = int.Parse(Arg(args, "--threads") ?? "2", CultureInfo.InvariantCulture);
        var opts = new EfficiencyOptions
        {
            PromptLength = int.Parse(Arg(args, "--prompt-length") ?? "128", CultureInfo.InvariantCulture),
            DecodeTokens = int.Parse(Arg(args, "--decode-tokens") ?? "32", CultureInfo.InvariantCulture),
            Repeats = int.Parse(Arg(args, "--repeats") ?? "5", CultureInfo.InvariantCulture),
            Warmup = 1,
        };
        set_num_threads(threads);
        string gguf = Path.Combine(Path.GetTempPath(), $"layerprune-peer-{Guid.NewGuid():N}.gguf");
        try
        {
            var type = dtype == ScalarType.BFloat16 ? GgufOutputType.BF16 : GgufOutputType.F32;
            var sw = Stopwatch.StartNew();
            var export = GgufExporter.Export(modelDir, gguf, new GgufExportOptions { Type = type });
            o.WriteLine($"peer: exported {modelDir} to a temporary {type} GGUF ({export.Bytes / 1e9:F2} GB) "
                + $"in {sw.Elapsed.TotalSeconds:F0} s");

            var (model, _) = EfficiencyMeter.LoadMeasured(modelDir, device, dtype, opts);
            using var _m = model;
            var prompt = Prompt(model.Config.VocabSize, opts);
            long weightBytes = EfficiencyMeter.WeightBytes(model);
            using var llama = new LlamaRunner(gguf, threads, opts.PromptLength + opts.DecodeTokens + 8);

            var ours = new Samples();
            var theirs = new Samples();
            // --with-torch-linear: also our forward with the Gemv kernel off (nn.functional.linear everywhere), as a third
            // participant of the same rounds: what the kernel changes, under the same load.
            var torchLinear = args.Contains("--with-torch-linear") ? new Samples() : null;
            var one = opts with { Warmup = 0, Repeats = 1 };
            void Ours(Samples into, bool timed, bool gemv)
            {
                bool was = Gemv.Disabled;
                Gemv.Disabled = !gemv;
                try
                {
                    var r = EfficiencyMeter.Measure([new EfficiencyTarget("layerprune", model)], one)[0];
                    if (timed)
                        into.Add(r.PrefillTokensPerSecond.Median, r.DecodeTokensPerSecond.Median,
                            r.PrefillTokensPerCpuSecond!.Median, r.DecodeTokensPerCpuSecond!.Median);
                }
                finally { Gemv.Disabled = was; }
            }
            void Theirs(bool timed)
            {
                var t = llama.TimeOnce(prompt, opts.DecodeTokens);
                if (timed)
                    theirs.Add(opts.PromptLength / t.Prefill, opts.DecodeTokens / t.Decode,
                        opts.PromptLength / t.PrefillCpu, opts.DecodeTokens / t.DecodeCpu);
            }
            var runs = new List<Action<bool>> { timed => Ours(ours, timed, gemv: true), Theirs };
            if (torchLinear is not null) runs.Add(timed => Ours(torchLinear, timed, gemv: false));
            for (int round = 0; round < opts.Warmup + opts.Repeats; round++)
            {
                bool timed = round >= opts.Warmup;
                // Each round starts with a different participant, as EfficiencyMeter does with its targets.
                for (int k = 0; k < runs.Count; k++) runs[(round + k) % runs.Count](timed);
            }
            Print(o, modelDir, dtypeName, threads, opts, weightBytes, ours, theirs, torchLinear);
        }
        finally
        {
            if (File.Exists(gguf)) File.Delete(gguf);
        }
    }

    static void Print(TextWriter o, string modelDir, string dtype, int threads, EfficiencyOptions opts, long weightBytes,
        Samples ours, Samples theirs, Samples? torchLinear)
    {
        var m = MachineInfo.Current();
        o.WriteLine($"peer: {modelDir}, cpu {dtype}, {threads} threads (libtorch and llama.cpp), prompt {opts.PromptLength}, "
            + $"{opts.DecodeTokens} greedy decode steps at batch 1, {opts.Repeats} rounds (+{opts.Warmup} warm-up), alternating");
        o.WriteLine($"      CPU {m.CpuModel}, flags {string.Join(" ", m.CpuFlags)}, {m.Cores} cores; load average {LoadAverage()}");
        o.WriteLine($"      weights {weightBytes / 1e9:F3} GB (read once per decoded token)");
        o.WriteLine($"  {"",-34} {"LayerPrune",22} {"llama.cpp",22} {"ratio",8}");
        void Row(string name, Func<Samples, List<double>> pick, string unit)
        {
            var a = Spread.Of(pick(ours));
            var b = Spread.Of(pick(theirs));
            o.WriteLine($"  {name,-34} {Fmt(a),22} {Fmt(b),22} {a.Median / b.Median,7:F2}×");
        }
        Row("prefill tokens/s", s => s.Prefill, "tok/s");
        Row("decode tokens/s", s => s.Decode, "tok/s");
        Row("prefill tokens per CPU-second", s => s.PrefillCpu, "tok/s");
        Row("decode tokens per CPU-second", s => s.DecodeCpu, "tok/s");
        double bwOurs = weightBytes * Spread.Of(ours.Decode).Median / 1e9;
        double bwTheirs = weightBytes * Spread.Of(theirs.Decode).Median / 1e9;
        o.WriteLine($"  {"decode effective weight bandwidth",-34} {bwOurs,17:F1} GB/s {bwTheirs,17:F1} GB/s {bwOurs / bwTheirs,7:F2}×");
        if (torchLinear is not null)
        {
            o.WriteLine("  LayerPrune with the Gemv kernel off (torch linear), in the same rounds:");
            Row2("prefill tokens/s", s => s.Prefill);
            Row2("decode tokens/s", s => s.Decode);
            Row2("decode tokens per CPU-second", s => s.DecodeCpu);
            void Row2(string name, Func<Samples, List<double>> pick)
            {
                var a = Spread.Of(pick(torchLinear));
                var b = Spread.Of(pick(theirs));
                o.WriteLine($"  {name,-34} {Fmt(a),22} {Fmt(b),22} {a.Median / b.Median,7:F2}×  "
                    + $"(kernel on / off: {Spread.Of(pick(ours)).Median / a.Median:F2}×)");
            }
        }
        o.WriteLine("  (times on a shared machine are only comparable within one run; re-measure on a quiet machine)");
    }

    static string Fmt(Spread s) => $"{s.Median:F1} [{s.Min:F1}–{s.Max:F1}]";

    static string LoadAverage()
    {
        try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "n/a"; }
    }

    /// <summary>The prompt ids EfficiencyMeter uses: seeded, uniform over the vocabulary.</summary>
    static int[] Prompt(int vocab, EfficiencyOptions o)
    {
        var random = new Random(o.Seed);
        return Enumerable.Range(0, o.PromptLength).Select(_ => random.Next(vocab)).ToArray();
    }

    sealed class Samples
    {
        public List<double> Prefill { get; } = [];
        public List<double> Decode { get; } = [];
        public List<double> PrefillCpu { get; } = [];
        public List<double> DecodeCpu { get; } = [];

        public void Add(double prefill, double decode, double prefillCpu, double decodeCpu)
        {
            Prefill.Add(prefill);
            Decode.Add(decode);
            PrefillCpu.Add(prefillCpu);
            DecodeCpu.Add(decodeCpu);
        }
    }

    /// <summary>llama.cpp through LLamaSharp: the prompt in one batch, then one greedy token per step (as TextGenerator).</summary>
    sealed class LlamaRunner : IDisposable
    {
        readonly LLamaWeights _weights;
        readonly ModelParams _params;

        public LlamaRunner(string gguf, int threads, int context)
        {
            NativeLibraryConfig.All.WithLogCallback((level, message) =>
            {
                if (Environment.GetEnvironmentVariable("LP_LLAMA_LOG") == "1") Console.Write(message);
            });
            NativeApi.llama_empty_call();
            _params = new ModelParams(gguf)
            {
                ContextSize = (uint)context, BatchSize = (uint)context, UBatchSize = (uint)context, GpuLayerCount = 0,
                Threads = threads, BatchThreads = threads,
            };
            _weights = LLamaWeights.LoadFromFile(_params);
        }

        /// <summary>Wall and process CPU seconds of the prefill and of the decode steps, in a fresh context.</summary>
        public (double Prefill, double Decode, double PrefillCpu, double DecodeCpu) TimeOnce(int[] prompt, int decodeTokens)
        {
            using var ctx = _weights.CreateContext(_params);
            var process = Process.GetCurrentProcess();
            var batch = new LLamaBatch();
            for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Length - 1);
            double cpu0 = Cpu(process);
            var sw = Stopwatch.StartNew();
            Decode(ctx, batch);
            int next = ArgMax(ctx.NativeHandle.GetLogitsIth(batch.TokenCount - 1));
            double prefill = sw.Elapsed.TotalSeconds;
            double cpu1 = Cpu(process);
            sw.Restart();
            for (int step = 0; step < decodeTokens; step++)
            {
                batch.Clear();
                batch.Add((LLamaToken)next, prompt.Length + step, LLamaSeqId.Zero, true);
                Decode(ctx, batch);
                next = ArgMax(ctx.NativeHandle.GetLogitsIth(0));
            }
            double decode = sw.Elapsed.TotalSeconds;
            double cpu2 = Cpu(process);
            return (prefill, decode, cpu1 - cpu0, cpu2 - cpu1);
        }

        static void Decode(LLamaContext ctx, LLamaBatch batch)
        {
            var r = ctx.NativeHandle.Decode(batch);
            if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {r}");
        }

        static int ArgMax(Span<float> x)
        {
            int best = 0;
            for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
            return best;
        }

        static double Cpu(Process process)
        {
            process.Refresh();
            return process.TotalProcessorTime.TotalSeconds;
        }

        public void Dispose() => _weights.Dispose();
    }

    static string? Arg(string[] args, string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
}
