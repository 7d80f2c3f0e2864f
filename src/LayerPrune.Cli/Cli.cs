using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.RegularExpressions;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;
using static TorchSharp.torch;

namespace LayerPrune.Cli;

/// <summary>Options and plumbing shared by every command: errors → one line + exit code, progress sink, JSON output.</summary>
public static class Cli
{
    /// <summary>--verbose: stack traces on errors.</summary>
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Show stack traces on errors", Recursive = true };
    /// <summary>--quiet: no progress output.</summary>
    public static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "No progress output", Recursive = true };
    /// <summary>--device.</summary>
    public static readonly Option<string> Device = new("--device")
    {
        Description = "auto | cpu | cuda (auto: CUDA when available)", DefaultValueFactory = _ => "auto", Recursive = true,
    };
    /// <summary>--dtype.</summary>
    public static readonly Option<string> Dtype = new("--dtype")
    {
        Description = "auto | fp32 | bf16 | fp16 (auto: bf16 on CUDA and on CPUs with native bf16, else fp32)",
        DefaultValueFactory = _ => "auto",
        Recursive = true,
    };
    /// <summary>--hf-token: access token for gated and private hub models (default: HF_TOKEN).</summary>
    public static readonly Option<string?> HfToken = new("--hf-token")
    {
        Description = "Hugging Face access token for gated or private models (default: $HF_TOKEN or huggingface-cli login's token)",
        Recursive = true,
    };
    /// <summary>The options every command accepts.</summary>
    public static IEnumerable<Option> GlobalOptions => [Verbose, Quiet, Device, Dtype, HfToken];

    /// <summary>
    /// The one model-resolution hook of every command (issue 27): a folder as is, a GGUF file converted to a cached
    /// checkpoint, ORG/NAME[@REVISION] from the Hugging Face cache or downloaded into it (<see cref="LayerPrune.Hub.ModelSource"/>).
    /// </summary>
    public static string ResolveModel(ParseResult p, string model) => LayerPrune.Hub.ModelSource.Resolve(model, HubOptionsOf(p));

    /// <summary>Hub access as the environment says (HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE), --hf-token first.</summary>
    public static LayerPrune.Hub.HubOptions HubOptionsOf(ParseResult p) =>
        new LayerPrune.Hub.HubOptions { Progress = Progress } is var o && p.GetValue(HfToken) is { } t ? o with { HfToken = t } : o;

    /// <summary>A required --model / -m option.</summary>
    public static Option<string> ModelOption(string description =
        "Hugging Face model folder (config.json + safetensors), hub id ORG/NAME[@REVISION] (HF cache, else downloaded), or GGUF file") =>
        new("--model", "-m") { Description = description, Required = true };
    /// <summary>A --json option.</summary>
    public static Option<bool> JsonOption() => new("--json") { Description = "Print machine-readable JSON on stdout" };

    /// <summary>Indented JSON output.</summary>
    public static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Where the commands' progress goes: the live bar, stderr lines or nothing (--quiet); set by <see cref="Run"/>.</summary>
    public static IProgressSink Progress { get; private set; } = NullProgressSink.Instance;

    /// <summary>Flags whose names are not the kebab-case of the library's parameter or property name.</summary>
    static readonly Dictionary<string, string> Flags = new(StringComparer.Ordinal)
    {
        ["spec"] = "--layers",
        ["LearningRate"] = "--lr",
        ["ModelDir"] = "--model",
        ["DataPath"] = "--data",
        ["EvalDataPath"] = "--eval-data",
        ["OutDir"] = "--out",
        ["outDir"] = "--out",
        ["outPath"] = "--out",
        ["planPath"] = "--plan",
    };

    /// <summary>The flag of a library parameter: "MicroBatch" → "--micro-batch", "n" → "--n" (names already flags stay).</summary>
    public static string FlagOf(string parameterName)
    {
        if (parameterName.StartsWith('-'))
            return parameterName;
        if (Flags.TryGetValue(parameterName, out var flag))
            return flag;
        return "--" + Regex.Replace(parameterName, "(?<=[a-z0-9])([A-Z])", "-$1").ToLowerInvariant();
    }

    /// <summary>The one-line message of a library error with parameters shown as flags.</summary>
    public static string Describe(LayerPruneException e) => OneLine(e.Render(FlagOf));

    /// <summary>Exit code of a library error: 2 for invalid input (usage), 1 for failures.</summary>
    public static int ExitCodeOf(LayerPruneException e) => e.IsInvalidInput ? 2 : 1;

    /// <summary>Parse errors exit 2; LayerPruneException prints its one-line message (exit 1, or 2 for usage); Ctrl-C exits 130.</summary>
    public static int Run(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        bool verbose = parse.GetValue(Verbose);
        if (parse.Errors.Count > 0 && !args.Any(a => a is "--help" or "-h" or "-?"))
        {
            // One line: the most specific error (an unrecognized token explains "command not provided" too).
            var error = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
            Console.Error.WriteLine($"error: {ParseErrorMessage(error.Message)} (see 'layerprune --help')");
            return 2;
        }
        Progress = SpectreProgressSink.ForCli(parse.GetValue(Quiet));
        try { return parse.Invoke(); }
        catch (Exception e) when (Unwrap(e) is LayerPruneException lp && !verbose)
        {
            Console.Error.WriteLine($"error: {Describe(lp)}");
            return ExitCodeOf(lp);
        }
        catch (Exception e) when (!verbose)
        {
            var inner = Unwrap(e);
            Console.Error.WriteLine($"error: {inner.GetType().Name}: {OneLine(inner.Message)} (run with --verbose for details)");
            return 1;
        }
    }

    /// <summary>Rewrites System.CommandLine's messages to "FLAG: problem" (its type names mean nothing to users).</summary>
    static string ParseErrorMessage(string message)
    {
        var m = Regex.Match(message, @"^Cannot parse argument '(.*)' for option '(.*)' as expected type '(.*)'\.?$");
        if (m.Success)
        {
            string type = m.Groups[3].Value;
            string what = type.Contains("Int32") || type.Contains("Int64") ? "an integer"
                : type.Contains("Double") || type.Contains("Single") ? "a number"
                : type.Contains("Boolean") ? "true or false"
                : "a value of the expected type";
            return $"{m.Groups[2].Value}: cannot parse '{m.Groups[1].Value}' as {what}";
        }
        m = Regex.Match(message, @"^Option '(.*)' is required\.?$");
        if (m.Success) return $"{m.Groups[1].Value}: required option is missing";
        return OneLine(message);
    }

    /// <summary>Messages are printed on one line; embedded line breaks (e.g. from a parser's message) become spaces.</summary>
    public static string OneLine(string s) => Regex.Replace(s, @"\s*[\r\n]+\s*", " ").Trim();

    static Exception Unwrap(Exception e) =>
        e is AggregateException { InnerException: { } i } ? Unwrap(i) : e.InnerException is LayerPruneException lp ? lp : e;

    /// <summary>Sets the command's action, wrapping LayerPruneException handling (System.CommandLine would print a stack trace).</summary>
    public static Command WithAction(this Command command, Func<ParseResult, int> action)
    {
        command.SetAction(parse =>
        {
            try { return action(parse); }
            catch (LayerPruneException e) when (!parse.GetValue(Verbose))
            {
                Console.Error.WriteLine($"error: {Describe(e)}");
                return ExitCodeOf(e);
            }
            catch (IOException e) when (!parse.GetValue(Verbose) && DiskFull.Is(e))
            {
                Console.Error.WriteLine($"error: {OneLine(DiskFull.Explain(e).Message)}");
                return 1;
            }
            catch (Exception e) when (!parse.GetValue(Verbose) && e is not OperationCanceledException)
            {
                Console.Error.WriteLine($"error: {e.GetType().Name}: {OneLine(e.Message)} (run with --verbose for details)");
                return 1;
            }
        });
        return command;
    }

    /// <summary>--device and --dtype resolved (errors name the flags).</summary>
    public static (Device device, ScalarType dtype) Target(ParseResult p) =>
        ComputeTarget.Resolve(p.GetValue(Device)!, p.GetValue(Dtype)!);

    /// <summary>
    /// Loads the model in <paramref name="dir"/> on the chosen device and dtype after planning its memory
    /// (<see cref="MemoryPlanner"/>): a CPU run that would not fit streams layers from the mapping when the command can
    /// (<paramref name="canOffload"/>; says so in one line) and otherwise fails up front with the bytes needed and
    /// available and the flag that makes it fit, instead of being killed by the OOM killer.
    /// </summary>
    public static CausalLM LoadModel(ParseResult p, string dir, bool offload = false, Workload workload = Workload.Evaluate,
        int batchSize = 8, int seqLen = 256, bool canOffload = false)
    {
        var (device, dtype) = Target(p);
        bool quiet = p.GetValue(Quiet);
        if (p.GetValue(Dtype) == "auto" && !quiet)
            Console.Error.WriteLine($"dtype: {ComputeTarget.Name(dtype)} (auto on {device.type}; CPU flags: {CpuFeatures.Summary})");
        if (device.type == TorchSharp.DeviceType.CPU)
            offload |= PlanMemory(dir, dtype, offload, workload, batchSize, seqLen, canOffload, quiet);
        return CausalLM.Load(dir, device, dtype, offload);
    }

    /// <summary>
    /// Plans a QLoRA/LoRA heal of <paramref name="dir"/> before anything is loaded; returns whether to stream the base.
    /// An unquantized base with checkpointing can stream its layers (<paramref name="offload"/> forces it; chosen, with one
    /// line, when the resident run would not fit); a run that fits in neither mode is refused up front with the bytes
    /// needed and available and the flag that makes it fit.
    /// </summary>
    public static bool PlanHeal(ParseResult p, string dir, int microBatch, int seqLen, bool nf4Base, int loraRank, bool checkpointing,
        bool offload = false, double? replayFanRatio = null)
    {
        var (device, dtype) = Target(p);
        if (device.type != TorchSharp.DeviceType.CPU) return offload;
        bool canOffload = !nf4Base && checkpointing;
        return offload | PlanMemory(dir, dtype, offload, Workload.Heal, microBatch, seqLen, canOffload, p.GetValue(Quiet),
            r => r with
            {
                Nf4Base = nf4Base, LoraRank = loraRank, GradientCheckpointing = checkpointing, ReplayFanRatio = replayFanRatio,
            });
    }

    /// <summary>True when the plan streams layers although <paramref name="offload"/> was not asked for.</summary>
    static bool PlanMemory(string dir, ScalarType dtype, bool offload, Workload workload, int batchSize, int seqLen,
        bool canOffload, bool quiet, Func<MemoryRequest, MemoryRequest>? refine = null)
    {
        string? storage;
        ModelConfig config;
        using (var ckpt = Checkpoint.Open(dir))
        {
            config = ckpt.Config;
            string probe = ckpt.WeightMap.Keys.FirstOrDefault(n => n.StartsWith("model.layers.", StringComparison.Ordinal))
                ?? ckpt.WeightMap.Keys.First();
            storage = ckpt.Info(probe).Dtype;
        }
        var request = new MemoryRequest
        {
            Config = config, ComputeDtype = dtype, Workload = workload, BatchSize = batchSize, SeqLen = seqLen,
            StorageDtype = storage, CanOffload = canOffload,
        };
        if (refine is not null)
            request = refine(request);
        try
        {
            var plan = MemoryPlanner.Plan(request, forceOffload: offload);
            if (plan.Notice is { } notice && !quiet)
                Console.Error.WriteLine($"memory: {notice}");
            return plan.Offload && !offload;
        }
        catch (MemoryPlanException e)
        {
            string fix = e.FixParameter switch
            {
                "dtype" => "; --dtype bf16 makes it fit",
                "batchSize" => workload == Workload.Heal ? "; a smaller --micro-batch makes it fit" : "; a smaller --batch makes it fit",
                "offload" => "; heal --quant none --offload (streaming the unquantized base) makes it fit",
                _ => canOffload ? "" : workload == Workload.Heal
                    ? "; only heal --quant none with --gradient-checkpointing can stream layers (--offload)"
                    : "; this command cannot stream layers (--offload is for similarity, prune, eval, generate, sweep and heal)",
            };
            string needs = $"needs about {MemoryPlanner.Gb(e.NeededBytes)} of memory but {MemoryPlanner.Gb(e.AvailableBytes)} is available";
            throw new LayerPruneException($"--model {dir}: {needs}{fix}");
        }
    }

    /// <summary>The tokenizer of a model folder.</summary>
    public static ITextTokenizer LoadTokenizer(string dir) => TokenizerLoader.Load(dir);

    /// <summary>Prints indented JSON on stdout.</summary>
    public static void PrintJson(JsonNode node) => Console.Out.WriteLine(node.ToJsonString(Indented));

    /// <summary>A usage error (exit 2) with <paramref name="message"/> unless <paramref name="condition"/>.</summary>
    public static void Require(bool condition, string message)
    {
        if (!condition)
            throw LayerPruneException.Usage(message);
    }

    /// <summary><paramref name="path"/> when the file exists, else a usage error naming <paramref name="flag"/>.</summary>
    public static string ExistingFile(string path, string flag) =>
        File.Exists(path) ? path : throw LayerPruneException.Usage($"{flag} {path}: file not found");
}
