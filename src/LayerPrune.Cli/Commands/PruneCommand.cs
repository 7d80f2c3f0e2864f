using LayerPrune.Planning;
using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Reporting;
using LayerPrune.Similarity;

namespace LayerPrune.Cli.Commands;

/// <summary>`layerprune prune`: choose a block of layers and write the pruned checkpoint.</summary>
public static class PruneCommand
{
    /// <summary>The `prune` command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var output = new Option<string>("--out", "-o")
            { Description = "Folder for the pruned checkpoint (written atomically)", Required = true };
        var layers = new Option<string?>("--layers") { Description = "Explicit 0-based layers to remove: 6-9 or 3,5,7 (inclusive ranges)" };
        var planFile = new Option<string?>("--plan") { Description = "prune_plan.json of an earlier prune: remove the same layers" };
        var n = new Option<int?>("--n") { Description = "Number of layers to remove" };
        var fraction = new Option<double?>("--fraction") { Description = "Fraction of layers to remove (rounded)" };
        var strategy = new Option<string>("--strategy")
        {
            Description = "similarity (the paper: least-changing block, needs --data) | bi (ShortGPT: n lowest Block Influence) | " +
                          "greedy (SLEB: n rounds of lowest calibration loss) | loss-rank (Shortened-LLaMA: n lowest single-removal " +
                          "losses) | deepest (n deepest except the final layer) | shallowest | random",
            DefaultValueFactory = _ => "similarity",
        };
        var metric = new Option<string>("--metric")
        {
            Description = "Metric of --strategy similarity: angular | bi | cka", DefaultValueFactory = _ => "angular",
        };
        var protectLast = SimilarityDataOptions.ProtectLastOption();
        var calibration = new Option<string?>("--calibration")
        {
            Description = "Data whose loss greedy and loss-rank minimise, and --repair's calibration data (.txt, .jsonl text or " +
                          "pre-tokenized; default: --data)",
        };
        var calibrationChunks = new Option<int>("--calibration-chunks")
        {
            Description = "Chunks of --seq-len tokens of --calibration", DefaultValueFactory = _ => 32,
        };
        var seed = new Option<int>("--seed") { Description = "Seed of --strategy random", DefaultValueFactory = _ => 0 };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out folder (never the input)" };
        var maxShard = new Option<string?>("--max-shard-size")
            { Description = "Shard the output: e.g. 5GB, 500MB (default: keep the input's sharding)" };
        var json = Cli.JsonOption();
        var unit = SublayerPrune.UnitOption();
        var data = new SimilarityDataOptions();
        var repair = new PruneRepair();
        var cmd = new Command("prune",
            "Write a pruned Hugging Face checkpoint (kept layers renumbered, bytes copied verbatim) plus prune_plan.json and mergekit.yaml")
            {
                model, output, layers, planFile, n, fraction, strategy, metric, protectLast, calibration, calibrationChunks, seed, force,
                maxShard, json, unit,
            };
        data.AddTo(cmd);
        repair.AddTo(cmd);
        return cmd.WithAction(p =>
        {
            string dir = p.GetValue(model)!;
            string? spec = p.GetValue(layers);
            string? planPath = p.GetValue(planFile);
            int given = (spec is null ? 0 : 1) + (planPath is null ? 0 : 1) + (p.GetValue(n) is null ? 0 : 1)
                + (p.GetValue(fraction) is null ? 0 : 1);
            Cli.Require(given == 1, "give exactly one of --layers, --plan, --n or --fraction");
            var u = PruneUnits.Parse(p.GetValue(unit)!, "unit");
            Cli.Require(u == PruneUnit.Layer || !repair.Requested(p), "--repair: only whole-layer plans (--unit layer) can be repaired");
            if (u != PruneUnit.Layer)   // issue 25: sublayer units
                return SublayerPrune.Run(p, data, u, new(dir, p.GetValue(output)!, spec, planPath, p.GetValue(n), p.GetValue(fraction),
                    p.GetValue(strategy)!, p.GetValue(seed), p.GetValue(force), p.GetValue(json), p.GetValue(calibration),
                    p.GetValue(calibrationChunks), p.GetValue(maxShard) is { } ss ? ParseSize(ss) : null));
            bool repairs = repair.Requested(p);
            // ---- GGUF input (issue 16): blocks removed and renumbered byte for byte; a measured plan (issue 27) is chosen on the
            // GGUF converted to a checkpoint, then applied to the GGUF file itself ----
            string ggufSource = LayerPrune.Hub.ModelSource.IsGguf(dir) ? dir : "";
            Cli.Require(!(repairs && ggufSource.Length > 0),
                "--repair: a .gguf model cannot be repaired (prune the Hugging Face checkpoint, then export)");
            if (ggufSource.Length > 0 && (spec is not null || planPath is not null))
            {
                int blocks = LayerPrune.Gguf.GgufFile.Open(dir).BlockCount;
                var gplan = spec is not null ? PrunePlan.FromLayerSpec(spec, blocks)
                    : PrunePlan.FromJsonFile(Cli.ExistingFile(planPath!, "--plan"), blocks);
                var r = LayerPrune.Gguf.GgufPruner.Prune(dir, gplan, p.GetValue(output)!, p.GetValue(force));
                if (p.GetValue(json)) { var o = gplan.ToJson(); o["out"] = r.Path; Cli.PrintJson(o); }
                else Console.Out.WriteLine(
                    $"removed blocks {string.Join(",", gplan.Removed)}; {r.KeptLayers} of {r.OriginalLayers} kept → {r.Path}");
                return 0;
            }
            // ---- end GGUF input ----
            dir = Cli.ResolveModel(p, dir);
            long? shardBytes = p.GetValue(maxShard) is { } s ? ParseSize(s) : null;
            string strat = p.GetValue(strategy)!;
            Cli.Require(PruneStrategies.Names.Contains(strat),
                $"--strategy {strat}: expected one of {string.Join(", ", PruneStrategies.Names)}");
            var chosenMetric = SimilarityMetrics.Parse(p.GetValue(metric)!)
                ?? throw LayerPruneException.Usage($"--metric {p.GetValue(metric)}: expected angular, bi or cka");
            Cli.Require(p.GetValue(calibrationChunks) >= 1, $"--calibration-chunks {p.GetValue(calibrationChunks)}: must be at least 1");
            using var ckpt = Checkpoint.Open(dir);
            int L = ckpt.Config.NumLayers;
            if (ggufSource.Length == 0) // bad flags fail before anything is written
                OutputFolder.Check(p.GetValue(output)!, p.GetValue(force), "--out", dir);
            else OutputFile.Check(p.GetValue(output)!, "--out");
            string? repairData = repairs ? repair.CalibrationPath(p, p.GetValue(calibration), data) : null;
            PrunePlan? plan = null;
            int count = 0;
            if (spec is not null) plan = PrunePlan.FromLayerSpec(spec, L);
            else if (planPath is not null) plan = PrunePlan.FromJsonFile(Cli.ExistingFile(planPath, "--plan"), L);
            else
            {
                count = p.GetValue(n) ?? PrunePlan.BlockSizeFromFraction(p.GetValue(fraction)!.Value, L);
                if (count < 1 || count >= L)
                    throw LayerPruneException.Usage($"--n {count}: must be between 1 and {L - 1} (the model has {L} layers)");
                int max = p.GetValue(protectLast) && strat != "deepest" ? L - 2 : L - 1;
                Cli.Require(count <= max, $"--n {count}: with --protect-last at most {max} (the model has {L} layers)");
                if (strat is "deepest" or "shallowest" or "random")
                    plan = PruneStrategies.Rule(strat, count, L, p.GetValue(seed), p.GetValue(protectLast));
            }
            if (ggufSource.Length > 0)
            {
                plan ??= Measured(p, data, dir, strat, chosenMetric, p.GetValue(calibration), p.GetValue(calibrationChunks),
                                  p.GetValue(protectLast), count);
                var r = LayerPrune.Gguf.GgufPruner.Prune(ggufSource, plan, p.GetValue(output)!, p.GetValue(force));
                if (p.GetValue(json)) { var o = plan.ToJson(); o["out"] = r.Path; Cli.PrintJson(o); }
                else Console.Out.WriteLine($"removed blocks {string.Join(",", plan.Removed)} ({plan.Strategy}); {r.KeptLayers} of " +
                                           $"{r.OriginalLayers} kept → {r.Path}");
                return 0;
            }
            // Before the slow similarity pass: holds --out's lock until the commit (a concurrent run fails at once).
            using var outDir = OutputFolder.Begin(p.GetValue(output)!, p.GetValue(force), "--out", dir);
            plan ??= Measured(p, data, dir, strat, chosenMetric, p.GetValue(calibration), p.GetValue(calibrationChunks),
                              p.GetValue(protectLast), count);
            using var fitted = repairs
                ? repair.Fit(p, data, dir, plan, repairData!, p.GetValue(calibrationChunks), p.GetValue(seed))
                : null;
            CheckpointPruner.Write(ckpt, plan, outDir, shardBytes, repair: fitted);
            var planJson = plan.ToJson();
            if (fitted is not null) planJson["repair"] = fitted.ToJson();
            planJson["out"] = Path.GetFullPath(p.GetValue(output)!);
            if (p.GetValue(json)) Cli.PrintJson(planJson);
            else Console.Out.WriteLine(
                $"removed layers {string.Join(",", plan.Removed)} " +
                $"({plan.Strategy}{(plan.Distance is double d ? $", angular distance {d:F4}" : "")}{Cost(plan)}); {plan.Kept.Length} " +
                $"of {L} layers kept{PruneRepair.Summary(fitted)} → {Path.GetFullPath(p.GetValue(output)!)}");
            return 0;
        });
    }

    /// <summary>The strategies that measure the model: similarity and bi (a similarity pass on --data), greedy and loss-rank (calibration
    /// loss).</summary>
    static PrunePlan Measured(ParseResult p, SimilarityDataOptions data, string dir, string strategy, SimilarityMetric metric,
                              string? calibration, int chunks, bool protectLast, int count)
    {
        bool needsCalibration = PruneStrategies.NeedsCalibration(strategy);
        string path = needsCalibration && calibration is not null
            ? Cli.ExistingFile(calibration, "--calibration")
            : data.RequireData(p, needsCalibration
                ? $"with --strategy {strategy} (or give --calibration)"
                : $"with --strategy {strategy} (or use --strategy deepest)");
        Cli.Require(p.GetValue(data.Batch) >= 1, $"--batch {p.GetValue(data.Batch)}: must be at least 1");
        Cli.Require(!(needsCalibration && p.GetValue(data.Offload)),
                    $"--offload: not supported with --strategy {strategy} (it runs many loss passes)");
        using var model = Cli.LoadModel(p, dir, p.GetValue(data.Offload),
            needsCalibration ? Workload.Evaluate : Workload.Similarity, p.GetValue(data.Batch), p.GetValue(data.SeqLen),
            canOffload: !needsCalibration);
        int seqLen = p.GetValue(data.SeqLen);
        var inputs = new StrategyInputs
        {
            Model = model, Metric = metric, ProtectLast = protectLast, BatchSize = p.GetValue(data.Batch), Progress = Cli.Progress,
            SimilaritySamples = ()
                => SimilarityDataOptions.LoadSamples(path, dir, model.Config.VocabSize, p.GetValue(data.Samples), seqLen),
            CalibrationChunks = () =>
                PreTokenized.LossChunks(path, PreTokenized.IsPreTokenized(path) ? null : Cli.LoadTokenizer(dir), seqLen, chunks,
                    model.Config.VocabSize),
        };
        return PruneStrategies.Prepare(strategy, inputs, count)(count);
    }

    static string Cost(PrunePlan plan) =>
        plan.Selection?["cost"]?["forward_passes"] is JsonNode f && (long)f > 0 ? $", chosen with {(long)f} forward passes" : "";

    /// <summary>A size such as "512M" or "2G" (binary units) in bytes.</summary>
    public static long ParseSize(string s)
    {
        var m = System.Text.RegularExpressions.Regex.Match(s.Trim(), @"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB)?$",
            System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        if (!m.Success) throw LayerPruneException.Usage($"--max-shard-size {s}: expected a size like 5GB or 500MB");
        double v = double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        long unit = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "KB" => 1000, "MB" => 1000_000, "GB" => 1000_000_000, "TB" => 1000_000_000_000, "KIB" => 1024, "MIB" => 1 << 20,
                "GIB" => 1 << 30, _ => 1,
        };
        long bytes = (long)(v * unit);
        return bytes >= 1 ? bytes : throw LayerPruneException.Usage($"--max-shard-size {s}: must be positive");
    }
}
