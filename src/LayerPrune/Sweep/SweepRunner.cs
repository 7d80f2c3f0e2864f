using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Reporting;
using LayerPrune.Similarity;
using LayerPrune.Tokenization;

namespace LayerPrune.Sweep;

public sealed record SweepOptions
{
    public required string ModelDir { get; init; }
    public required string DataPath { get; init; }
    public int Samples { get; init; } = 64;
    public int SeqLen { get; init; } = 256;
    public int Batch { get; init; } = 8;
    public required IReadOnlyList<string> Tasks { get; init; }
    public IReadOnlyList<string> Strategies { get; init; } = ["similarity", "deepest", "shallowest"];
    /// <summary>Block sizes to evaluate; null = every n from 1 to L−1.</summary>
    public IReadOnlyList<int>? Ns { get; init; }
    public IReadOnlyList<double>? Fractions { get; init; }
    public int Seed { get; init; }
    public required string OutDir { get; init; }
    public EvalOptions Eval { get; init; } = new();
    public bool Force { get; init; }
    /// <summary>When set, every pruned variant is also written as a checkpoint, healed (QLoRA) with these settings
    /// (ModelDir/OutDir are filled per variant) and evaluated again as a row with "healed": true.</summary>
    public HealOptions? Heal { get; init; }

    public static readonly string[] KnownStrategies = ["similarity", "deepest", "shallowest", "random"];
}

/// <summary>
/// One command from a model to the paper's figures: one similarity pass for all n, then every (strategy, n) variant
/// evaluated by skipping layers in memory (no checkpoint written). Results are appended after each variant
/// (results.json / results.csv, written atomically), so a rerun of the same command skips finished variants.
/// </summary>
public static class SweepRunner
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static JsonObject Run(CausalLM model, ITextTokenizer tok, SweepOptions o)
    {
        foreach (var s in o.Strategies)
            if (!SweepOptions.KnownStrategies.Contains(s)) throw LayerPruneException.Usage($"--strategies: unknown strategy '{s}' (supported: {string.Join(", ", SweepOptions.KnownStrategies)})");
        foreach (var t in o.Tasks) Evaluator.Validate(t);
        int L = model.NumLayers;
        var ns = (o.Fractions is { } fr ? fr.Select(f => PrunePlan.BlockSizeFromFraction(f, L)) : o.Ns ?? Enumerable.Range(1, L - 1)).Distinct().Order().ToList();
        foreach (int n in ns) if (n < 1 || n >= L) throw LayerPruneException.Usage($"--n: block size {n} is out of range 1..{L - 1} (the model has {L} layers)");

        using var outLock = OutputLock.Acquire(o.OutDir, "--out"); // a concurrent sweep into the same folder fails at once
        Directory.CreateDirectory(o.OutDir);
        var config = ConfigJson(o, ns);
        string resultsPath = Path.Combine(o.OutDir, "results.json");
        var rows = new JsonArray();
        if (File.Exists(resultsPath) && !o.Force)
        {
            var previous = ReadResults(resultsPath, o.OutDir);
            if (JsonNode.DeepEquals(previous["config"], config))
                rows = (JsonArray)previous["rows"]!.DeepClone();
            else
                throw new LayerPruneException($"--out {o.OutDir}: holds results of a different sweep (other model, data, tasks or options); use --force to start over or another --out");
        }

        // 1. One similarity pass gives l*(n) for every n (cached in the output folder).
        SimilarityResult? similarity = null;
        if (o.Strategies.Contains("similarity"))
        {
            string simPath = Path.Combine(o.OutDir, "similarity.json");
            similarity = rows.Count > 0 && File.Exists(simPath) ? ReadSimilarity(simPath) : null;
            if (similarity is null)
            {
                var samples = SampleLoader.Load(o.DataPath, tok, o.Samples, o.SeqLen);
                using var p = ProgressReporter.Start("similarity", samples.Count, "samples");
                similarity = LayerSimilarity.Compute(model, samples, o.Batch, false, n => p.Advance(n));
                SimilarityReport.Write(o.OutDir, similarity, o.ModelDir, o.DataPath, o.SeqLen);
            }
        }

        // 2. Variants: the unpruned baseline, then each (n, strategy).
        var variants = new List<PrunePlan?> { null };
        foreach (int n in ns)
            foreach (var s in o.Strategies)
                variants.Add(s switch
                {
                    "similarity" => PrunePlan.FromSimilarity(similarity!, n),
                    "deepest" => PrunePlan.Deepest(n, L),
                    "shallowest" => PrunePlan.Shallowest(n, L),
                    _ => PrunePlan.RandomBlock(n, L, o.Seed),
                });
        var done = rows.Select(r => Key((string)r!["strategy"]!, (int)r["n"]!, (bool)r["healed"]!)).ToHashSet();
        var jobs = variants.Select(v => (plan: v, healed: false))
            .Concat(o.Heal is null ? [] : variants.Where(v => v is not null).Select(v => (plan: v, healed: true))).ToList();
        using (var progress = ProgressReporter.Start("sweep", jobs.Count, "variants"))
        {
            progress.Advance(jobs.Count(j => done.Contains(Key(j.plan, j.healed))));
            foreach (var (plan, healed) in jobs)
            {
                if (done.Contains(Key(plan, healed))) continue;
                var row = new JsonObject
                {
                    ["n"] = plan?.BlockSize ?? 0, ["fraction"] = plan?.Fraction ?? 0.0, ["strategy"] = plan?.Strategy ?? "none",
                    ["removed"] = new JsonArray((plan?.Removed ?? []).Select(i => (JsonNode?)i).ToArray()),
                    ["healed"] = healed,
                };
                if (plan?.Distance is double d) row["angular_distance"] = d;
                if (!healed)
                    foreach (var (name, value) in Metrics(model, tok, o, plan?.Kept ?? Enumerable.Range(0, L).ToArray())) row[name] = value;
                else
                {
                    using var healedModel = HealVariant(model, plan!, o);
                    foreach (var (name, value) in Metrics(healedModel, tok, o, Enumerable.Range(0, healedModel.NumLayers).ToArray())) row[name] = value;
                }
                rows.Add(row);
                WriteAtomically(resultsPath, new JsonObject { ["config"] = config.DeepClone(), ["rows"] = rows.DeepClone() }.ToJsonString(Indented));
                WriteAtomically(Path.Combine(o.OutDir, "results.csv"), ToCsv(rows));
                progress.Advance(1, $"{plan?.Strategy ?? "unpruned"} n={plan?.BlockSize ?? 0}{(healed ? " healed" : "")}");
            }
        }

        // 3. Figures and the report.
        WriteFigures(o, rows, L);
        return new JsonObject { ["config"] = config, ["rows"] = rows };
    }

    static string Key(PrunePlan? p, bool healed) => Key(p?.Strategy ?? "none", p?.BlockSize ?? 0, healed);
    static string Key(string strategy, int n, bool healed) => $"{strategy}/{n}/{(healed ? "healed" : "raw")}";

    /// <summary>
    /// Writes the variant's pruned checkpoint and heals it under OUT/variants/STRATEGY-nN/ (both steps resumable: an
    /// existing pruned folder is reused and an interrupted heal continues from its checkpoint), then loads the merged model.
    /// </summary>
    static CausalLM HealVariant(CausalLM source, PrunePlan plan, SweepOptions o)
    {
        string dir = Path.Combine(o.OutDir, "variants", $"{plan.Strategy}-n{plan.BlockSize}");
        string pruned = Path.Combine(dir, "pruned"), healed = Path.Combine(dir, "healed");
        if (!Directory.Exists(pruned)) CheckpointPruner.Write(source.Checkpoint, plan, pruned);
        if (!Directory.Exists(healed))
            Healer.Run(o.Heal! with { ModelDir = pruned, OutDir = healed, Resume = true, Device = source.Device, Dtype = source.Dtype });
        return CausalLM.Load(Path.Combine(healed, "merged"), source.Device, source.Dtype);
    }

    /// <summary>Per task: loss → validation_loss; multiple choice → KIND_acc, KIND_acc_norm; gsm8k → gsm8k_exact_match_*.</summary>
    static IEnumerable<(string, double)> Metrics(CausalLM model, ITextTokenizer tok, SweepOptions o, int[] kept)
    {
        var eval = o.Eval with { Layers = kept.Length == model.NumLayers ? null : kept };
        foreach (var spec in o.Tasks)
        {
            var score = Evaluator.Run(model, tok, spec, eval);
            if (score.Name == Evaluator.LossKind) { yield return ("validation_loss", score.Values["validation_loss"]); continue; }
            foreach (var (k, v) in score.Values.Where(kv => !kv.Key.EndsWith("_stderr")))
                yield return ($"{score.Name}_{k}", v);
        }
    }

    public static JsonObject ConfigJson(SweepOptions o, IReadOnlyList<int> ns) => new()
    {
        ["model"] = Path.GetFullPath(o.ModelDir), ["data"] = Path.GetFullPath(o.DataPath), ["samples"] = o.Samples, ["seq_len"] = o.SeqLen,
        ["tasks"] = new JsonArray(o.Tasks.Select(t => (JsonNode?)t).ToArray()),
        ["strategies"] = new JsonArray(o.Strategies.Select(s => (JsonNode?)s).ToArray()),
        ["n"] = new JsonArray(ns.Select(n => (JsonNode?)n).ToArray()), ["seed"] = o.Seed,
        ["limit"] = o.Eval.Limit, ["max_chunks"] = o.Eval.MaxChunks,
        ["heal"] = o.Heal is null ? null : new JsonObject
        {
            ["data"] = Path.GetFullPath(o.Heal.DataPath), ["steps"] = o.Heal.Steps, ["batch"] = o.Heal.Batch, ["seq_len"] = o.Heal.SeqLen,
            ["rank"] = o.Heal.Rank, ["alpha"] = o.Heal.Alpha, ["dropout"] = o.Heal.Dropout, ["lr"] = o.Heal.LearningRate,
            ["quant"] = o.Heal.Quant.ToString().ToLowerInvariant(), ["seed"] = o.Heal.Seed,
        },
        ["indexing"] = "removed = 0-based layer indices of the source model; fraction = n / L",
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
        throw new LayerPruneException($"{path}: damaged resume state ({problem}); delete {outDir} or rerun with --force to start over");
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
            for (int a = 0; a < m.Count; a++) for (int b = 0; b < m.Count; b++) matrix[a, b] = (double)m[a]![b]!;
            return new SimilarityResult { Matrix = matrix, Samples = (int)j["samples"]! };
        }
        catch (Exception e) when (e is JsonException or NullReferenceException or InvalidOperationException or FormatException) { return null; }
    }

    static void WriteAtomically(string path, string text)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }

    static string ToCsv(JsonArray rows)
    {
        var metricNames = rows.SelectMany(r => r!.AsObject().Select(kv => kv.Key)).Distinct()
            .Where(k => k is not ("n" or "fraction" or "strategy" or "removed" or "healed")).ToList();
        var sb = new StringBuilder("strategy,n,fraction,removed,healed," + string.Join(",", metricNames) + "\n");
        foreach (var r in rows)
        {
            var removed = string.Join(" ", r!["removed"]!.AsArray().Select(x => (int)x!));
            sb.Append(CultureInfo.InvariantCulture, $"{r["strategy"]},{r["n"]},{(double)r["fraction"]!:R},{removed},{r["healed"]}");
            foreach (var m in metricNames) sb.Append(',').Append(r[m] is JsonValue v ? v.ToJsonString() : "");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    static void WriteFigures(SweepOptions o, JsonArray rows, int L)
    {
        // Healed variants are their own series ("similarity+heal"), sharing the unpruned baseline.
        static string Series(JsonNode r) => (string)r["strategy"]! + ((bool)r["healed"]! ? "+heal" : "");
        var strategies = o.Strategies.Concat(o.Heal is null ? [] : o.Strategies.Select(s => s + "+heal")).ToList();
        var baseline = rows.First(r => (string)r!["strategy"]! == "none")!;
        var sweepRows = new List<SweepRow>();
        foreach (var s in strategies)
        {
            sweepRows.Add(new SweepRow(s, 0, 0, MetricValues(baseline)));
            foreach (var r in rows.Where(r => Series(r!) == s))
                sweepRows.Add(new SweepRow(s, (int)r!["n"]!, (double)r["fraction"]!, MetricValues(r)));
        }
        var metricNames = MetricValues(baseline).Keys.Where(k => k != "angular_distance").ToList();
        var specs = new List<MetricSpec>();
        var chance = ChanceLevels(o);
        foreach (var m in metricNames)
        {
            bool isLoss = m == "validation_loss";
            specs.Add(isLoss ? MetricSpec.Loss(m) : MetricSpec.Accuracy(m));
            var series = strategies.Select(s => (s, (IReadOnlyList<(double, double)>)sweepRows.Where(r => r.Strategy == s && r.Metrics.ContainsKey(m))
                .OrderBy(r => r.N).Select(r => (r.Fraction, r.Metrics[m])).ToList())).ToList();
            Plots.MetricVsFraction(Path.Combine(o.OutDir, $"{m}.png"),
                $"{Path.GetFileName(Path.GetFullPath(o.ModelDir).TrimEnd('/'))}: {m} vs fraction of {L} layers removed",
                isLoss ? "validation loss (nats/token)" : m.Replace('_', ' '), series,
                chance.TryGetValue(m, out var c) ? c : null, MetricValues(baseline)[m]);
        }
        File.WriteAllText(Path.Combine(o.OutDir, "report.md"), ReportWriter.Build(sweepRows, specs,
            $"LayerPrune sweep: {Path.GetFileName(Path.GetFullPath(o.ModelDir).TrimEnd('/'))} ({L} layers)") +
            "\nFigures: " + string.Join(", ", metricNames.Select(m => $"![{m}]({m}.png)")) +
            (File.Exists(Path.Combine(o.OutDir, "similarity.png")) ? ", ![similarity](similarity.png)" : "") + "\n");
    }

    static Dictionary<string, double> MetricValues(JsonNode row) => row.AsObject()
        .Where(kv => kv.Key is not ("n" or "fraction" or "strategy" or "removed" or "healed" or "angular_distance") && kv.Value is JsonValue)
        .ToDictionary(kv => kv.Key, kv => (double)kv.Value!);

    /// <summary>Chance accuracy of multiple-choice tasks: the mean over items of 1 / number of choices.</summary>
    static Dictionary<string, double> ChanceLevels(SweepOptions o)
    {
        var result = new Dictionary<string, double>();
        foreach (var spec in o.Tasks.Where(t => !t.StartsWith(Evaluator.LossKind + ":")))
        {
            var task = TaskSpec.Parse(spec);
            if (task.IsGeneration) continue;
            var docs = task.LoadDocs(o.Eval.Limit);
            double chance = docs.Average(d => 1.0 / d.Continuations.Count);
            result[$"{task.Kind}_acc"] = chance; result[$"{task.Kind}_acc_norm"] = chance;
        }
        return result;
    }
}
