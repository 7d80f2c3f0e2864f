using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Pruning;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>A sweep split into prepare, shards and merge (issue 26): the shard plan, the stages, and their refusals.</summary>
public class SweepStagesTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    /// <summary>The variants of a healed sweep of a 16-layer model (3 strategies × n = 1..15, raw and healed, plus the
    /// unpruned row) with their estimated costs, as the prepare stage computes them.</summary>
    static (List<double> Costs, double HealedMax) HealedSweepCosts()
    {
        var heal = new HealOptions { ModelDir = "", OutDir = "", DataPath = "", Steps = 300, Batch = 16, SeqLen = 256 };
        var costs = new List<double> { ShardPlan.Cost(16, 0, false, 40_000, heal) };
        foreach (bool healed in new[] { false, true })
            for (int n = 1; n < 16; n++)
                for (int s = 0; s < 3; s++)
                    costs.Add(ShardPlan.Cost(16, n, healed, 40_000, heal));
        double healedMax = Enumerable.Range(1, 15).Max(n => ShardPlan.Cost(16, n, true, 40_000, heal));
        return (costs, healedMax);
    }

    [Fact]
    public void EveryVariantIsInExactlyOneShardAndShardCostsDifferByAtMostOneHealedVariant()
    {
        var (costs, healedMax) = HealedSweepCosts();
        Assert.True(healedMax > 10 * ShardPlan.Cost(16, 1, false, 40_000, null), "a healed variant costs far more than a raw one");
        for (int shards = 1; shards <= 8; shards++)
        {
            var shardOf = ShardPlan.Assign(costs, shards);
            Assert.Equal(shardOf, ShardPlan.Assign(costs, shards)); // deterministic
            // The shards' variant lists partition the sweep: every variant exactly once.
            var lists = Enumerable.Range(0, shards)
                .Select(k => Enumerable.Range(0, costs.Count).Where(j => shardOf[j] == k).ToList()).ToList();
            var all = lists.SelectMany(l => l).Order().ToList();
            Assert.Equal(Enumerable.Range(0, costs.Count), all);
            // Loads summed independently of ShardPlan.Loads; spread at most one healed variant's cost.
            var loads = lists.Select(l => l.Sum(j => costs[j])).ToList();
            Assert.Equal(loads, ShardPlan.Loads(costs, shards));
            Assert.True(loads.Max() - loads.Min() <= healedMax + 1e-6,
                $"N={shards}: loads {string.Join(", ", loads.Select(x => x.ToString("0")))} spread more than {healedMax:0}");
            Assert.True(Math.Abs(loads.Sum() - costs.Sum()) < 1e-6 * costs.Sum());
        }
        // Random costs: the LPT bound (spread ≤ the largest single cost) holds for any list.
        var rng = new Random(7);
        for (int trial = 0; trial < 200; trial++)
        {
            var c = Enumerable.Range(0, rng.Next(1, 40)).Select(_ => rng.NextDouble() * (rng.Next(2) == 0 ? 1 : 100)).ToList();
            int shards = rng.Next(1, 9);
            var loads = ShardPlan.Loads(c, shards);
            Assert.True(loads.Max() - loads.Min() <= c.Max() + 1e-9);
        }
    }

    [Fact]
    public void ShardSpecParsesKOfNAndRefusesTheRest()
    {
        Assert.Equal(new ShardSpec(2, 3), ShardSpec.TryParse("2/3"));
        Assert.Equal("2-of-3", ShardSpec.TryParse("2/3")!.Name);
        foreach (var bad in new[] { "3/3", "-1/3", "1/0", "1", "a/b", "1/2/3", " 1/2", "" })
            Assert.Null(ShardSpec.TryParse(bad));
    }

    static SweepOptions Tiny(string outDir) => new()
    {
        ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 8, SeqLen = 64,
        Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"], Strategies = ["similarity", "deepest"], Ns = [8],
        OutDir = outDir, Eval = new EvalOptions { MaxChunks = 4, Limit = 8, BatchSize = 8, SeqLen = 64 },
        Heal = new HealOptions
        {
            ModelDir = "", OutDir = "", DataPath = KjvModel.Train, Steps = 2, Batch = 2, SeqLen = 64, LearningRate = 2e-3,
            Quant = BaseQuantization.None, SaveEvery = 1,
        },
    };

    /// <summary>bi reads the similarity pass of prepare (block influence from similarity.json) in its shard as the
    /// single process reads its own: identical rows, selection cost included.</summary>
    [Fact]
    public void BlockInfluenceShardsReadPreparesPassAndMatchTheSingleProcess()
    {
        using var tmp = new TempDir();
        var o = Tiny(tmp["single"]) with { Strategies = ["similarity", "bi"], Heal = null };
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, o);
        var split = o with { OutDir = tmp["split"] };
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, split with { Stage = SweepStage.Prepare });
        for (int k = 1; k >= 0; k--)
            SweepRunner.Run(kjv.Model, kjv.Tokenizer, split with { Stage = SweepStage.Shard, Shard = new ShardSpec(k, 2) });
        SweepRunner.Run(kjv.Model, kjv.Tokenizer, split with { Stage = SweepStage.Merge });
        string single = File.ReadAllText(Path.Combine(o.OutDir, "results.json"));
        Assert.Contains("\"strategy\": \"bi\"", single);
        Assert.Equal(single, File.ReadAllText(Path.Combine(split.OutDir, "results.json")));
    }

    static Dictionary<string, string> Snapshot(string dir) => Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
        .Where(f => !Path.GetFileName(f).EndsWith(".lock", StringComparison.Ordinal))
        .ToDictionary(f => Path.GetRelativePath(dir, f),
            f => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f))));

    /// <summary>
    /// prepare, three shards (run out of order, one resumed after losing its last row) and merge give results.json and
    /// results.csv byte-identical to the single-process sweep, healed rows included; merge before every shard is done, a
    /// foreign shard, and a second run of a running shard are refused without writing anything.
    /// </summary>
    [Fact]
    public void ShardsMergeIntoTheSingleProcessRowsAndRefuseMissingForeignOrLockedShards()
    {
        using var tmp = new TempDir();
        var single = Tiny(tmp["single"]);
        var whole = SweepRunner.Run(kjv.Model, kjv.Tokenizer, single);
        Assert.Equal(5, whole.Rows.Count); // unpruned + 2 strategies, raw and healed
        Assert.Equal(2, whole.Rows.Count(r => r.Healed));

        var split = Tiny(tmp["split"]);
        Assert.Throws<LayerPruneException>(() => SweepRunner.Run(kjv.Model, kjv.Tokenizer,
            split with { Stage = SweepStage.Shard, Shard = new ShardSpec(0, 3) })); // no plan yet
        var prepared = SweepRunner.Run(kjv.Model, kjv.Tokenizer, split with { Stage = SweepStage.Prepare });
        Assert.Empty(prepared.Rows);
        var plan = JsonNode.Parse(File.ReadAllText(Path.Combine(split.OutDir, SweepStages.PlanFile)))!;
        Assert.Equal(whole.Rows.Select(r => r.Key), plan["variants"]!.AsArray().Select(v => (string)v!["key"]!));
        Assert.False(File.Exists(Path.Combine(split.OutDir, "results.json")));

        SweepOptions Shard(int k) => split with { Stage = SweepStage.Shard, Shard = new ShardSpec(k, 3) };
        var merge = split with { Stage = SweepStage.Merge };
        var rows2 = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Shard(2)).Rows;
        var rows0 = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Shard(0)).Rows;

        // Merge with shard 1 missing: one message naming it, nothing written.
        var before = Snapshot(split.OutDir);
        var e = Assert.Throws<LayerPruneException>(() => SweepRunner.Run(kjv.Model, kjv.Tokenizer, merge));
        Assert.Contains("missing shards 1-of-3", e.Message);
        Assert.DoesNotContain("\n", e.Message);
        Assert.Equal(before, Snapshot(split.OutDir));

        // A second run of a shard that is running is refused by the shard's own lock (not the folder's).
        using (SweepStages.Lock(Shard(1)))
        {
            var locked = Assert.Throws<LayerPruneException>(() => SweepRunner.Run(kjv.Model, kjv.Tokenizer, Shard(1)));
            Assert.Contains("pid", locked.Message);
            using var other = SweepStages.Lock(Shard(0)); // another shard is not blocked
        }
        var rows1 = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Shard(1)).Rows;
        // The shards partition the variants; the two healed ones (the costliest) are in different shards.
        var keys = new[] { rows0, rows1, rows2 }.SelectMany(r => r.Select(x => x.Key)).Order().ToList();
        Assert.Equal(whole.Rows.Select(r => r.Key).Order(), keys);
        Assert.Equal(2, new[] { rows0, rows1, rows2 }.Count(r => r.Any(x => x.Healed)));

        // A shard killed after its first row resumes: only the lost rows are evaluated again, the file ends identical.
        Assert.True(rows2.Count >= 2, $"shard 2 has {rows2.Count} rows"); // LPT here: [none], [sim8, sim8 healed], [deep8, deep8 healed]
        string path2 = SweepStages.ShardPath(split.OutDir, new ShardSpec(2, 3));
        string full2 = File.ReadAllText(path2);
        var doc = JsonNode.Parse(full2)!.AsObject();
        var kept = doc["rows"]!.AsArray();
        while (kept.Count > 1) kept.RemoveAt(kept.Count - 1);
        File.WriteAllText(path2, doc.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        Assert.Equal(rows2.Count, SweepRunner.Run(kjv.Model, kjv.Tokenizer, Shard(2)).Rows.Count);
        Assert.Equal(full2, File.ReadAllText(path2));

        SweepRunner.Run(kjv.Model, kjv.Tokenizer, merge);
        foreach (var f in new[] { "results.json", "results.csv" })
            Assert.Equal(File.ReadAllText(Path.Combine(single.OutDir, f)), File.ReadAllText(Path.Combine(split.OutDir, f)));
        Assert.True(File.Exists(Path.Combine(split.OutDir, "report.md")));
        Assert.True(File.Exists(Path.Combine(split.OutDir, "validation_loss.png")));

        // A shard of another sweep (other seed in its config) is named as foreign; nothing is written.
        string path0 = SweepStages.ShardPath(split.OutDir, new ShardSpec(0, 3));
        var foreign = JsonNode.Parse(File.ReadAllText(path0))!.AsObject();
        foreign["config"]!["seed"] = 99;
        File.WriteAllText(path0, foreign.ToJsonString());
        before = Snapshot(split.OutDir);
        e = Assert.Throws<LayerPruneException>(() => SweepRunner.Run(kjv.Model, kjv.Tokenizer, merge));
        Assert.Contains("another sweep or plan 0-of-3", e.Message);
        Assert.Equal(before, Snapshot(split.OutDir));
        // A shard file of another split is refused too.
        File.Copy(path2, Path.Combine(split.OutDir, SweepStages.ShardsFolder, "0-of-2.json"));
        e = Assert.Throws<LayerPruneException>(() => SweepRunner.Run(kjv.Model, kjv.Tokenizer, merge));
        Assert.Contains("different splits", e.Message);
    }
}
