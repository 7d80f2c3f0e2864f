namespace LayerPrune.Pruning.Strategies;

/// <summary>Shared checks and plan construction of the strategies.</summary>
public static class Candidates
{
    /// <summary>Layers a strategy may remove: all, or all but the final layer L−1 when <paramref name="protectLast"/>.</summary>
    public static int[] Removable(int layers, bool protectLast) => Enumerable.Range(0, protectLast ? layers - 1 : layers).ToArray();

    /// <summary>Throws unless 1 ≤ n ≤ the number of removable layers minus what must stay (at least one layer kept).</summary>
    public static void CheckN(int n, int layers, bool protectLast)
    {
        int max = protectLast ? layers - 2 : layers - 1;
        if (n < 1 || n > max)
            throw new LayerPruneException($"block size n = {n}: must be between 1 and {max} " +
                                          $"(the model has {layers} layers{(protectLast ? " and the final one is protected" : "")})");
    }

    /// <summary>A plan removing <paramref name="removed"/> (any order; stored sorted).</summary>
    public static PrunePlan Plan(string strategy, int layers, IEnumerable<int> removed, System.Text.Json.Nodes.JsonObject selection,
                                 double? distance = null)
    {
        var r = removed.Order().ToArray();
        if (r.Length == 0 || r.Length >= layers || r.Distinct().Count() != r.Length || r[0] < 0 || r[^1] >= layers)
            throw new LayerPruneException($"{strategy}: invalid removal set [{string.Join(",", r)}] for {layers} layers");
        return new PrunePlan(strategy, layers, r, distance, Selection: selection);
    }
}
