using System.Text.Json.Nodes;
using LayerPrune.Similarity;

namespace LayerPrune.Pruning.Strategies;

/// <summary>
/// The paper's rule (Gromov et al.): remove the contiguous block [l*(n), l*(n)+n) whose input and output states are
/// closest by the chosen metric (angular distance at the last token; or 1 − linear CKA, or all-token 1 − cos).
/// </summary>
public static class SimilarityStrategy
{
    /// <summary>"similarity" for the paper's angular metric, "similarity-cka" / "similarity-bi" for the others.</summary>
    public static string NameOf(SimilarityMetric metric) =>
        metric == SimilarityMetric.Angular ? "similarity" : "similarity-" + SimilarityMetrics.Name(metric);

    /// <summary>The block l*(n) of <paramref name="s"/> by <paramref name="metric"/>; the final layer kept when
    /// <paramref name="protectLast"/>.</summary>
    public static PrunePlan Plan(SimilarityResult s, int n, SimilarityMetric metric, bool protectLast, SelectionCost cost)
    {
        var best = s.BestFor(n, metric, protectLast);
        var selection = new JsonObject
        {
            ["method"] = "contiguous block [start, start+n) minimising the metric between the residual state entering it and the one " +
                "leaving it",
            ["metric"] = SimilarityMetrics.Name(metric),
            ["metric_value"] = best.Distance,
            ["start"] = best.Start,
            ["end_exclusive"] = best.EndExclusive,
            ["protect_last"] = protectLast,
            ["samples"] = s.Samples,
            ["cost"] = cost.ToJson(),
        };
        double? angular = s.Matrix[best.Start, best.EndExclusive];
        return Candidates.Plan(NameOf(metric), s.Layers, Enumerable.Range(best.Start, n), selection, angular);
    }
}
