using System.Globalization;
using LayerPrune.Evaluation;
using LayerPrune.Healing;

namespace LayerPrune.Sweep;

/// <summary>Shard <see cref="Index"/> (0-based) of <see cref="Count"/>, written "K/N" (rows file "K-of-N.json").</summary>
public sealed record ShardSpec(int Index, int Count)
{
    /// <summary>"K/N" with 0 ≤ K &lt; N; null when <paramref name="s"/> is not of that form.</summary>
    public static ShardSpec? TryParse(string? s)
    {
        var parts = (s ?? "").Split('/');
        if (parts.Length != 2
            || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int k)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            || n < 1 || k >= n)
            return null;
        return new ShardSpec(k, n);
    }

    /// <summary>"K-of-N", the stem of the shard's files under OUT/shards/.</summary>
    public string Name => $"{Index}-of-{Count}";

    /// <inheritdoc/>
    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>
/// Which shard runs which variant: the estimated costs are balanced by the longest-processing-time rule (Graham 1969):
/// jobs in decreasing cost (ties: plan order) each go to the shard with the least cost so far (ties: the lowest index).
/// Deterministic, and the most and least loaded shards differ by at most the largest single cost: the last job given to
/// the most loaded shard went to what was then the least loaded one.
/// </summary>
public static class ShardPlan
{
    /// <summary>The shard of each job (index into <paramref name="costs"/>) for <paramref name="shards"/> shards.</summary>
    public static int[] Assign(IReadOnlyList<double> costs, int shards)
    {
        ArgumentNullException.ThrowIfNull(costs);
        ArgumentOutOfRangeException.ThrowIfLessThan(shards, 1);
        var load = new double[shards];
        var shardOf = new int[costs.Count];
        foreach (int j in Enumerable.Range(0, costs.Count).OrderByDescending(j => costs[j]).ThenBy(j => j))
        {
            int best = 0;
            for (int s = 1; s < shards; s++)
                if (load[s] < load[best]) best = s;
            shardOf[j] = best;
            load[best] += costs[j];
        }
        return shardOf;
    }

    /// <summary>The summed cost of each shard under <see cref="Assign"/>.</summary>
    public static double[] Loads(IReadOnlyList<double> costs, int shards)
    {
        ArgumentNullException.ThrowIfNull(costs);
        var shardOf = Assign(costs, shards);
        var load = new double[shards];
        for (int j = 0; j < costs.Count; j++) load[shardOf[j]] += costs[j];
        return load;
    }

    /// <summary>Tokens a task's evaluation reads, from its protocol: "tokens" when it has them (loss), else 256 per
    /// item (multiple choice, generation): an estimate, used only to balance shards.</summary>
    public static double EvalTokens(IEnumerable<IPreparedTask> tasks)
    {
        ArgumentNullException.ThrowIfNull(tasks);
        double sum = 0;
        foreach (var t in tasks)
            sum += t.Protocol.TryGetValue("tokens", out var tokens) ? tokens
                : t.Protocol.TryGetValue("items", out var items) ? 256 * items : 256;
        return Math.Max(sum, 1);
    }

    /// <summary>
    /// The estimated cost of one variant in token-forwards through the whole model: evaluation reads
    /// <paramref name="evalTokens"/> tokens through the L − n kept layers; healing adds steps × batch × seq_len tokens,
    /// each a forward and a backward (≈ 3 forwards, Kaplan et al. 2020), through the same layers.
    /// </summary>
    public static double Cost(int layers, int n, bool healed, double evalTokens, HealOptions? heal)
    {
        double kept = (layers - n) / (double)layers;
        double cost = evalTokens * kept;
        if (healed && heal is not null) cost += 3.0 * heal.Steps * heal.Batch * heal.SeqLen * kept;
        return cost;
    }
}
