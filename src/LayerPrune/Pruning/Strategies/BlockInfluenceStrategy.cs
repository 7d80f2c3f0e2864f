using System.Text.Json.Nodes;
using LayerPrune.Similarity;

namespace LayerPrune.Pruning.Strategies;

/// <summary>
/// ShortGPT (Men et al. 2024): Block Influence of layer i, BI_i = mean over all valid tokens of 1 − cos(x_i, x_{i+1});
/// remove the n layers of lowest BI (ties: lower index first), contiguous or not. One similarity pass for every n.
/// </summary>
public static class BlockInfluenceStrategy
{
    /// <summary>The strategy's name in plans and sweeps.</summary>
    public const string Name = "bi";

    /// <summary>Layers by increasing BI (the removal order), the final layer left out when <paramref name="protectLast"/>.</summary>
    public static int[] Ranking(double[] blockInfluence, bool protectLast) =>
        Candidates.Removable(blockInfluence.Length, protectLast).OrderBy(i => blockInfluence[i]).ThenBy(i => i).ToArray();

    /// <summary>The n lowest-BI layers of <paramref name="s"/> (computed with block influence).</summary>
    /// <param name="cost">What the similarity pass cost (recorded in the plan).</param>
    /// <param name="s">A similarity pass holding block influence.</param>
    /// <param name="n">Layers to remove.</param>
    /// <param name="protectLast">Never remove the final layer.</param>
    public static PrunePlan Plan(SimilarityResult s, int n, bool protectLast, SelectionCost cost)
    {
        var bi = s.BlockInfluence
            ?? throw new ArgumentException("the similarity result holds no block influence (compute it with blockInfluence: true)",
                nameof(s));
        Candidates.CheckN(n, s.Layers, protectLast);
        var ranking = Ranking(bi, protectLast);
        var selection = new JsonObject
        {
            ["method"] = "ShortGPT Block Influence: BI_i = mean over all valid tokens of 1 - cos(input of layer i, output of layer i); " +
                "the n lowest removed",
            ["protect_last"] = protectLast,
            ["samples"] = s.Samples,
            ["block_influence"] = new JsonArray(bi.Select(v => (JsonNode?)v).ToArray()),
            ["lowest_first"] = new JsonArray(ranking.Select(i => (JsonNode?)i).ToArray()),
            ["cost"] = cost.ToJson(),
        };
        return Candidates.Plan(Name, s.Layers, ranking.Take(n), selection);
    }
}
