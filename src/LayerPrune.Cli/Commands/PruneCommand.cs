using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Pruning;

namespace LayerPrune.Cli.Commands;

public static class PruneCommand
{
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var output = new Option<string>("--out", "-o") { Description = "Folder for the pruned checkpoint (written atomically)", Required = true };
        var layers = new Option<string?>("--layers") { Description = "Explicit 0-based layers to remove: 6-9 or 3,5,7 (inclusive ranges)" };
        var n = new Option<int?>("--n") { Description = "Number of layers to remove" };
        var fraction = new Option<double?>("--fraction") { Description = "Fraction of layers to remove (rounded)" };
        var strategy = new Option<string>("--strategy") { Description = "similarity (the paper: least-changing block, needs --data) | deepest (n deepest except the final layer) | shallowest | random", DefaultValueFactory = _ => "similarity" };
        var seed = new Option<int>("--seed") { Description = "Seed of --strategy random", DefaultValueFactory = _ => 0 };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out folder (never the input)" };
        var maxShard = new Option<string?>("--max-shard-size") { Description = "Shard the output: e.g. 5GB, 500MB (default: keep the input's sharding)" };
        var json = Cli.JsonOption();
        var data = new SimilarityDataOptions();
        var cmd = new Command("prune", "Write a pruned Hugging Face checkpoint (kept layers renumbered, bytes copied verbatim) plus prune_plan.json and mergekit.yaml")
            { model, output, layers, n, fraction, strategy, seed, force, maxShard, json };
        data.AddTo(cmd);
        return cmd.WithAction(p =>
        {
            string dir = p.GetValue(model)!;
            string? spec = p.GetValue(layers);
            int given = (spec is null ? 0 : 1) + (p.GetValue(n) is null ? 0 : 1) + (p.GetValue(fraction) is null ? 0 : 1);
            Cli.Require(given == 1, "give exactly one of --layers, --n or --fraction");
            long? shardBytes = p.GetValue(maxShard) is { } s ? ParseSize(s) : null;
            string strat = p.GetValue(strategy)!;
            Cli.Require(strat is "similarity" or "deepest" or "shallowest" or "random", $"--strategy {strat}: expected similarity, deepest, shallowest or random");
            using var ckpt = Checkpoint.Open(dir);
            int L = ckpt.Config.NumLayers;
            OutputFolder.Check(p.GetValue(output)!, p.GetValue(force), "--out", dir); // bad flags fail before anything is written
            PrunePlan? plan = null;
            int count = 0;
            if (spec is not null) plan = PrunePlan.FromLayerSpec(spec, L);
            else
            {
                count = p.GetValue(n) ?? PrunePlan.BlockSizeFromFraction(p.GetValue(fraction)!.Value, L);
                if (count < 1 || count >= L) throw LayerPruneException.Usage($"--n {count}: must be between 1 and {L - 1} (the model has {L} layers)");
                plan = strat switch
                {
                    "deepest" => PrunePlan.Deepest(count, L),
                    "shallowest" => PrunePlan.Shallowest(count, L),
                    "random" => PrunePlan.RandomBlock(count, L, p.GetValue(seed)),
                    _ => null,
                };
                if (plan is null) data.RequireData(p, "with --strategy similarity (or use --strategy deepest)");
            }
            // Before the slow similarity pass: holds --out's lock until the commit (a concurrent run fails at once).
            using var outDir = OutputFolder.Begin(p.GetValue(output)!, p.GetValue(force), "--out", dir);
            plan ??= Similar(p, data, dir, count);
            CheckpointPruner.Write(ckpt, plan, outDir, shardBytes);
            var planJson = plan.ToJson();
            planJson["out"] = Path.GetFullPath(p.GetValue(output)!);
            if (p.GetValue(json)) Cli.PrintJson(planJson);
            else Console.Out.WriteLine($"removed layers {string.Join(",", plan.Removed)} ({plan.Strategy}{(plan.Distance is double d ? $", angular distance {d:F4}" : "")}); {plan.Kept.Length} of {L} layers kept → {Path.GetFullPath(p.GetValue(output)!)}");
            return 0;
        });
    }

    static PrunePlan Similar(ParseResult p, SimilarityDataOptions data, string dir, int count)
    {
        data.RequireData(p, "with --strategy similarity (or use --strategy deepest)");
        using var model = Cli.LoadModel(p, dir, p.GetValue(data.Offload));
        return PrunePlan.FromSimilarity(data.Measure(p, model, dir, blockInfluence: false), count);
    }

    public static long ParseSize(string s)
    {
        var m = System.Text.RegularExpressions.Regex.Match(s.Trim(), @"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB)?$", System.Text.RegularExpressions.RegexOptions.IgnoreCase);
        if (!m.Success) throw LayerPruneException.Usage($"--max-shard-size {s}: expected a size like 5GB or 500MB");
        double v = double.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        long unit = m.Groups[2].Value.ToUpperInvariant() switch
        {
            "KB" => 1000, "MB" => 1000_000, "GB" => 1000_000_000, "TB" => 1000_000_000_000, "KIB" => 1024, "MIB" => 1 << 20, "GIB" => 1 << 30, _ => 1,
        };
        long bytes = (long)(v * unit);
        return bytes >= 1 ? bytes : throw LayerPruneException.Usage($"--max-shard-size {s}: must be positive");
    }
}
