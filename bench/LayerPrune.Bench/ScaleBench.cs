using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Efficiency;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Issue 14: the CLI's commands on real-shape checkpoints (1B–7B), each as its own child process with default flags
/// unless the row says otherwise. Per row: wall seconds, CPU seconds, end-to-end tokens/s and peak RSS (the child's VmHWM)
/// against the weights' bytes in the compute dtype. Per model, measured in the same run: the matmul peak of fp32 and bf16
/// at the model's MLP shape, and the forward throughput of the auto dtype as a ratio to that peak.
/// Usage: ... -- scale --model DIR [--model DIR ...] [--commands similarity,similarity-fp32,similarity-bf16,eval,mc,generate,heal | none]
///            [--samples 32] [--seq-len 128] [--markdown-out FILE] [--json-out FILE]
/// </summary>
public static class ScaleBench
{
    const string DefaultCommands = "similarity,similarity-fp32,similarity-bf16,eval,mc,generate,heal";

    /// <summary>One command on one model, as the child process ran it.</summary>
    public sealed record Row(string Model, string Command, string Args, int ExitCode, double WallSeconds, double CpuSeconds,
        long Tokens, long PeakRssBytes, long WeightBytes, string LastLine);

    /// <summary>Runs every command on every model and prints (and optionally writes) the results table.</summary>
    public static void Run(TextWriter o, string[] args)
    {
        var models = Values(args, "--model");
        if (models.Count == 0) throw new ArgumentException("scale: give at least one --model DIR (e.g. a `shape` checkpoint)");
        var commands = (Arg(args, "--commands") ?? DefaultCommands).Split(',', StringSplitOptions.RemoveEmptyEntries);
        int samples = int.Parse(Arg(args, "--samples") ?? "32", CultureInfo.InvariantCulture);
        int seqLen = int.Parse(Arg(args, "--seq-len") ?? "128", CultureInfo.InvariantCulture);
        string cli = CliPath();
        var (_, autoDtype) = ComputeTarget.Resolve("cpu", "auto");
        o.WriteLine($"scale: CPU flags {CpuFeatures.Summary}, {Environment.ProcessorCount} cores, torch threads {get_num_threads()}, "
            + $"auto dtype {ComputeTarget.Name(autoDtype)}; CLI {cli}");
        var rows = new List<Row>();
        var peaks = new JsonArray();
        var md = new StringBuilder();
        md.AppendLine($"CPU flags `{CpuFeatures.Summary}`, {Environment.ProcessorCount} cores; auto dtype = {ComputeTarget.Name(autoDtype)}.");
        md.AppendLine();
        md.AppendLine("| model | command | exit | wall s | CPU s | tokens/s (end to end) | GFLOP/s (end to end) | peak RSS | RSS / weights |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var model in models)
        {
            var shape = ModelShape.Read(model);
            WarmPageCache(model);
            foreach (var command in commands.Where(c => c != "none"))
            {
                var (argv, tokens, dtype) = Command(command, model, samples, seqLen);
                var row = RunChild(cli, model, command, argv, tokens, shape.Parameters * DtypeBytes(dtype ?? autoDtype));
                rows.Add(row);
                o.WriteLine($"  {Path.GetFileName(model)} {command}: exit {row.ExitCode}, {row.WallSeconds:F1} s wall, {row.CpuSeconds:F1} s CPU, "
                    + $"{Rate(row)} tok/s, peak RSS {MemoryPlanner.Gb(row.PeakRssBytes)} = {Ratio(row):F2}× weights{(row.ExitCode == 0 ? "" : " — " + row.LastLine)}");
                md.AppendLine($"| {Path.GetFileName(model)} | `{command}` | {row.ExitCode} | {row.WallSeconds:F1} | {row.CpuSeconds:F1} | {Rate(row)} | "
                    + $"{Gflops(row, shape, command)} | {MemoryPlanner.Gb(row.PeakRssBytes)} | {Ratio(row):F2} |");
            }
            var peak = ForwardVersusPeak(model, autoDtype, seqLen);
            o.WriteLine($"  {Path.GetFileName(model)} forward ({ComputeTarget.Name(autoDtype)}, batch {peak.Batch}×{seqLen}): {peak.TokensPerSecond:F1} tok/s "
                + $"= {peak.ModelGflops:F1} GFLOP/s; matmul peak at the MLP shape fp32 {peak.Fp32Peak:F1} / bf16 {peak.Bf16Peak:F1} GFLOP/s; "
                + $"ratio to the {ComputeTarget.Name(autoDtype)} peak {peak.Ratio:F2}");
            md.AppendLine($"| {Path.GetFileName(model)} | forward {ComputeTarget.Name(autoDtype)} {peak.Batch}×{seqLen} (in-process) | 0 | | | "
                + $"{peak.TokensPerSecond:F1} | {peak.ModelGflops:F1} = **{peak.Ratio:F2}×** the same-run {ComputeTarget.Name(autoDtype)} matmul peak "
                + $"({peak.Fp32Peak:F0} fp32 / {peak.Bf16Peak:F0} bf16 GFLOP/s at the MLP shape) | | |");
            peaks.Add(new JsonObject
            {
                ["model"] = model, ["dtype"] = ComputeTarget.Name(autoDtype), ["batch"] = peak.Batch, ["seq_len"] = seqLen,
                ["tokens_per_second"] = peak.TokensPerSecond, ["model_gflops"] = peak.ModelGflops,
                ["matmul_peak_fp32_gflops"] = peak.Fp32Peak, ["matmul_peak_bf16_gflops"] = peak.Bf16Peak, ["ratio_to_peak"] = peak.Ratio,
            });
        }
        o.WriteLine();
        o.Write(md.ToString());
        if (Arg(args, "--markdown-out") is { } mdPath) File.WriteAllText(mdPath, md.ToString());
        if (Arg(args, "--json-out") is { } jsonPath)
        {
            var json = new JsonObject
            {
                ["cpu_flags"] = CpuFeatures.Summary, ["cores"] = Environment.ProcessorCount, ["auto_dtype"] = ComputeTarget.Name(autoDtype),
                ["rows"] = new JsonArray(rows.Select(r => (JsonNode?)new JsonObject
                {
                    ["model"] = r.Model, ["command"] = r.Command, ["args"] = r.Args, ["exit_code"] = r.ExitCode, ["wall_seconds"] = r.WallSeconds,
                    ["cpu_seconds"] = r.CpuSeconds, ["tokens"] = r.Tokens, ["peak_rss_bytes"] = r.PeakRssBytes, ["weight_bytes"] = r.WeightBytes,
                }).ToArray()),
                ["forward"] = peaks,
            };
            File.WriteAllText(jsonPath, json.ToJsonString(new() { WriteIndented = true }));
        }
    }

    /// <summary>The CLI arguments of a row, the tokens it processes, and its dtype when the row pins one (null: auto).</summary>
    static (string[] argv, long tokens, ScalarType? dtype) Command(string command, string model, int samples, int seqLen)
    {
        string text = BenchPaths.Sample(Path.Combine("data", "kjv", "validation.txt"));
        string train = BenchPaths.Sample(Path.Combine("data", "kjv", "train.txt"));
        string cloze = BenchPaths.Sample(Path.Combine("data", "kjv-cloze", "test.jsonl"));
        string tmp = Path.Combine(Path.GetTempPath(), $"layerprune-scale-{Guid.NewGuid():N}");
        string[] similarity = ["similarity", "-m", model, "-d", text, "--samples", $"{samples}", "--seq-len", $"{seqLen}", "-o", tmp];
        const int chunks = 8, mcItems = 8, newTokens = 16, healSteps = 2, healBatch = 4;
        return command switch
        {
            "similarity" => (similarity, (long)samples * seqLen, null),
            "similarity-fp32" => ([.. similarity, "--dtype", "fp32"], (long)samples * seqLen, ScalarType.Float32),
            "similarity-bf16" => ([.. similarity, "--dtype", "bf16"], (long)samples * seqLen, ScalarType.BFloat16),
            "eval" => (["eval", "-m", model, "-t", "loss:" + text, "--max-chunks", $"{chunks}", "--seq-len", $"{seqLen}"], (long)chunks * seqLen, null),
            "mc" => (["eval", "-m", model, "-t", "mc:" + cloze, "--limit", $"{mcItems}"], 0, null),
            "generate" => (["generate", "-m", model, "-p", "In the beginning God created", "-n", $"{newTokens}"], newTokens, null),
            "heal" => (["heal", "-m", model, "--data", train, "-o", tmp, "--steps", $"{healSteps}", "--batch", $"{healBatch}", "--seq-len", $"{seqLen}",
                "--save-every", "1000"], (long)healSteps * healBatch * seqLen, null),
            _ => throw new ArgumentException($"scale: unknown command '{command}' (known: {DefaultCommands})"),
        };
    }

    /// <summary>Runs the CLI as a child process and samples its /proc status until it exits (VmHWM is the peak resident set).</summary>
    static Row RunChild(string cli, string model, string command, string[] argv, long tokens, long weightBytes)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(cli);
        foreach (var a in argv) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--quiet");
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("could not start dotnet");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        long peak = 0;
        double cpu = 0;
        while (!p.WaitForExit(50))
        {
            peak = Math.Max(peak, ProcessMemory.Read(p.Id)?.Peak ?? 0);
            cpu = Math.Max(cpu, CpuSeconds(p.Id));
        }
        double wall = sw.Elapsed.TotalSeconds;
        string err = stderr.Result.Trim();
        _ = stdout.Result;
        string last = err.Split('\n').LastOrDefault(l => l.Length > 0) ?? "";
        foreach (var a in argv.SkipWhile(a => a != "-o").Skip(1).Take(1))
            if (Directory.Exists(a)) Directory.Delete(a, true);
        return new Row(model, command, string.Join(' ', argv), p.ExitCode, wall, cpu, tokens, peak, weightBytes, last);
    }

    /// <summary>Reads the checkpoint's files once, so the first row does not pay for the disk and the rows compare compute.</summary>
    static void WarmPageCache(string dir)
    {
        var buffer = new byte[1 << 22];
        foreach (var file in Directory.EnumerateFiles(dir, "*.safetensors"))
        {
            using var stream = File.OpenRead(file);
            while (stream.Read(buffer, 0, buffer.Length) > 0)
            {
            }
        }
    }

    /// <summary>Forward tokens/s of the loaded model (no grad, full logits) against fp32 and bf16 matmul peaks of its MLP shape.</summary>
    static (int Batch, double TokensPerSecond, double ModelGflops, double Fp32Peak, double Bf16Peak, double Ratio) ForwardVersusPeak(
        string model, ScalarType dtype, int seqLen)
    {
        const int batch = 4;
        double tokensPerSecond, flopsPerToken;
        int hidden, intermediate;
        using (var m = CausalLM.Load(model, CPU, dtype))
        {
            hidden = m.Config.HiddenSize;
            intermediate = m.Config.IntermediateSize;
            flopsPerToken = ModelBenchmarks.FlopsPerToken(m, seqLen);
            using var g = new TorchSharp.torch.Generator(0);
            using var ids = randint(0, m.Config.VocabSize, [batch, seqLen], generator: g, dtype: ScalarType.Int64);
            using var _ = no_grad();
            double s = ModelBenchmarks.Time(() => m.Forward(ids).Dispose(), 3);
            tokensPerSecond = batch * seqLen / s;
        }
        double fp32 = ModelBenchmarks.LinearGflops(batch * seqLen, hidden, intermediate, ScalarType.Float32);
        double bf16 = ModelBenchmarks.LinearGflops(batch * seqLen, hidden, intermediate, ScalarType.BFloat16);
        double gflops = tokensPerSecond * flopsPerToken / 1e9;
        return (batch, tokensPerSecond, gflops, fp32, bf16, gflops / (dtype == ScalarType.BFloat16 ? bf16 : fp32));
    }

    /// <summary>utime + stime of the process from /proc/PID/stat (clock ticks of 1/100 s on Linux).</summary>
    static double CpuSeconds(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / 100.0;
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException)
        {
            return 0;
        }
    }

    /// <summary>The layerprune.dll next to this benchmark (the bench references the CLI project, which is copied here).</summary>
    static string CliPath()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "layerprune.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("layerprune.dll not found next to the benchmark", path);
    }

    /// <summary>
    /// End-to-end GFLOP/s of the forward-type rows: 2 FLOPs per weight per token (the embedding lookup is free, a tied
    /// head counts once more), ×3 for training (forward + backward of activations and LoRA weights); wall time includes loading.
    /// </summary>
    static string Gflops(Row r, ModelShape shape, string command)
    {
        if (r.ExitCode != 0 || r.Tokens == 0 || command == "generate") return "—";
        double flops = 2.0 * shape.MatmulWeights * r.Tokens * (command == "heal" ? 3 : 1);
        return (flops / r.WallSeconds / 1e9).ToString("F1", CultureInfo.InvariantCulture);
    }

    static long DtypeBytes(ScalarType dtype) => dtype == ScalarType.Float32 ? 4 : 2;
    static string Rate(Row r) => r.Tokens > 0 && r.ExitCode == 0 ? (r.Tokens / r.WallSeconds).ToString("F1", CultureInfo.InvariantCulture) : "—";
    static double Ratio(Row r) => (double)r.PeakRssBytes / r.WeightBytes;
    static string? Arg(string[] args, string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();

    static List<string> Values(string[] args, string name) =>
        args.Select((a, i) => (a, i)).Where(x => x.a == name && x.i + 1 < args.Length).Select(x => args[x.i + 1]).ToList();

    /// <summary>The parameter count of a checkpoint folder from its safetensors headers.</summary>
    /// <param name="Parameters">Every stored tensor's elements.</param>
    /// <param name="MatmulWeights">Weights a token multiplies: all but the embedding, plus the embedding again when the head is tied.</param>
    sealed record ModelShape(long Parameters, long MatmulWeights)
    {
        public static ModelShape Read(string dir)
        {
            using var ckpt = Checkpoints.Checkpoint.Open(dir);
            long embedding = (long)ckpt.Config.VocabSize * ckpt.Config.HiddenSize;
            bool tied = !ckpt.Contains("lm_head.weight");
            return new ModelShape(ckpt.ParameterCount, ckpt.ParameterCount - (tied ? 0 : embedding));
        }
    }
}
