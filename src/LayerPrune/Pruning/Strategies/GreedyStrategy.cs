using System.Text.Json.Nodes;
using LayerPrune.Reporting;

namespace LayerPrune.Pruning.Strategies;

/// <summary>One round of <see cref="GreedyStrategy"/>: the layer removed and the calibration loss without it (and the earlier
/// ones).</summary>
public sealed record GreedyRound(int Removed, double Loss);

/// <summary>
/// SLEB-style greedy removal (Song et al. 2024): n rounds; each round evaluates the calibration loss with every
/// remaining layer skipped in turn (in memory) and removes the one giving the lowest loss (ties: lower index). The
/// rounds are nested, so one run to n gives the plans for every smaller n too.
/// </summary>
public sealed class GreedyStrategy
{
    /// <summary>The strategy's name in plans and sweeps.</summary>
    public const string Name = "greedy";

    /// <summary>Rounds in order (round k removed <c>Rounds[k].Removed</c>).</summary>
    public required IReadOnlyList<GreedyRound> Rounds { get; init; }
    /// <summary>Calibration loss of the unpruned model.</summary>
    public required double BaseLoss { get; init; }
    /// <summary>Layers of the unpruned model.</summary>
    public required int Layers { get; init; }
    /// <summary>Calibration chunks the loss is averaged over.</summary>
    public required int CalibrationChunks { get; init; }
    /// <summary>Whether the final layer was kept out of the search.</summary>
    public required bool ProtectLast { get; init; }
    /// <summary>Cost after each round (cumulative): the plan for n records Costs[n−1].</summary>
    public required IReadOnlyList<SelectionCost> Costs { get; init; }

    /// <summary>Runs <paramref name="rounds"/> rounds on <paramref name="loss"/>'s model and calibration chunks.</summary>
    public static GreedyStrategy Run(CalibrationLoss loss, int rounds, bool protectLast = false, IProgressSink? progress = null)
    {
        int L = loss.Model.NumLayers;
        Candidates.CheckN(rounds, L, protectLast);
        var kept = Enumerable.Range(0, L).ToList();
        var removable = Candidates.Removable(L, protectLast).ToHashSet();
        long evaluations = Enumerable.Range(0, rounds).Sum(r => removable.Count - r) + 1;
        using var p = CalibrationLoss.Progress("greedy", evaluations, progress);
        double baseLoss = loss.Loss(kept);
        p.Advance();
        var result = new List<GreedyRound>();
        var costs = new List<SelectionCost>();
        for (int r = 0; r < rounds; r++)
        {
            int best = -1;
            double bestLoss = double.PositiveInfinity;
            foreach (int c in kept.Where(removable.Contains).ToList())
            {
                double l = loss.LossWithout(kept, kept.IndexOf(c));
                p.Advance(1, $"round {r + 1}: without {c}");
                if (l < bestLoss) { bestLoss = l; best = c; }
            }
            kept.Remove(best);
            result.Add(new GreedyRound(best, bestLoss));
            costs.Add(loss.Cost);
        }
        return new GreedyStrategy
        {
            Rounds = result, BaseLoss = baseLoss, Layers = L, CalibrationChunks = loss.Chunks, ProtectLast = protectLast, Costs = costs,
        };
    }

    /// <summary>The first <paramref name="n"/> rounds' layers (n ≤ the rounds run).</summary>
    public PrunePlan Plan(int n)
    {
        if (n < 1 || n > Rounds.Count) throw new ArgumentOutOfRangeException(nameof(n), n, $"greedy ran {Rounds.Count} rounds");
        var selection = new JsonObject
        {
            ["method"] = "SLEB-style greedy: each round removes the remaining layer whose removal gives the lowest calibration loss",
            ["protect_last"] = ProtectLast,
            ["calibration_chunks"] = CalibrationChunks,
            ["base_loss"] = BaseLoss,
            ["order"] = new JsonArray(Rounds.Take(n).Select(r => (JsonNode?)new JsonObject { ["removed"] = r.Removed, ["loss"] = r.Loss })
                .ToArray()),
            ["calibration_loss"] = Rounds[n - 1].Loss,
            ["cost"] = Costs[n - 1].ToJson(),
        };
        return Candidates.Plan(Name, Layers, Rounds.Take(n).Select(r => r.Removed), selection);
    }
}
