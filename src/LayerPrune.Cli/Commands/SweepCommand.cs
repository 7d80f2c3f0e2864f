using LayerPrune.Planning;
using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Pruning;
using LayerPrune.Sweep;

namespace LayerPrune.Cli.Commands;

/// <summary><c>layerprune sweep</c>: similarity once, then every strategy × block size, figures and report.md.</summary>
public static class SweepCommand
{
    const StringSplitOptions Split = StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries;

    /// <summary>The flag of each <see cref="SweepOptions"/> / <see cref="EvalOptions"/> property the library may name.</summary>
    static readonly Dictionary<string, string> Flags = new()
    {
        [nameof(SweepOptions.Strategies)] = "--strategies",
        [nameof(SweepOptions.Ns)] = "--n",
        [nameof(SweepOptions.Fractions)] = "--fractions",
        [nameof(EvalOptions.Limit)] = "--limit",
        [nameof(EvalOptions.BatchSize)] = "--batch",
        [nameof(EvalOptions.SeqLen)] = "--seq-len",
        [nameof(EvalOptions.MaxChunks)] = "--max-chunks",
        [nameof(SweepOptions.Seeds)] = "--seeds",
        [nameof(SweepOptions.CalibrationChunks)] = "--calibration-chunks",
        [nameof(SweepOptions.EfficiencyThreads)] = "--efficiency-threads",
        [nameof(SweepOptions.Prompts)] = "--prompts",
        [nameof(SweepOptions.GenerationTokens)] = "--generate-tokens",
        [nameof(SweepOptions.Bootstrap)] = "--bootstrap",
        [nameof(SweepOptions.Repair)] = "--repair",
        [nameof(EvalOptions.MaxNewTokens)] = "--max-new-tokens",
        [nameof(SweepOptions.Units)] = "--unit",
        [nameof(SweepOptions.Heal)] = "--heal-steps",
        [nameof(SweepOptions.Stage)] = "--stage",
    };

    /// <summary>The command; its defaults are <see cref="SweepOptions"/>'s and <see cref="EvalOptions.Default"/>'s.</summary>
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "Model folder (default: the embedded samples/kjv-llama-16l)" };
        var data = new Option<string?>("--data", "-d")
        {
            Description = "Similarity text: .txt (chunked like the loss protocol) or .jsonl/.parquet 'text' rows " +
                          "(default with the embedded model: samples/data/kjv/validation.txt)",
        };
        var samples = new Option<int>("--samples")
        {
            Description = "Similarity samples",
            DefaultValueFactory = _ => SweepOptions.DefaultSamples,
        };
        var seqLen = new Option<int>("--seq-len")
        {
            Description = "Tokens per sample / loss chunk",
            DefaultValueFactory = _ => SweepOptions.DefaultSeqLen,
        };
        var batch = new Option<int>("--batch", "-b")
        {
            Description = "Sequences per forward batch",
            DefaultValueFactory = _ => SweepOptions.DefaultBatch,
        };
        var tasks = new Option<string?>("--tasks", "-t")
        {
            Description = "Comma-separated task SPECs (as in eval; e.g. loss:val.txt,mc:cloze.jsonl,gsm8k:gsm/,shots=1,limit=8). " +
                          "Default with the embedded model: loss on validation.txt + the first 150 kjv-cloze items",
        };
        var strategies = new Option<string>("--strategies")
        {
            Description = "Comma-separated: " + string.Join(",", SweepOptions.KnownStrategies),
            DefaultValueFactory = _ => "similarity,deepest,shallowest",
        };
        var n = new Option<string?>("--n") { Description = "Block sizes: 1-15 or 2,4,8 (default: every n from 1 to L-1)" };
        var fractions = new Option<string?>("--fractions") { Description = "Fractions of layers instead of --n, e.g. 0.1,0.2,0.3" };
        var limit = new Option<int?>("--limit")
        {
            Description = "Multiple-choice tasks: first N items (default 150 for the embedded cloze set, else all)",
        };
        var maxChunks = new Option<int>("--max-chunks")
        {
            Description = "Loss: first N chunks of --seq-len tokens (0 = all; the same default as eval)",
            DefaultValueFactory = _ => EvalOptions.Default.MaxChunks ?? 0,
        };
        var seed = new Option<int>("--seed") { Description = "Seed of the random strategy", DefaultValueFactory = _ => 0 };
        var seeds = new Option<string?>("--seeds")
        {
            Description = "Several seeds of the random strategy, e.g. 0,1,2: rows per seed, mean ± std in report.md (instead of --seed)",
        };
        var protectLast = new Option<bool>("--protect-last") { Description = "Never remove the final layer (every strategy)" };
        var calibration = new Option<string?>("--calibration")
        {
            Description = "Calibration text or pre-tokenized JSONL of greedy and loss-rank (default: --data)",
        };
        var calibrationChunks = new Option<int>("--calibration-chunks")
        {
            Description = "Calibration chunks of --seq-len tokens (greedy, loss-rank)",
            DefaultValueFactory = _ => SweepOptions.DefaultCalibrationChunks,
        };
        var efficiency = new Option<bool>("--efficiency")
        {
            Description = "Also measure decode/prefill speed and memory of every variant against the unpruned model in the same run",
        };
        var efficiencyRepeats = new Option<int>("--efficiency-repeats")
        {
            Description = "Timed rounds per efficiency measurement (median and range)",
            DefaultValueFactory = _ => new EfficiencyOptions().Repeats,
        };
        var efficiencyThreads = new Option<int>("--efficiency-threads")
        {
            Description = "libtorch CPU threads while efficiency is measured",
            DefaultValueFactory = _ => 1,
        };
        var output = new Option<string>("--out", "-o")
        {
            Description = "Output folder (rerunning the same command resumes it)",
            DefaultValueFactory = _ => "sweep-out",
        };
        var force = new Option<bool>("--force") { Description = "Discard results of a different earlier sweep in --out" };
        var healSteps = new Option<int>("--heal-steps")
        {
            Description = "Also heal every pruned variant with this many QLoRA steps (0 = no healed variants); " +
                          "checkpoints go to OUT/variants/",
            DefaultValueFactory = _ => 0,
        };
        var healData = new Option<string?>("--heal-data")
        {
            Description = "Training text for healing (default with the embedded model: samples/data/kjv/train.txt)",
        };
        var healQuant = new Option<string>("--heal-quant") { Description = "nf4 | none", DefaultValueFactory = _ => "nf4" };
        var healBatch = new Option<int>("--heal-batch") { Description = "Sequences per healing step", DefaultValueFactory = _ => 16 };
        var healRank = new Option<int>("--heal-rank") { Description = "LoRA rank (alpha = 2·rank)", DefaultValueFactory = _ => 8 };
        var healLr = new Option<double>("--heal-lr")
        {
            Description = "Healing peak learning rate (cosine)",
            DefaultValueFactory = _ => 3e-4,
        };
        var generate = new Option<bool>("--generate")
        {
            Description = "Continue fixed prompts greedily with every variant (built-in King James openings unless --prompts): " +
                          "continuations in results.json and report.md, their repeated 3-gram rate as the metric 'degeneration'",
        };
        var prompts = new Option<string?>("--prompts")
        {
            Description = "Prompts file for --generate, one prompt per line (implies --generate)",
        };
        var generateTokens = new Option<int>("--generate-tokens")
        {
            Description = "Most new tokens per prompt of --generate",
            DefaultValueFactory = _ => SweepGenerations.DefaultMaxNewTokens,
        };
        var maxNewTokens = new Option<int>("--max-new-tokens")
        {
            Description = "Generation tasks (gsm8k): token budget per item; limit items with gsm8k:FILE,limit=N",
            DefaultValueFactory = _ => EvalOptions.Default.MaxNewTokens,
        };
        var bootstrap = new Option<int>("--bootstrap")
        {
            Description = "Bootstrap resamples of the similarity block choice (seeded by --seed; 0 = none)",
            DefaultValueFactory = _ => 0,
        };
        var repair = new Option<string?>("--repair")
        {
            Description = "Also evaluate every pruned variant repaired without training (docs/repair.md): linear and/or cosine, " +
                          "e.g. linear,cosine; calibration: --calibration (default --data), --calibration-chunks × --seq-len",
        };
        var offload = new Option<bool>("--offload")
        {
            Description = "Stream layers from the checkpoint instead of keeping the model resident (the same rows, slower); " +
                          "chosen automatically when the resident model does not fit (not with --efficiency, which times a resident model)",
        };
        var prefixCache = new Option<int>("--prefix-cache-mb")
        {
            Description = "MiB of residual streams kept so that variants sharing their first layers run them once (the same rows " +
                          "for any value; 0 = no sharing); OUT/layer_forwards.json counts the layer forwards run and saved",
            DefaultValueFactory = _ => (int)(SweepPrefixes.DefaultBudgetBytes >> 20),
        };
        var json = Cli.JsonOption();
        var unit = new Option<string>("--unit")
        {
            Description = "Units whose variants are swept, comma-separated: layer (default: whole layers, as without this flag) " +
                          "plus attention, mlp and/or sublayer (both kinds ranked together), e.g. attention,mlp,layer. Sublayer " +
                          "units take the strategies similarity, greedy, deepest, random of --strategies, n = sublayers removed; " +
                          "every row then carries its unit, removed parameters / decoder parameters (the common x axis of the " +
                          "report's unit curves) and KV-cache bytes per token",
            DefaultValueFactory = _ => "layer",
        };
        var cmd = new Command("sweep", "From a model to the paper's figures: similarity once, then every strategy × block size " +
            "evaluated with layers skipped in memory; results.json/.csv, plots and report.md")
        {
            model, data, samples, seqLen, batch, tasks, strategies, n, fractions, limit, maxChunks, seed, seeds, protectLast,
            calibration, calibrationChunks, efficiency, efficiencyRepeats, efficiencyThreads, output, force, healSteps,
            healData, healQuant, healBatch, healRank, healLr, generate, prompts, generateTokens, maxNewTokens, bootstrap, offload, json,
            repair, unit, prefixCache,
        };
        var cluster = new SweepCluster(); // --stage, --shard, --slurm, --kubernetes (docs/cluster.md)
        cluster.AddTo(cmd);
        return cmd.WithAction(p =>
        {
            string? modelDir = p.GetValue(model) is { } given ? Cli.ResolveModel(p, given) : null;
            string? dataPath = p.GetValue(data);
            string? taskList = p.GetValue(tasks);
            string? healText = p.GetValue(healData);
            Cli.Require(p.GetValue(healSteps) >= 0, $"--heal-steps {p.GetValue(healSteps)}: must be ≥ 0");
            string quant = p.GetValue(healQuant)!;
            Cli.Require(quant is "nf4" or "none", $"--heal-quant {quant}: expected nf4 or none");
            int? itemLimit = p.GetValue(limit);
            if (modelDir is null)
            {
                modelDir = Samples.Find("kjv-llama-16l");
                if (p.GetValue(healSteps) > 0) healText ??= Samples.Find(Path.Combine("data", "kjv", "train.txt"));
                dataPath ??= Samples.Find(Path.Combine("data", "kjv", "validation.txt"));
                if (taskList is null)
                {
                    taskList = $"loss:{dataPath},mc:{Samples.Find(Path.Combine("data", "kjv-cloze", "test.jsonl"))}";
                    itemLimit ??= 150;
                }
            }
            Cli.Require(dataPath is not null, "--data is required with --model (text for the similarity pass)");
            Cli.ExistingFile(dataPath!, "--data");
            Cli.Require(taskList is not null, "--tasks is required with --model (e.g. loss:val.txt,mc:cloze.jsonl)");
            Cli.Require(p.GetValue(n) is null || p.GetValue(fractions) is null, "give --n or --fractions, not both");
            Cli.Require(p.GetValue(maxChunks) >= 0, $"--max-chunks {p.GetValue(maxChunks)}: must be at least 0 (0 = all)");
            Cli.Require(p.GetValue(batch) >= 1, $"--batch {p.GetValue(batch)}: must be at least 1");
            Cli.Require(p.GetValue(seqLen) >= 2, $"--seq-len {p.GetValue(seqLen)}: must be at least 2");
            Cli.Require(itemLimit is null or >= 1, $"--limit {itemLimit}: must be at least 1");
            Cli.Require(p.GetValue(seeds) is null || p.GetValue(seed) == 0, "give --seed or --seeds, not both");
            Cli.Require(p.GetValue(prefixCache) >= 0, $"--prefix-cache-mb {p.GetValue(prefixCache)}: must be at least 0 (0 = no sharing)");
            Cli.Require(p.GetValue(efficiencyRepeats) >= 1, $"--efficiency-repeats {p.GetValue(efficiencyRepeats)}: must be at least 1");
            IReadOnlyList<string>? promptList = p.GetValue(prompts) is { } pf
                ? SweepGenerations.ReadPrompts(Cli.ExistingFile(pf, "--prompts"))
                : p.GetValue(generate) ? SweepGenerations.DefaultPrompts : null;
            string? calibrationPath = p.GetValue(calibration) is { } cal ? Cli.ExistingFile(cal, "--calibration") : null;
            HealOptions? heal = null;
            if (p.GetValue(healSteps) > 0)
            {
                string healFile = healText ?? throw LayerPruneException.Usage("--heal-data is required with --heal-steps");
                heal = new HealOptions
                {
                    ModelDir = modelDir,
                    OutDir = "",
                    DataPath = Cli.ExistingFile(healFile, "--heal-data"),
                    Steps = p.GetValue(healSteps),
                    Batch = p.GetValue(healBatch),
                    SeqLen = p.GetValue(seqLen),
                    Rank = p.GetValue(healRank),
                    Alpha = 2 * p.GetValue(healRank),
                    LearningRate = p.GetValue(healLr),
                    SaveEvery = 25,
                    Quant = quant == "nf4" ? BaseQuantization.Nf4 : BaseQuantization.None,
                };
            }
            var options = new SweepOptions
            {
                ModelDir = modelDir,
                DataPath = dataPath!,
                Samples = p.GetValue(samples),
                SeqLen = p.GetValue(seqLen),
                Batch = p.GetValue(batch),
                Tasks = SplitTasks(taskList!),
                Strategies = p.GetValue(strategies)!.Split(',', Split),
                Ns = p.GetValue(n) is { } ns ? ParseNs(ns) : null,
                Fractions = p.GetValue(fractions) is { } fs ? ParseFractions(fs) : null,
                Seed = p.GetValue(seed),
                Seeds = p.GetValue(seeds) is { } ss ? ParseSeeds(ss) : null,
                ProtectLast = p.GetValue(protectLast),
                CalibrationPath = calibrationPath,
                CalibrationChunks = p.GetValue(calibrationChunks),
                Efficiency = p.GetValue(efficiency) ? new EfficiencyOptions { Repeats = p.GetValue(efficiencyRepeats) } : null,
                EfficiencyThreads = p.GetValue(efficiency) ? p.GetValue(efficiencyThreads) : null,
                OutDir = p.GetValue(output)!,
                Force = p.GetValue(force),
                Heal = heal,
                Prompts = promptList,
                GenerationTokens = p.GetValue(generateTokens),
                Bootstrap = p.GetValue(bootstrap),
                Repair = p.GetValue(repair) is { } rm ? rm.Split(',', StringSplitOptions.TrimEntries) : null,
                Units = p.GetValue(unit)!.Trim() is "layer" ? null
                    : p.GetValue(unit)!.Split(',', Split).Select(u => PruneUnits.Parse(u, "--unit")).ToList(),
                PrefixCacheBytes = (long)p.GetValue(prefixCache) << 20,
                Eval = EvalOptions.Default with
                {
                    MaxNewTokens = p.GetValue(maxNewTokens),
                    Limit = itemLimit,
                    BatchSize = p.GetValue(batch),
                    SeqLen = p.GetValue(seqLen),
                    MaxChunks = p.GetValue(maxChunks) == 0 ? null : p.GetValue(maxChunks),
                },
            };
            options = cluster.Apply(p, options);
            if (cluster.WriteScripts(p, options, p.GetValue(json)) is int written) return written;
            var tok = Cli.LoadTokenizer(modelDir);
            Cli.Require(!(p.GetValue(offload) && p.GetValue(efficiency)),
                "--offload: --efficiency times a resident model; drop one of them");
            using var lm = Cli.LoadModel(p, modelDir, p.GetValue(offload), Workload.Evaluate, options.Eval.BatchSize, options.SeqLen,
                canOffload: !p.GetValue(efficiency));
            bool existed = Directory.Exists(options.OutDir);
            SweepResult result;
            try
            {
                result = Run(lm, tok, options, p);
            }
            catch (IOException e) when (DiskFull.Is(e))
            {
                throw DiskFull.Explain(e, options.OutDir, KeepOnlyResumableState(options.OutDir, existed));
            }
            if (SweepCluster.StageDone(options, result, p.GetValue(json)) is int staged) return staged;
            if (p.GetValue(json))
            {
                Cli.PrintJson(result.ToJson());
                return 0;
            }
            Console.Out.WriteLine(File.ReadAllText(Path.Combine(options.OutDir, "report.md")));
            Console.Error.WriteLine($"wrote {Path.GetFullPath(options.OutDir)}: results.json, results.csv, report.md, *.png");
            if (SweepPrefixes.Summary(options.OutDir) is { } forwards) Console.Error.WriteLine(forwards);
            return 0;
        });
    }

    /// <summary>Runs the sweep; the library's parameter-named errors become flag-named usage errors.</summary>
    static SweepResult Run(LayerPrune.Modeling.CausalLM lm, LayerPrune.Tokenization.ITextTokenizer tok, SweepOptions options,
        ParseResult p)
    {
        try
        {
            return SweepRunner.Run(lm, tok, options, SpectreProgressSink.ForCli(p.GetValue(Cli.Quiet)));
        }
        catch (ArgumentException e) when (e.ParamName is { } name && Flags.TryGetValue(name, out var flag))
        {
            throw LayerPruneException.Usage($"{flag}: {BareMessage(e)}");
        }
    }

    /// <summary>An ArgumentException's message without .NET's " (Parameter 'x')" suffix and actual-value line.</summary>
    static string BareMessage(ArgumentException e)
    {
        string m = e.Message.Split('\n')[0].Trim();
        string suffix = $" (Parameter '{e.ParamName}')";
        return m.EndsWith(suffix, StringComparison.Ordinal) ? m[..^suffix.Length] : m;
    }

    /// <summary>
    /// After a failed write: half-written temp files go; a folder this run created goes too unless it holds finished rows.
    /// </summary>
    static string KeepOnlyResumableState(string outDir, bool existedBefore)
    {
        if (!Directory.Exists(outDir))
            return "nothing was kept";
        OutputFile.RemoveLeftovers(outDir);
        if (File.Exists(Path.Combine(outDir, "results.json")))
            return $"finished rows are kept in {Path.Combine(outDir, "results.json")}: rerun the same command to resume";
        if (existedBefore)
            return "nothing new was kept";
        Directory.Delete(outDir, recursive: true);
        return "nothing was kept";
    }

    /// <summary>The specs of a comma-separated --tasks list; a part NAME=VALUE (no ':' before its '=') is an option of the
    /// spec before it, so "loss:v.txt,gsm8k:g/,shots=1,limit=5" is two specs.</summary>
    public static List<string> SplitTasks(string list)
    {
        ArgumentNullException.ThrowIfNull(list);
        var specs = new List<string>();
        foreach (var part in list.Split(',', Split))
        {
            int eq = part.IndexOf('=');
            bool option = eq > 0 && part.IndexOf(':') is var colon && (colon < 0 || colon > eq);
            if (option && specs.Count > 0) specs[^1] += "," + part;
            else specs.Add(part);
        }
        return specs;
    }

    static List<int> ParseNs(string s)
    {
        var result = new List<int>();
        foreach (var part in s.Split(',', Split))
        {
            var b = part.Split('-');
            if (b.Length > 2 || !b.All(x => int.TryParse(x, out _)))
                throw LayerPruneException.Usage($"--n {s}: expected sizes like 1-15 or 2,4,8");
            int lo = int.Parse(b[0]);
            int hi = int.Parse(b[^1]);
            result.AddRange(Enumerable.Range(lo, Math.Max(0, hi - lo + 1)));
        }
        return result;
    }

    static List<int> ParseSeeds(string s)
    {
        var parts = s.Split(',', Split);
        if (parts.Length == 0 || !parts.All(x => int.TryParse(x, NumberStyles.Integer, CultureInfo.InvariantCulture, out _)))
            throw LayerPruneException.Usage($"--seeds {s}: expected integers like 0,1,2");
        return parts.Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToList();
    }

    static List<double> ParseFractions(string s)
    {
        try
        {
            return s.Split(',', Split).Select(x => double.Parse(x, CultureInfo.InvariantCulture)).ToList();
        }
        catch (FormatException)
        {
            throw LayerPruneException.Usage($"--fractions {s}: expected numbers like 0.1,0.25");
        }
    }
}

/// <summary>Finds the embedded samples/ folder: from the working directory or the installed binary, walking up.</summary>
public static class Samples
{
    /// <summary>The absolute path of samples/<paramref name="relative"/>; a <see cref="LayerPruneException"/> when absent.</summary>
    public static string Find(string relative)
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
            {
                string candidate = Path.Combine(d.FullName, "samples", relative);
                if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
            }
        throw new LayerPruneException(
            $"the embedded sample 'samples/{relative}' was not found (run from the LayerPrune checkout or pass --model/--data/--tasks)");
    }
}
