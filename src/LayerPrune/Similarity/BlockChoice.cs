namespace LayerPrune.Similarity;

/// <summary>Block choice l*(n) by any metric of a <see cref="SimilarityResult"/>, optionally never removing the final layer.</summary>
public static class BlockChoice
{
    /// <summary>The (L+1)×(L+1) distance matrix of <paramref name="metric"/>, or null when the pass did not compute it.</summary>
    public static double[,]? MatrixOf(this SimilarityResult r, SimilarityMetric metric) => metric switch
    {
        SimilarityMetric.Angular => r.Matrix,
        SimilarityMetric.BlockInfluence => r.BlockInfluenceMatrix,
        _ => r.CkaDistance,
    };

    /// <summary>The largest block size that can be chosen: L − 1, or L − 2 when the final layer is protected.</summary>
    public static int MaxBlockSize(int layers, bool protectLast) => protectLast ? layers - 2 : layers - 1;

    /// <summary>
    /// l*(n) = argmin over l of D(l, l+n) for <paramref name="metric"/> (ties: smallest l). With
    /// <paramref name="protectLast"/> only blocks that keep the final layer L−1 are candidates (l + n ≤ L − 1).
    /// </summary>
    public static BestBlock BestFor(this SimilarityResult r, int n, SimilarityMetric metric, bool protectLast = false)
    {
        var m = r.MatrixOf(metric)
            ?? throw new LayerPruneException($"similarity: the {SimilarityMetrics.Name(metric)} matrix was not computed");
        return Best(m, n, protectLast);
    }

    /// <summary><see cref="BestFor"/> on a bare (L+1)×(L+1) matrix.</summary>
    public static BestBlock Best(double[,] m, int n, bool protectLast)
    {
        int L = m.GetLength(0) - 1;
        int max = MaxBlockSize(L, protectLast);
        if (n < 1 || n > max)
            throw new LayerPruneException($"block size n = {n}: must be between 1 and {max} " +
                                          $"(the model has {L} layers{(protectLast ? " and the final one is protected" : "")})");
        int lastStart = protectLast ? L - 1 - n : L - n;
        int best = 0;
        for (int l = 1; l <= lastStart; l++)
            if (m[l, l + n] < m[best, best + n]) best = l;
        return new BestBlock(n, best, best + n, m[best, best + n]);
    }

    /// <summary>l*(n) for every n = 1 … <see cref="MaxBlockSize"/>.</summary>
    public static IReadOnlyList<BestBlock> BestAll(this SimilarityResult r, SimilarityMetric metric, bool protectLast = false) =>
        Enumerable.Range(1, MaxBlockSize(r.Layers, protectLast)).Select(n => r.BestFor(n, metric, protectLast)).ToList();
}
