using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Evaluation;
using LayerPrune.Pruning;

namespace LayerPrune.Sweep;

/// <summary>A stage of a sweep split for a cluster; all stages share one output folder (a shared filesystem).</summary>
public enum SweepStage
{
    /// <summary>The similarity pass (and bootstrap), the tasks prepared once, and OUT/plan.json: every variant with its
    /// estimated cost.</summary>
    Prepare,

    /// <summary>The variants of one shard (<see cref="SweepOptions.Shard"/>), rows in OUT/shards/K-of-N.json after each
    /// variant; a rerun resumes them.</summary>
    Shard,

    /// <summary>Every shard's rows checked and merged into results.json/.csv, report.md and the figures.</summary>
    Merge,
}

/// <summary>
/// What <see cref="SweepRunner.Run"/> does differently in each <see cref="SweepStage"/>: where rows are resumed from
/// and written to, which variants run, which lock is held. A shard locks only its own rows file (OUT/shards/.K-of-N.json.lock),
/// so shards on different nodes never contend for one lock; the whole sweep, prepare and merge lock OUT. The shard rows
/// hold the sweep's config and the plan's hash: merge refuses rows of another sweep or plan.
/// </summary>
public sealed partial class SweepStages
{
    /// <summary>OUT/plan.json: the config, and per variant (in the order of results.json) its key and estimated cost.</summary>
    public const string PlanFile = "plan.json";

    /// <summary>OUT/shards/: K-of-N.json (rows) and K-of-N.seconds.json (selection seconds) per shard.</summary>
    public const string ShardsFolder = "shards";

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    readonly SweepOptions _o;
    readonly JsonObject _config;
    readonly JsonObject? _plan;
    readonly List<VariantRow>? _merged;
    List<string> _mine = [];

    /// <summary>Checks the stage's options and reads what it needs (the plan; merge: every shard's rows, refusing with one
    /// message naming missing, foreign or incomplete shards before anything is written).</summary>
    public SweepStages(SweepOptions o, JsonObject config)
    {
        ArgumentNullException.ThrowIfNull(o);
        _o = o;
        _config = config;
        if ((o.Stage == SweepStage.Shard) != (o.Shard is not null))
            throw new ArgumentException("a shard is given with the shard stage, and only then", nameof(SweepOptions.Shard));
        string planPath = Path.Combine(o.OutDir, PlanFile);
        if (o.Stage is SweepStage.Shard or SweepStage.Merge)
        {
            if (!File.Exists(planPath))
                throw LayerPruneException.Failed(nameof(SweepOptions.OutDir), o.OutDir,
                    $"has no {PlanFile}: run the prepare stage (`{nameof(SweepOptions.Stage)}` = {SweepStage.Prepare}) "
                    + "with the same options first");
            _plan = ReadJson(planPath);
            if (!JsonNode.DeepEquals(_plan["config"], config))
                throw LayerPruneException.Failed(nameof(SweepOptions.OutDir), o.OutDir,
                    $"{PlanFile} was prepared for a different sweep (other model, data, tasks or options); "
                    + $"run the prepare stage with these options (and `{nameof(SweepOptions.Force)}`) or use the prepare's options");
            if (o.Stage == SweepStage.Merge) _merged = MergeRows();
        }
        else if (File.Exists(planPath) && !o.Force && ReadJson(planPath) is var plan && JsonNode.DeepEquals(plan["config"], config))
        {
            _plan = plan;
        }
    }

    /// <summary>Whether OUT holds a plan of this sweep, so its similarity.json may be reused.</summary>
    public bool Prepared => _plan is not null;

    /// <summary>The lock of the stage: the shard's own rows file for a shard, the output folder otherwise.</summary>
    public static OutputLock Lock(SweepOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        return o.Stage == SweepStage.Shard && o.Shard is { } s
            ? OutputLock.Acquire(ShardPath(o.OutDir, s), nameof(SweepOptions.Shard))
            : OutputLock.Acquire(o.OutDir, nameof(SweepOptions.OutDir));
    }

    /// <summary>OUT/shards/K-of-N.json.</summary>
    public static string ShardPath(string outDir, ShardSpec shard)
    {
        ArgumentNullException.ThrowIfNull(shard);
        return Path.Combine(outDir, ShardsFolder, shard.Name + ".json");
    }

    /// <summary>The rows to resume: the whole sweep's (given), a shard's own, or merge's every row in plan order.</summary>
    public List<VariantRow> ResumeRows(List<VariantRow> rows)
    {
        if (_o.Stage == SweepStage.Merge) return _merged!;
        if (_o.Stage != SweepStage.Shard || _o.Force) return rows;
        string path = ShardPath(_o.OutDir, _o.Shard!);
        if (!File.Exists(path)) return [];
        var doc = ReadJson(path);
        if (!JsonNode.DeepEquals(doc["config"], _config) || (string?)doc["plan"] != PlanHash(_plan!))
            throw LayerPruneException.Failed(nameof(SweepOptions.Shard), _o.Shard,
                $"{path} holds rows of a different sweep or plan; use `{nameof(SweepOptions.Force)}` to start the shard over");
        return SweepFiles.Rows(doc, path);
    }

    /// <summary>Where the selection seconds of this run go: the shard's own file, or null (OUT/selection_seconds.json).</summary>
    public string? SecondsPath => _o.Stage == SweepStage.Shard
        ? Path.Combine(_o.OutDir, ShardsFolder, _o.Shard!.Name + ".seconds.json")
        : null;

    /// <summary>Deletes temp files of a run killed mid-write: a shard only its own (other shards may be writing).</summary>
    public void RemoveLeftovers()
    {
        if (_o.Stage != SweepStage.Shard)
        {
            OutputFile.RemoveLeftovers(_o.OutDir);
            return;
        }
        string dir = Path.Combine(_o.OutDir, ShardsFolder);
        if (!Directory.Exists(dir)) return;
        foreach (var f in Directory.EnumerateFiles(dir, $".{_o.Shard!.Name}.*.tmp-*")) File.Delete(f);
    }

    /// <summary>
    /// Which of <paramref name="jobs"/> (every variant of the sweep, in results.json order) this run evaluates. Prepare
    /// writes OUT/plan.json with each one's estimated cost (<see cref="ShardPlan.Cost"/>) and evaluates none; a shard takes
    /// its <see cref="ShardPlan.Assign"/> share of the plan's costs; the whole sweep and merge take every job.
    /// </summary>
    public bool[] Select(IReadOnlyList<(string Key, int N, bool Healed)> jobs, IReadOnlyList<IPreparedTask> tasks, int layers)
    {
        ArgumentNullException.ThrowIfNull(jobs);
        var all = Enumerable.Repeat(true, jobs.Count).ToArray();
        if (_o.Stage == SweepStage.Prepare)
        {
            double evalTokens = ShardPlan.EvalTokens(tasks);
            var plan = new JsonObject
            {
                ["config"] = _config.DeepClone(),
                ["cost_unit"] = "estimated token-forwards through the whole model (evaluation; healing ≈ 3 per trained token)",
                ["variants"] = new JsonArray(jobs.Select(j => (JsonNode?)new JsonObject
                {
                    ["key"] = j.Key,
                    ["cost"] = ShardPlan.Cost(layers, j.N, j.Healed, evalTokens, _o.Heal),
                }).ToArray()),
            };
            Directory.CreateDirectory(_o.OutDir);
            OutputFile.WriteAllText(Path.Combine(_o.OutDir, PlanFile), plan.ToJsonString(Indented));
            return all.Select(_ => false).ToArray();
        }
        if (_o.Stage != SweepStage.Shard) return all;
        var (keys, costs) = PlanVariants(_plan!);
        if (!keys.SequenceEqual(jobs.Select(j => j.Key)))
            throw LayerPruneException.Failed(nameof(SweepOptions.OutDir), _o.OutDir,
                $"{PlanFile} lists other variants than these options give; run the prepare stage again");
        var shardOf = ShardPlan.Assign(costs, _o.Shard!.Count);
        var mine = shardOf.Select(s => s == _o.Shard.Index).ToArray();
        _mine = keys.Where((_, i) => mine[i]).ToList();
        return mine;
    }

    /// <summary>Writes the rows so far: results.json/.csv of the whole sweep, or the shard's rows file (atomically).</summary>
    public void WriteRows(SweepResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (_o.Stage != SweepStage.Shard)
        {
            SweepFiles.Write(_o.OutDir, result);
            return;
        }
        var doc = new JsonObject
        {
            ["config"] = _config.DeepClone(),
            ["plan"] = PlanHash(_plan!),
            ["shard"] = _o.Shard!.Index,
            ["shards"] = _o.Shard.Count,
            ["variants"] = new JsonArray(_mine.Select(k => (JsonNode?)k).ToArray()),
            ["rows"] = new JsonArray(result.Rows.Select(r => (JsonNode?)r.ToJson()).ToArray()),
        };
        OutputFile.WriteAllText(ShardPath(_o.OutDir, _o.Shard), doc.ToJsonString(Indented));
    }

    /// <summary>Merge: results.json/.csv of every row and OUT/selection_seconds.json of every shard's seconds.</summary>
    public void WriteMerged(SweepResult result, string secondsPath, Action<string, Dictionary<string, double>> writeSeconds,
        Func<string, Dictionary<string, double>> readSeconds)
    {
        ArgumentNullException.ThrowIfNull(writeSeconds);
        ArgumentNullException.ThrowIfNull(readSeconds);
        var seconds = new Dictionary<string, double>();
        foreach (var f in ShardFiles().Select(s => Path.ChangeExtension(s.Path, ".seconds.json")))
            foreach (var (k, v) in readSeconds(f)) seconds[k] = v;
        SweepFiles.Write(_o.OutDir, result);
        writeSeconds(secondsPath, seconds);
    }

    /// <summary>The SHA-256 (hex, 16 digits) of the plan's variants and costs: shard rows of another plan are foreign.</summary>
    static string PlanHash(JsonObject plan) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(plan["variants"]?.ToJsonString() ?? "")))[..16];

    static (List<string> Keys, List<double> Costs) PlanVariants(JsonObject plan)
    {
        var v = plan["variants"] as JsonArray ?? [];
        return (v.Select(x => (string)x!["key"]!).ToList(), v.Select(x => (double)x!["cost"]!).ToList());
    }

    [GeneratedRegex(@"^(\d+)-of-(\d+)\.json$")]
    private static partial Regex ShardFileName();

    List<(string Path, int Index, int Count)> ShardFiles()
    {
        string dir = Path.Combine(_o.OutDir, ShardsFolder);
        if (!Directory.Exists(dir)) return [];
        return Directory.EnumerateFiles(dir)
            .Select(f => (f, m: ShardFileName().Match(Path.GetFileName(f))))
            .Where(x => x.m.Success)
            .Select(x => (x.f, int.Parse(x.m.Groups[1].Value), int.Parse(x.m.Groups[2].Value)))
            .OrderBy(x => x.Item3).ThenBy(x => x.Item2)
            .ToList();
    }

    /// <summary>Every shard's rows in plan order, or one error naming each missing, foreign or incomplete shard.</summary>
    List<VariantRow> MergeRows()
    {
        var files = ShardFiles();
        string dir = Path.Combine(_o.OutDir, ShardsFolder);
        if (files.Count == 0)
            throw LayerPruneException.Failed(nameof(SweepOptions.OutDir), _o.OutDir,
                $"has no shard rows in {dir}: run every shard (`{nameof(SweepOptions.Shard)}` = K/N) before merging; nothing was written");
        var splits = files.Select(f => f.Count).Distinct().ToList();
        if (splits.Count > 1)
            throw LayerPruneException.Failed(nameof(SweepOptions.OutDir), _o.OutDir,
                $"{dir} holds shards of {splits.Count} different splits "
                + $"({string.Join(", ", files.Select(f => $"{f.Index}-of-{f.Count}"))}); "
                + "remove those of the old split; nothing was written");
        int count = splits[0];
        var (keys, costs) = PlanVariants(_plan!);
        var shardOf = ShardPlan.Assign(costs, count);
        string hash = PlanHash(_plan!);
        List<string> missing = [], foreign = [], incomplete = [];
        var byKey = new Dictionary<string, VariantRow>();
        for (int k = 0; k < count; k++)
        {
            var name = new ShardSpec(k, count).Name;
            string path = ShardPath(_o.OutDir, new ShardSpec(k, count));
            if (!File.Exists(path))
            {
                missing.Add(name);
                continue;
            }
            var doc = ReadJson(path);
            if (!JsonNode.DeepEquals(doc["config"], _config) || (string?)doc["plan"] != hash)
            {
                foreign.Add(name);
                continue;
            }
            var rows = SweepFiles.Rows(doc, path);
            var expected = keys.Where((_, i) => shardOf[i] == k).ToHashSet();
            int have = rows.Count(r => expected.Contains(r.Key));
            if (have != expected.Count || rows.Count != expected.Count || rows.Select(r => r.Key).Distinct().Count() != rows.Count)
            {
                incomplete.Add($"{name} ({have} of {expected.Count} variants)");
                continue;
            }
            foreach (var r in rows) byKey[r.Key] = r;
        }
        var problems = new List<string>();
        if (missing.Count > 0) problems.Add("missing shards " + string.Join(", ", missing));
        if (foreign.Count > 0) problems.Add("shards of another sweep or plan " + string.Join(", ", foreign));
        if (incomplete.Count > 0) problems.Add("unfinished shards " + string.Join(", ", incomplete));
        if (problems.Count > 0)
            throw new LayerPruneException($"{dir}: cannot merge: {string.Join("; ", problems)}; nothing was written");
        return keys.Select(k => byKey[k]).ToList();
    }

    static JsonObject ReadJson(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new LayerPruneException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new LayerPruneException($"{path}: not valid JSON ({e.Message})", e);
        }
    }
}
