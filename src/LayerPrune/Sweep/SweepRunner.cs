using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Reporting;
using LayerPrune.Similarity;
using LayerPrune.Tokenization;
using TorchSharp;

namespace LayerPrune.Sweep;

/// <summary>
/// One command from a model to the paper's figures: one similarity pass for all n, then every (strategy, n) variant
/// evaluated by skipping layers in memory (no checkpoint written). Every task is prepared (tokenized) once and scored
/// per variant. Results are appended after each variant (results.json / results.csv, written atomically), so a rerun
/// of the same sweep skips finished variants.
/// </summary>
public static class SweepRunner
{
    /// <summary>Runs (or resumes) the sweep of <paramref name="model"/>; progress goes to <paramref name="progress"/>
    /// (null: nowhere). Invalid options throw <see cref="ArgumentException"/> naming the <see cref="SweepOptions"/>
    /// property; results of a different sweep in <see cref="SweepOptions.OutDir"/> throw <see cref="LayerPruneException"/>
    /// unless <see cref="SweepOptions.Force"/>.</summary>
    public static SweepResult Run(CausalLM model, ITextTokenizer tok, SweepOptions o, IProgressSink? progress = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(o);
        var sink = progress ?? NullProgressSink.Instance;
        var ns = BlockSizes(o, model.NumLayers);
        var tasks = o.Tasks.Select(EvalTasks.Parse).ToList();
        int L = model.NumLayers;

        // A concurrent sweep into the same folder fails at once.
        using var outLock = SweepStages.Lock(o);
        var config = ConfigJson(o, ns);
        var stage = new SweepStages(o, config); // a shard or merge reads the plan (merge: every shard) before writing anything
        Directory.CreateDirectory(o.OutDir);
        string resultsPath = Path.Combine(o.OutDir, "results.json");
        List<VariantRow> rows = [];
        if (o.Stage is null && File.Exists(resultsPath) && !o.Force)
        {
            // Parsed once: a truncated or edited file says how to start over; another sweep's results are refused.
            var previous = ReadResults(resultsPath, o.OutDir);
            if (!JsonNode.DeepEquals(previous["config"], config))
                throw LayerPruneException.Failed(nameof(SweepOptions.OutDir), o.OutDir,
                    "holds results of a different sweep (other model, data, tasks or options); "
                    + $"use `{nameof(SweepOptions.Force)}` to start over or another `{nameof(SweepOptions.OutDir)}`");
            rows = SweepFiles.Rows(previous, resultsPath);
        }
        rows = stage.ResumeRows(rows);

        // 1. One similarity pass gives l*(n) for every n (cached in the output folder); bi reads the same pass.
        SimilarityResult? similarity = null;
        SelectionCost? similarityCost = null;
        string costPath = Path.Combine(o.OutDir, "similarity_cost.json");
        if (o.Strategies.Contains("similarity"))
        {
            string simPath = Path.Combine(o.OutDir, "similarity.json");
            similarity = (rows.Count > 0 || stage.Prepared) && File.Exists(simPath) ? ReadSimilarity(simPath) : null;
            similarityCost = similarity is null ? null : ReadCost(costPath);
            if (similarity is null)
            {
                var samples = SampleLoader.Load(o.DataPath, tok, o.Samples, o.SeqLen);
                var clock = Stopwatch.StartNew();
                using (var p = ProgressReporter.Start("similarity", samples.Count, "samples", sink, clock: null))
                    similarity = LayerSimilarity.Compute(model, samples, o.Batch, o.Strategies.Contains(BlockInfluenceStrategy.Name),
                        n => p.Advance(n));
                long tokens = samples.Sum(x => (long)x.Length);
                similarityCost = SelectionCost.SimilarityPass(samples.Count, tokens, L, clock.Elapsed.TotalSeconds);
                var bootstrap = o.Bootstrap > 0 ? SimilarityBootstrap.Run(similarity, o.Bootstrap, o.Seed, o.ProtectLast) : null;
                SimilarityReport.Write(o.OutDir, similarity, o.ModelDir, o.DataPath, o.SeqLen, protectLast: o.ProtectLast,
                    bootstrap: bootstrap);
                OutputFile.WriteAllText(costPath, similarityCost.ToJson().ToJsonString());
            }
        }

        // 2. Every task's requests, built once for all variants.
        var prepared = tasks.Select(t => t.Prepare(tok, o.Eval)).ToList();
        var protocol = ResultsJson.Protocol(prepared);
        var prompts = o.Prompts?.Select(x => tok.Encode(x)).ToList();

        // Wall-clock selection seconds live beside the rows (rows stay identical between a resumed and an uninterrupted run).
        string secondsPath = stage.SecondsPath ?? Path.Combine(o.OutDir, SecondsFile);
        var seconds = rows.Count > 0 ? ReadSeconds(secondsPath) : [];
        stage.RemoveLeftovers(); // temp files of a run killed while writing one

        // 3. Variants: the unpruned baseline, then each (n, strategy, seed); healed copies after them. A strategy does its
        // measuring (Prepare) only when one of its variants is still to be evaluated.
        var variants = new List<Variant> { new("none", 0, null) };
        foreach (int n in ns)
            foreach (var s in o.Strategies)
                foreach (int? seed in s == "random" && o.Seeds is { } seeds ? seeds.Select(x => (int?)x) : [null])
                    variants.Add(new Variant(s, n, seed));
        var done = rows.Select(r => r.Key).ToHashSet();
        var jobs = variants.Select(v => (v, healed: false))
            .Concat(o.Heal is null ? [] : variants.Where(v => v.N > 0).Select(v => (v, healed: true))).ToList();
        var selected = stage.Select(jobs.Select(j => (j.v.Key(j.healed), j.v.N, j.healed)).ToList(), prepared, L);
        if (o.Stage == SweepStage.Prepare) return new SweepResult(config, protocol, rows);
        jobs = jobs.Where((_, i) => selected[i]).ToList(); // a shard's share
        var planners = new Dictionary<(string, int?), Func<int, PrunePlan>>();
        Func<int, PrunePlan> Planner(Variant v)
        {
            if (planners.TryGetValue((v.Strategy, v.Seed), out var f)) return f;
            var inputs = new StrategyInputs
            {
                Model = model,
                Similarity = similarity,
                SimilaritySamples = () => SampleLoader.Load(o.DataPath, tok, o.Samples, o.SeqLen),
                CalibrationChunks = () => PreTokenized.LossChunks(o.CalibrationPath ?? o.DataPath, tok, o.SeqLen,
                    o.CalibrationChunks, model.Config.VocabSize),
                ProtectLast = o.ProtectLast,
                BatchSize = o.Batch,
                Seed = v.Seed ?? o.Seed,
                Progress = sink,
            };
            f = PruneStrategies.Prepare(v.Strategy, inputs, ns.Max());
            planners[(v.Strategy, v.Seed)] = f;
            return f;
        }
        List<int[]>? repairChunks = null;
        void RepairRows(Variant v, bool healed) // after each unrepaired variant, its repaired rows (SweepRepair)
        {
            if (healed || v.N == 0 || o.Repair is null) return;
            foreach (var method in o.Repair)
            {
                var key = VariantRow.KeyOf(SweepRepair.Series(v.Strategy, method), v.N, false, v.Seed);
                if (done.Contains(key)) continue;
                var plan = Planner(v)(v.N);
                repairChunks ??= PreTokenized.LossChunks(o.CalibrationPath ?? o.DataPath, tok, o.SeqLen, o.CalibrationChunks,
                    model.Config.VocabSize);
                var r = SweepRepair.Evaluate(model, plan, method, repairChunks, o, () => (Evaluate(prepared, model, plan.Kept, sink),
                    prompts is null ? null : SweepGenerations.Run(model, tok, prompts, o.GenerationTokens, plan.Kept)));
                if (r is not { } fitted) continue; // the plan removes layer 0: nothing precedes the cut
                var (metrics, generations) = fitted.Result;
                if (generations is not null)
                    metrics[SweepGenerations.Column] = SweepGenerations.Degeneration(generations.Select(g => g.TokenIds));
                rows.Add(new VariantRow
                {
                    Strategy = SweepRepair.Series(v.Strategy, method), N = v.N, Fraction = plan.Fraction, Removed = plan.Removed,
                    Seed = v.Seed, SelectionCost = fitted.Cost with { Seconds = double.NaN }, Metrics = metrics, Generations = generations,
                });
                stage.WriteRows(new SweepResult(config, protocol, rows));
                seconds[key] = fitted.Cost.Seconds;
                WriteSeconds(secondsPath, seconds);
            }
        }
        // Residual streams shared by variants' first layers are computed once; layer forwards per row beside the rows.
        using (var prefixes = SweepPrefixes.Attach(model, o.PrefixCacheBytes, o.OutDir, rows.Count > 0))
        using (var bar = ProgressReporter.Start("sweep", jobs.Count, "variants", sink, clock: null))
        {
            bar.Advance(jobs.Count(j => done.Contains(j.v.Key(j.healed))));
            foreach (var (v, healed) in jobs)
            {
                if (done.Contains(v.Key(healed))) { RepairRows(v, healed); continue; }
                var plan = v.N == 0 ? null : Planner(v)(v.N);
                prefixes.BeginRow();
                OrderedDictionary<string, double> metrics;
                IReadOnlyList<Generation>? generations = null;
                if (!healed)
                {
                    metrics = Evaluate(prepared, model, plan?.Kept, sink, SuiteSweep.LmEvalWriter(o, v.Key(healed)));
                    if (prompts is not null) generations = SweepGenerations.Run(model, tok, prompts, o.GenerationTokens, plan?.Kept);
                }
                else
                {
                    using var healedModel = HealVariant(model, plan!, v, o);
                    metrics = Evaluate(prepared, healedModel, null, sink, SuiteSweep.LmEvalWriter(o, v.Key(healed)));
                    if (prompts is not null) generations = SweepGenerations.Run(healedModel, tok, prompts, o.GenerationTokens, null);
                }
                if (generations is not null)
                    metrics[SweepGenerations.Column] = SweepGenerations.Degeneration(generations.Select(g => g.TokenIds));
                var (efficiency, reference) = healed || o.Efficiency is null ? (null, null) : MeasureEfficiency(model, plan, v, o);
                rows.Add(UnitSweep.Annotate(new VariantRow
                {
                    Strategy = v.Strategy,
                    N = v.N,
                    Fraction = plan?.Fraction ?? 0.0,
                    Removed = plan?.Removed ?? [],
                    Healed = healed,
                    AngularDistance = v.Strategy == "similarity" ? plan?.Distance : null,
                    Seed = v.Seed,
                    SelectionCost = plan is null || healed ? null : CostOf(plan, v.Strategy, similarityCost) is { } cost
                        ? cost with { Seconds = double.NaN } // as results.json holds it (no wall-clock time)
                        : null,
                    Metrics = metrics,
                    Efficiency = efficiency,
                    EfficiencyReference = reference,
                    Generations = generations,
                }, o, model)); // a sweep over units: unit, parameter fraction, KV bytes per token
                stage.WriteRows(new SweepResult(config, protocol, rows));
                if (!healed) prefixes.EndRow(v.Key(false));
                if (plan is not null && !healed && CostOf(plan, v.Strategy, similarityCost) is { } timed)
                {
                    seconds[v.Key(false)] = timed.Seconds;
                    WriteSeconds(secondsPath, seconds); // after the rows: the results are what a full disk must not lose
                }
                bar.Advance(1, $"{(v.N == 0 ? "unpruned" : v.Strategy)} n={v.N}{(v.Seed is int sd ? $" seed {sd}" : "")}" +
                    (healed ? " healed" : ""));
                RepairRows(v, healed);
            }
        }
        // Sublayer units (attention, mlp, sublayer): their variants after the whole layers' (UnitSweep).
        UnitSweep.Run(model, tok, o, rows, prepared, prompts, sink, () => stage.WriteRows(new SweepResult(config, protocol, rows)));

        // 4. Figures and the report.
        var result = new SweepResult(config, protocol, rows);
        if (o.Stage == SweepStage.Shard)
        {
            stage.WriteRows(result); // also when the shard has no variants: merge finds it done
            return result;
        }
        if (o.Stage == SweepStage.Merge)
        {
            stage.WriteMerged(result, secondsPath, WriteSeconds, ReadSeconds);
            seconds = ReadSeconds(secondsPath);
        }
        WriteFigures(o, result, L, prepared, seconds);
        return result;
    }

    /// <summary>OUT/selection_seconds.json: row key → wall-clock seconds of the strategy's measuring for that row
    /// (NaN → null).</summary>
    public const string SecondsFile = "selection_seconds.json";

    static Dictionary<string, double> ReadSeconds(string path)
    {
        try
        {
            if (!File.Exists(path)) return [];
            return JsonNode.Parse(File.ReadAllText(path))!.AsObject()
                .ToDictionary(kv => kv.Key, kv => kv.Value is null ? double.NaN : (double)kv.Value);
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException or FormatException)
        {
            return []; // informational only: a damaged file loses the seconds, not the sweep
        }
    }

    static void WriteSeconds(string path, Dictionary<string, double> seconds)
    {
        var json = new JsonObject();
        foreach (var (k, v) in seconds) json[k] = double.IsFinite(v) ? v : null;
        OutputFile.WriteAllText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The block sizes to sweep (sorted, distinct); <see cref="ArgumentException"/> naming the option when invalid.</summary>
    public static List<int> BlockSizes(SweepOptions o, int layers)
    {
        ArgumentNullException.ThrowIfNull(o);
        foreach (var s in o.Strategies)
            if (!SweepOptions.KnownStrategies.Contains(s))
                throw new ArgumentException($"unknown strategy '{s}' (supported: {string.Join(", ", SweepOptions.KnownStrategies)})",
                    nameof(SweepOptions.Strategies));
        if (o.Seeds is { } seeds && (seeds.Count == 0 || seeds.Distinct().Count() != seeds.Count))
            throw new ArgumentException("give one or more distinct seeds", nameof(SweepOptions.Seeds));
        if (o.CalibrationChunks < 1)
            throw new ArgumentOutOfRangeException(nameof(SweepOptions.CalibrationChunks), o.CalibrationChunks, "must be at least 1");
        if (o.EfficiencyThreads is < 1)
            throw new ArgumentOutOfRangeException(nameof(SweepOptions.EfficiencyThreads), o.EfficiencyThreads, "must be at least 1");
        if (o.Prompts is { } ps && (ps.Count == 0 || ps.Any(string.IsNullOrWhiteSpace)))
            throw new ArgumentException("give one or more non-empty prompts", nameof(SweepOptions.Prompts));
        if (o.GenerationTokens < 1)
            throw new ArgumentOutOfRangeException(nameof(SweepOptions.GenerationTokens), o.GenerationTokens, "must be at least 1");
        if (o.Bootstrap < 0)
            throw new ArgumentOutOfRangeException(nameof(SweepOptions.Bootstrap), o.Bootstrap, "must be at least 0 (0 = none)");
        if (o.Bootstrap > 0 && !o.Strategies.Contains("similarity"))
            throw new ArgumentException("needs the similarity strategy, whose block choice it resamples",
                nameof(SweepOptions.Bootstrap));
        o.Efficiency?.Validate();
        o.Eval.Validate();
        SweepRepair.Validate(o);
        UnitSweep.Validate(o);
        var sizes = o.Fractions is { } fr
            ? fr.Select(f => PrunePlan.BlockSizeFromFraction(f, layers))
            : o.Ns ?? Enumerable.Range(1, layers - 1);
        var ns = sizes.Distinct().Order().ToList();
        string param = o.Fractions is null ? nameof(SweepOptions.Ns) : nameof(SweepOptions.Fractions);
        foreach (int n in ns)
            if (n < 1 || n >= layers)
                throw new ArgumentOutOfRangeException(param, n,
                    $"block size {n} is out of range 1..{layers - 1} (the model has {layers} layers)");
        return ns;
    }

    /// <summary>One (strategy, n, seed) point of the sweep; the unpruned model is ("none", 0).</summary>
    sealed record Variant(string Strategy, int N, int? Seed)
    {
        public string Key(bool healed) => VariantRow.KeyOf(Strategy, N, healed, Seed);
    }

    /// <summary>The plan's recorded selection cost; the similarity strategies' is the sweep's own similarity pass.</summary>
    static SelectionCost? CostOf(PrunePlan plan, string strategy, SelectionCost? similarityPass)
    {
        if (strategy is "similarity" && similarityPass is not null) return similarityPass;
        if (strategy is BlockInfluenceStrategy.Name && similarityPass is not null && plan.Selection?["cost"] is JsonObject bc
            && (long)bc["tokens"]! == 0)
            return similarityPass; // bi read the sweep's pass
        return plan.Selection?["cost"] is JsonObject c ? VariantRow.CostFromJson(c) : null;
    }

    static SelectionCost? ReadCost(string path)
    {
        try
        {
            return File.Exists(path) ? VariantRow.CostFromJson(JsonNode.Parse(File.ReadAllText(path))!.AsObject()) : null;
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    /// <summary>
    /// The variant and the unpruned model timed interleaved in one <see cref="EfficiencyMeter.Measure"/> call (each variant
    /// gets its own same-run reference); the unpruned row is measured alone and is its own reference (returned as null).
    /// </summary>
    static (EfficiencyResult? Result, EfficiencyResult? Reference) MeasureEfficiency(CausalLM model, PrunePlan? plan, Variant v,
        SweepOptions o)
    {
        int threads = torch.get_num_threads();
        if (o.EfficiencyThreads is int t) torch.set_num_threads(t);
        try
        {
            var targets = new List<EfficiencyTarget> { new("unpruned", model) };
            if (plan is not null) targets.Add(new EfficiencyTarget(v.Key(false), model, plan.Kept));
            var r = EfficiencyMeter.Measure(targets, o.Efficiency!);
            return plan is null ? (r[0], null) : (r[1], r[0]);
        }
        finally
        {
            torch.set_num_threads(threads);
        }
    }

    /// <summary>Every task's metrics (<see cref="MetricInfo.Column"/> → value) for the model running only
    /// <paramref name="kept"/> (all layers when null).</summary>
    internal static OrderedDictionary<string, double> Evaluate(List<IPreparedTask> tasks, CausalLM model, IReadOnlyList<int>? kept,
        IProgressSink sink, Action<List<IPreparedTask>, List<TaskScore>>? onScores = null)
    {
        var metrics = new OrderedDictionary<string, double>();
        var scores = new List<TaskScore>();
        foreach (var task in tasks)
        {
            var score = task.Score(model, kept, sink);
            scores.Add(score);
            foreach (var m in task.Metrics) metrics[m.Column] = score.Values[m.Key];
        }
        onScores?.Invoke(tasks, scores);
        return metrics;
    }

    /// <summary>
    /// Writes the variant's pruned checkpoint and heals it under OUT/variants/STRATEGY-nN/ (both steps resumable: an
    /// existing pruned folder is reused and an interrupted heal continues from its checkpoint), then loads the merged model.
    /// </summary>
    static CausalLM HealVariant(CausalLM source, PrunePlan plan, Variant v, SweepOptions o)
    {
        string seed = v.Seed is int s ? $"-seed{s}" : "";
        string dir = Path.Combine(o.OutDir, "variants", $"{v.Strategy}-n{v.N}{seed}");
        string pruned = Path.Combine(dir, "pruned");
        string healed = Path.Combine(dir, "healed");
        if (!Directory.Exists(pruned)) CheckpointPruner.Write(source.Checkpoint, plan, pruned);
        if (!Directory.Exists(healed))
            Healer.Run(o.Heal! with { ModelDir = pruned, OutDir = healed, Resume = true, Device = source.Device, Dtype = source.Dtype });
        return CausalLM.Load(Path.Combine(healed, "merged"), source.Device, source.Dtype);
    }

    /// <summary>The sweep's settings as results.json records them (a rerun resumes only when they are equal).</summary>
    public static JsonObject ConfigJson(SweepOptions o, IReadOnlyList<int> ns)
    {
        ArgumentNullException.ThrowIfNull(o);
        var config = new JsonObject
        {
            ["model"] = Path.GetFullPath(o.ModelDir),
            ["data"] = Path.GetFullPath(o.DataPath),
            ["samples"] = o.Samples,
            ["seq_len"] = o.SeqLen,
            ["tasks"] = new JsonArray(o.Tasks.Select(t => (JsonNode?)t).ToArray()),
            ["strategies"] = new JsonArray(o.Strategies.Select(s => (JsonNode?)s).ToArray()),
            ["n"] = new JsonArray(ns.Select(n => (JsonNode?)n).ToArray()),
            ["seed"] = o.Seed,
            ["limit"] = o.Eval.Limit,
            ["max_chunks"] = o.Eval.MaxChunks,
            ["heal"] = o.Heal is null ? null : HealJson(o.Heal),
            ["indexing"] = "removed = 0-based layer indices of the source model; fraction = n / L",
        };
        // Settings added later are recorded only when used, so that earlier sweeps of the same command still resume.
        if (o.Seeds is { } seeds) config["seeds"] = new JsonArray(seeds.Select(x => (JsonNode?)x).ToArray());
        if (o.ProtectLast) config["protect_last"] = true;
        if (o.Prompts is { } prompts)
        {
            config["prompts"] = new JsonArray(prompts.Select(x => (JsonNode?)x).ToArray());
            config["generation_tokens"] = o.GenerationTokens;
        }
        if (o.Tasks.Any(t => EvalTasks.Find(t.Split(':')[0].Trim().ToLowerInvariant())?.Generates == true))
            config["max_new_tokens"] = o.Eval.MaxNewTokens;
        if (o.Bootstrap > 0) config["bootstrap"] = o.Bootstrap;
        if (o.Repair is { } repair) config["repair"] = new JsonArray(repair.Select(x => (JsonNode?)x).ToArray());
        if (o.Strategies.Any(PruneStrategies.NeedsCalibration) || o.Repair is not null)
        {
            config["calibration"] = Path.GetFullPath(o.CalibrationPath ?? o.DataPath);
            config["calibration_chunks"] = o.CalibrationChunks;
        }
        if (o.Efficiency is { } e)
        {
            config["efficiency"] = new JsonObject
            {
                ["prompt_length"] = e.PromptLength,
                ["decode_tokens"] = e.DecodeTokens,
                ["warmup"] = e.Warmup,
                ["repeats"] = e.Repeats,
                ["seed"] = e.Seed,
                ["threads"] = o.EfficiencyThreads,
            };
        }
        UnitSweep.AddConfig(config, o);
        return config;
    }

    static JsonObject HealJson(HealOptions h) => new()
    {
        ["data"] = Path.GetFullPath(h.DataPath),
        ["steps"] = h.Steps,
        ["batch"] = h.Batch,
        ["seq_len"] = h.SeqLen,
        ["rank"] = h.Rank,
        ["alpha"] = h.Alpha,
        ["dropout"] = h.Dropout,
        ["lr"] = h.LearningRate,
        ["quant"] = h.Quant.ToString().ToLowerInvariant(),
        ["seed"] = h.Seed,
    };

    /// <summary>An earlier run's results.json: a truncated or edited file is a one-line error that says how to start over.</summary>
    static JsonObject ReadResults(string path, string outDir)
    {
        string problem;
        try
        {
            var results = JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
            var rows = results?["rows"] as JsonArray;
            int bad = rows?.ToList().FindIndex(r => !IsRow(r)) ?? -1;
            if (results?["config"] is JsonObject && rows is not null && bad < 0) return results;
            problem = rows is null ? "expected an object with 'config' and 'rows'" : $"row {bad + 1} lacks strategy, n, healed or removed";
        }
        catch (JsonException e) { problem = e.Message; }
        throw LayerPruneException.Mentioning(
            $"{path}: damaged resume state ({problem}); delete {outDir} or rerun with `Force` to start over");
    }

    static bool IsRow(JsonNode? r) => r is JsonObject row && row["strategy"]?.GetValueKind() == JsonValueKind.String
        && row["n"]?.GetValueKind() == JsonValueKind.Number && row["healed"]?.GetValueKind() is JsonValueKind.True or JsonValueKind.False
        && row["removed"] is JsonArray;

    static SimilarityResult? ReadSimilarity(string path)
    {
        try
        {
            var j = JsonNode.Parse(File.ReadAllText(path))!;
            var m = j["matrix"]!.AsArray();
            var matrix = new double[m.Count, m.Count];
            for (int a = 0; a < m.Count; a++)
                for (int b = 0; b < m.Count; b++)
                    matrix[a, b] = (double)m[a]![b]!;
            return new SimilarityResult
            {
                Matrix = matrix, Samples = (int)j["samples"]!,
                // bi in a resumed run or shard
                BlockInfluence = j["block_influence"]?["values"]?.AsArray().Select(x => (double)x!).ToArray(),
            };
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    /// <summary>One figure per metric (its direction, chance level and axis label from <see cref="MetricInfo"/>), the
    /// efficiency figure when measured, and report.md. Random variants of several seeds enter figures and tables as their
    /// mean per n; report.md lists the mean ± std.</summary>
    static void WriteFigures(SweepOptions o, SweepResult result, int L, IReadOnlyList<IPreparedTask> tasks,
        IReadOnlyDictionary<string, double> seconds)
    {
        // Healed variants are their own series ("similarity+heal"), sharing the unpruned baseline.
        var strategies = o.Strategies.Concat(o.Heal is null ? [] : o.Strategies.Select(s => s + "+heal"))
            .Concat(SweepRepair.AllSeries(o)).ToList();
        var baseline = result.Rows.First(r => r.Strategy == "none");
        var reportRows = new List<SweepRow>();
        foreach (var s in strategies)
        {
            reportRows.Add(new SweepRow(s, 0, 0, baseline.Metrics));
            foreach (var g in result.Rows.Where(r => r.Series == s).GroupBy(r => r.N))
                reportRows.Add(new SweepRow(s, g.Key, g.First().Fraction, MeanMetrics(g.ToList())));
        }
        var metrics = tasks.SelectMany(t => t.Metrics).ToList();
        if (o.Prompts is not null) metrics.Add(SweepGenerations.Metric);
        string model = Path.GetFileName(Path.GetFullPath(o.ModelDir).TrimEnd('/'));
        foreach (var m in metrics)
        {
            var series = strategies.Select(s => (s, (IReadOnlyList<(double, double)>)reportRows
                .Where(r => r.Strategy == s && r.Metrics.ContainsKey(m.Column))
                .OrderBy(r => r.N).Select(r => (r.Fraction, r.Metrics[m.Column])).ToList())).ToList();
            double? unpruned = baseline.Metrics.TryGetValue(m.Column, out var b) ? b : null;
            Plots.MetricVsFraction(Path.Combine(o.OutDir, $"{m.Column}.png"),
                $"{model}: {m.Column} vs fraction of {L} layers removed", m.AxisLabel, series, m.Chance, unpruned);
        }
        // Every metric of a strategy relative to its unpruned score, in one figure per strategy.
        var specs = metrics.Select(m => m.Report).ToList();
        foreach (var s in strategies)
        {
            var series = specs.Select(m => (m.Name, (IReadOnlyList<(double, double)>)reportRows
                .Where(r => r.Strategy == s && r.Metrics.ContainsKey(m.Name))
                .OrderBy(r => r.N)
                .Select(r => (r.Fraction, m.Normalize(r.Metrics[m.Name], baseline.Metrics.TryGetValue(m.Name, out var u) ? u : double.NaN)))
                .ToList())).ToList();
            Plots.NormalizedVsFraction(Path.Combine(o.OutDir, NormalizedFigure(s)),
                $"{model}, {s}: every metric relative to unpruned vs fraction of {L} layers removed", series);
        }
        string figures = string.Join(", ", metrics.Select(m => $"![{m.Column}]({m.Column}.png)"));
        figures += ", " + string.Join(", ", strategies.Select(s => $"![{s}: normalized]({NormalizedFigure(s)})"));
        if (File.Exists(Path.Combine(o.OutDir, "similarity.png"))) figures += ", ![similarity](similarity.png)";
        string title = $"LayerPrune sweep: {model} ({L} layers)";
        var costs = new Dictionary<string, SelectionCost?>();
        var strategySeconds = new Dictionary<string, double>();
        foreach (var s in o.Strategies)
        {
            var last = result.Rows.Where(r => r.Strategy == s && !r.Healed && !VariantRow.IsSublayerUnit(r.Unit)).OrderBy(r => r.N)
                .ToList();
            costs[s] = last.LastOrDefault()?.SelectionCost;
            // Random's seeds are summed (each seed is one selection); the others measure once up to the largest n.
            var timed = last.Where(r => r.N == last.LastOrDefault()?.N).Select(r => seconds.GetValueOrDefault(r.Key, double.NaN)).ToList();
            if (timed.Count > 0) strategySeconds[s] = timed.Sum();
        }
        var report = ReportWriter.Build(reportRows, specs, title)
            + ReportWriter.StrategySection(ReportWriter.Evaluate(reportRows, specs), costs, ReportWriter.Areas(reportRows, specs),
                strategySeconds)
            + SweepRepair.ComparisonSection(o, ReportWriter.Evaluate(reportRows, specs), result.Rows, seconds)
            + SeedSection(result.Rows, metrics.Select(m => m.Column).ToList())
            + EfficiencySection(o, result.Rows)
            + UnitSweep.Section(o, result.Rows, metrics, model)
            + GenerationSection(o, result.Rows, L)
            + SuiteSweep.Section(o.OutDir, reportRows, strategies, tasks, model, L)
            + ReportWriter.ProtocolSection(tasks.Select(t => (t.Spec.Kind + ":" + Path.GetFileName(t.Spec.Path), t.Protocol)))
            + "\nFigures: " + figures + "\n";
        OutputFile.WriteAllText(Path.Combine(o.OutDir, "report.md"), report);
    }

    /// <summary>The file of a strategy's normalized figure (every metric relative to unpruned).</summary>
    public static string NormalizedFigure(string series) => $"normalized_{series.Replace('+', '_')}.png";

    /// <summary>"## Generations": per prompt, the unpruned continuation and each strategy's at the swept n nearest to 1/4,
    /// 1/2 and 3/4 of the layers (first seed of random; every variant's continuation is in results.json).</summary>
    static string GenerationSection(SweepOptions o, IReadOnlyList<VariantRow> rows, int layers)
    {
        if (o.Prompts is null) return "";
        var withText = rows.Where(r => r.Generations is not null).ToList();
        if (withText.Count == 0) return "";
        var ns = withText.Where(r => r.N > 0).Select(r => r.N).Distinct().Order().ToList();
        var shown = new[] { 0.25, 0.5, 0.75 }.Select(q => ns.Count == 0 ? 0 : ns.MinBy(n => Math.Abs(n - q * layers))).Distinct().ToList();
        var picked = withText.Where(r => r.N == 0).Take(1).Concat(withText
                .Where(r => r.N > 0 && shown.Contains(r.N))
                .GroupBy(r => (r.Series, r.N)).Select(g => g.First())
                .OrderBy(r => r.Healed).ThenBy(r => r.N))
            .ToList();
        var sb = new StringBuilder("\n## Generations\n\n");
        sb.Append(CultureInfo.InvariantCulture, $"Greedy continuations (at most {o.GenerationTokens} new tokens, stopping at EOS) ")
          .Append(CultureInfo.InvariantCulture, $"of {o.Prompts.Count} fixed prompts. ")
          .Append(CultureInfo.InvariantCulture, $"degeneration = repeated {SweepGenerations.NgramOrder}-gram ")
          .Append("rate of the continuation's token ids (1 − distinct / total); the row's score is its mean over the prompts. ")
          .Append("Shown: n nearest to 1/4, 1/2, 3/4 of the layers; every variant is in results.json (`generations`).\n");
        for (int i = 0; i < o.Prompts.Count; i++)
        {
            sb.Append("\n### ").Append(Md(o.Prompts[i])).Append("\n\n| variant | n | degeneration | continuation |\n|---|---:|---:|---|\n");
            foreach (var r in picked)
            {
                var g = r.Generations![i];
                double d = SweepGenerations.RepeatedNgramRate(g.TokenIds);
                string name = r.N == 0 ? "unpruned" : r.Seed is int sd ? $"{r.Series} seed {sd}" : r.Series;
                string score = double.IsFinite(d) ? d.ToString("0.000", CultureInfo.InvariantCulture) : "–";
                sb.Append(CultureInfo.InvariantCulture, $"| {name} | {r.N} | {score} | {Md(g.Completion)} |\n");
            }
        }
        return sb.ToString();
    }

    static string Md(string s) => s.Replace("\r", "").Replace("\n", " ⏎ ").Replace("|", "\\|");

    /// <summary>The mean of each metric over <paramref name="rows"/> (the seeds of one random n; one row: its metrics).</summary>
    static IReadOnlyDictionary<string, double> MeanMetrics(IReadOnlyList<VariantRow> rows)
    {
        if (rows.Count == 1) return rows[0].Metrics;
        var mean = new OrderedDictionary<string, double>();
        foreach (var k in rows[0].Metrics.Keys)
            mean[k] = rows.Average(r => r.Metrics.TryGetValue(k, out var v) ? v : double.NaN);
        return mean;
    }

    /// <summary>"## Random seeds": per n and metric, mean ± sample std over the seeds (empty without several seeds).</summary>
    static string SeedSection(IReadOnlyList<VariantRow> rows, IReadOnlyList<string> columns)
    {
        var seeded = rows.Where(r => r.Seed is not null).GroupBy(r => (r.Series, r.N)).Where(g => g.Count() > 1).ToList();
        if (seeded.Count == 0) return "";
        var sb = new StringBuilder("\n## Random seeds\n\n");
        sb.Append("Mean ± sample standard deviation over the seeds of each random variant.\n\n");
        sb.Append("| strategy | n | seeds | ").Append(string.Join(" | ", columns)).Append(" |\n");
        sb.Append("|---|---:|---|").Append(string.Concat(columns.Select(_ => "---:|"))).Append('\n');
        foreach (var g in seeded.OrderBy(g => g.Key.Series, StringComparer.Ordinal).ThenBy(g => g.Key.N))
        {
            var seeds = string.Join(",", g.Select(r => r.Seed!.Value));
            sb.Append(CultureInfo.InvariantCulture, $"| {g.Key.Series} | {g.Key.N} | {seeds} |");
            foreach (var c in columns)
            {
                var v = g.Select(r => r.Metrics.TryGetValue(c, out var x) ? x : double.NaN).ToList();
                double mean = v.Average();
                double std = Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Count - 1));
                sb.Append(CultureInfo.InvariantCulture, $" {mean:0.0000} ± {std:0.0000} |");
            }
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The efficiency table and OUT/efficiency.png when the variants were measured (empty otherwise).</summary>
    static string EfficiencySection(SweepOptions o, IReadOnlyList<VariantRow> rows)
    {
        var reference = rows.FirstOrDefault(r => r.Strategy == "none")?.Efficiency;
        if (o.Efficiency is null || reference is null) return "";
        var measured = rows.Where(r => r.N > 0 && r.Efficiency is not null)
            .Select(r => new EfficiencyRow(r.Seed is int s ? $"{r.Series} seed {s}" : r.Series, r.N, r.Fraction, r.Efficiency!,
                r.EfficiencyReference))
            .ToList();
        EfficiencyReport.Plot(Path.Combine(o.OutDir, EfficiencyReport.PlotFile), reference, measured);
        return "\n" + EfficiencyReport.Section(reference, measured);
    }
}
