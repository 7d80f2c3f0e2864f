using System.Text.Json.Nodes;
using LayerPrune.Reporting;

namespace LayerPrune.Pruning.Strategies;

/// <summary>
/// Shortened LLaMA's one-shot ranking (Kim et al. 2024, perplexity criterion): the calibration loss with each single
/// layer removed; the n layers whose removal hurts least (lowest loss; ties: lower index) are removed together.
/// L evaluations give the plans for every n.
/// </summary>
public sealed class LossRankStrategy
{
    /// <summary>The strategy's name in plans and sweeps.</summary>
    public const string Name = "loss-rank";

    /// <summary>Calibration loss with layer i removed (NaN for a protected layer, which is never evaluated).</summary>
    public required double[] LossWithout { get; init; }
    /// <summary>Calibration loss of the unpruned model.</summary>
    public required double BaseLoss { get; init; }
    /// <summary>Calibration chunks the loss is averaged over.</summary>
    public required int CalibrationChunks { get; init; }
    /// <summary>Whether the final layer was kept out of the ranking.</summary>
    public required bool ProtectLast { get; init; }
    /// <summary>What the ranking cost.</summary>
    public required SelectionCost Cost { get; init; }

    /// <summary>Evaluates every removable layer once on <paramref name="loss"/>'s model and calibration chunks.</summary>
    public static LossRankStrategy Run(CalibrationLoss loss, bool protectLast = false, IProgressSink? progress = null)
    {
        int L = loss.Model.NumLayers;
        var removable = Candidates.Removable(L, protectLast);
        using var p = CalibrationLoss.Progress("loss-rank", removable.Length + 1, progress);
        double baseLoss = loss.Loss(Enumerable.Range(0, L).ToList());
        p.Advance();
        var without = Enumerable.Repeat(double.NaN, L).ToArray();
        foreach (int c in removable)
        {
            without[c] = loss.LossWithout(Enumerable.Range(0, L).ToList(), c);
            p.Advance(1, $"without {c}");
        }
        return new LossRankStrategy { LossWithout = without, BaseLoss = baseLoss, CalibrationChunks = loss.Chunks,
            ProtectLast = protectLast, Cost = loss.Cost };
    }

    /// <summary>Layers by increasing loss-without (the removal order).</summary>
    public int[] Ranking => Enumerable.Range(0, LossWithout.Length).Where(i => !double.IsNaN(LossWithout[i]))
        .OrderBy(i => LossWithout[i]).ThenBy(i => i).ToArray();

    /// <summary>The <paramref name="n"/> layers of lowest single-removal loss.</summary>
    public PrunePlan Plan(int n)
    {
        Candidates.CheckN(n, LossWithout.Length, ProtectLast);
        var ranking = Ranking;
        var selection = new JsonObject
        {
            ["method"] = "Shortened-LLaMA one-shot: calibration loss with each single layer removed; the n lowest removed together",
            ["protect_last"] = ProtectLast,
            ["calibration_chunks"] = CalibrationChunks,
            ["base_loss"] = BaseLoss,
            ["loss_without_layer"] = new JsonArray(LossWithout.Select(v => double.IsNaN(v) ? null : (JsonNode?)v).ToArray()),
            ["lowest_first"] = new JsonArray(ranking.Select(i => (JsonNode?)i).ToArray()),
            ["cost"] = Cost.ToJson(),
        };
        return Candidates.Plan(Name, LossWithout.Length, ranking.Take(n), selection);
    }
}
