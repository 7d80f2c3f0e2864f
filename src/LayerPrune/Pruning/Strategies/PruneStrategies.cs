using System.Diagnostics;
using System.Text.Json.Nodes;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Similarity;

namespace LayerPrune.Pruning.Strategies;

/// <summary>What the strategies may need; the data is produced lazily, only for the strategies that read it.</summary>
public sealed record StrategyInputs
{
    /// <summary>The model the choice is made on (layers are skipped in memory; nothing is written).</summary>
    public required CausalLM Model { get; init; }
    /// <summary>Samples of the similarity pass (similarity, bi); called at most once.</summary>
    public Func<IReadOnlyList<int[]>>? SimilaritySamples { get; init; }
    /// <summary>An already computed similarity pass to reuse (must hold the metric's matrix).</summary>
    public SimilarityResult? Similarity { get; init; }
    /// <summary>Equal-length calibration chunks of greedy and loss-rank; called at most once.</summary>
    public Func<IReadOnlyList<int[]>>? CalibrationChunks { get; init; }
    /// <summary>Metric of the similarity strategy.</summary>
    public SimilarityMetric Metric { get; init; } = SimilarityMetric.Angular;
    /// <summary>Never remove the final layer.</summary>
    public bool ProtectLast { get; init; }
    /// <summary>Samples per forward batch of similarity and calibration passes.</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Seed of the random strategy.</summary>
    public int Seed { get; init; }
    /// <summary>Progress of the passes; null for none.</summary>
    public IProgressSink? Progress { get; init; }
}

/// <summary>
/// Every layer-selection strategy behind one call: <see cref="Prepare"/> does the strategy's measuring once (a
/// similarity pass, the greedy rounds up to the largest n, or the per-layer losses) and returns the plan for any n.
/// </summary>
public static class PruneStrategies
{
    /// <summary>The strategies in the order reports list them.</summary>
    public static readonly IReadOnlyList<string> Names =
        ["similarity", BlockInfluenceStrategy.Name, GreedyStrategy.Name, LossRankStrategy.Name, "deepest", "shallowest", "random"];

    /// <summary>Whether <paramref name="name"/> needs a similarity pass, calibration chunks, or nothing.</summary>
    public static bool NeedsSimilarity(string name) => name is "similarity" or BlockInfluenceStrategy.Name;
    /// <summary>Whether strategy <paramref name="name"/> needs calibration chunks.</summary>
    public static bool NeedsCalibration(string name) => name is GreedyStrategy.Name or LossRankStrategy.Name;

    /// <summary>
    /// Measures what <paramref name="name"/> needs and returns its plan for every n in 1 … <paramref name="maxN"/>.
    /// Throws <see cref="ArgumentException"/> for an unknown name or missing inputs.
    /// </summary>
    public static Func<int, PrunePlan> Prepare(string name, StrategyInputs inputs, int maxN)
    {
        int L = inputs.Model.NumLayers;
        Candidates.CheckN(maxN, L, inputs.ProtectLast && name != "deepest");
        switch (name)
        {
            case "similarity":
            {
                var metric = inputs.Metric;
                var (s, cost) = MeasureSimilarity(inputs, metric);
                return n => SimilarityStrategy.Plan(s, n, metric, inputs.ProtectLast, cost);
            }
            case BlockInfluenceStrategy.Name:
            {
                var (s, cost) = MeasureSimilarity(inputs, SimilarityMetric.BlockInfluence);
                return n => BlockInfluenceStrategy.Plan(s, n, inputs.ProtectLast, cost);
            }
            case GreedyStrategy.Name:
            {
                using var loss = Calibration(inputs);
                var g = GreedyStrategy.Run(loss, maxN, inputs.ProtectLast, inputs.Progress);
                return g.Plan;
            }
            case LossRankStrategy.Name:
            {
                using var loss = Calibration(inputs);
                var r = LossRankStrategy.Run(loss, inputs.ProtectLast, inputs.Progress);
                return r.Plan;
            }
            case "deepest" or "shallowest" or "random": return n => Rule(name, n, L, inputs.Seed, inputs.ProtectLast);
            default: throw new ArgumentException($"unknown strategy '{name}' (known: {string.Join(", ", Names)})", nameof(name));
        }
    }

    /// <summary>The rules that need no measurement: deepest, shallowest, random (seeded).</summary>
    public static PrunePlan Rule(string name, int n, int layers, int seed = 0, bool protectLast = false) => name switch
    {
        "deepest" => WithRule(PrunePlan.Deepest(n, layers), "the n deepest layers except the final one (L-1-n .. L-2)"),
        "shallowest" => Shallowest(n, layers, protectLast),
        "random" => RandomBlock(n, layers, seed, protectLast),
        _ => throw new ArgumentException($"'{name}' is not a rule (deepest, shallowest, random)", nameof(name)),
    };

    static (SimilarityResult, SelectionCost) MeasureSimilarity(StrategyInputs inputs, SimilarityMetric metric)
    {
        if (inputs.Similarity is { } given && given.MatrixOf(metric) is not null)
            return (given, SelectionCost.SimilarityPass(given.Samples, 0, inputs.Model.NumLayers, 0));
        var samples = inputs.SimilaritySamples?.Invoke()
            ?? throw new ArgumentException("the similarity strategies need similarity samples", nameof(inputs));
        var clock = Stopwatch.StartNew();
        using var p = ProgressReporter.Start("similarity", samples.Count, "samples", inputs.Progress ?? NullProgressSink.Instance,
            clock: null);
        var s = LayerSimilarity.Compute(inputs.Model, samples, inputs.BatchSize, blockInfluence: metric == SimilarityMetric.BlockInfluence,
                                        onSamplesDone: n => p.Advance(n), cka: metric == SimilarityMetric.Cka);
        long tokens = samples.Sum(x => (long)x.Length);
        return (s, SelectionCost.SimilarityPass(samples.Count, tokens, inputs.Model.NumLayers, clock.Elapsed.TotalSeconds));
    }

    static CalibrationLoss Calibration(StrategyInputs inputs)
    {
        var chunks = inputs.CalibrationChunks?.Invoke()
            ?? throw new ArgumentException("greedy and loss-rank need calibration chunks", nameof(inputs));
        return new CalibrationLoss(inputs.Model, chunks, inputs.BatchSize);
    }

    static PrunePlan WithRule(PrunePlan plan, string rule, JsonObject? extra = null)
    {
        var selection = new JsonObject { ["method"] = rule, ["cost"] = SelectionCost.None.ToJson() };
        foreach (var (k, v) in extra ?? []) selection[k] = v?.DeepClone();
        return plan with { Selection = selection };
    }

    /// <summary>Layers 1 … n (layer 0 stays); with <paramref name="protectLast"/> n ≤ L − 2.</summary>
    public static PrunePlan Shallowest(int n, int layers, bool protectLast)
    {
        Candidates.CheckN(n, layers, protectLast);
        return WithRule(PrunePlan.Shallowest(n, layers), "layers 1..n (layer 0 stays)");
    }

    /// <summary>A seeded random contiguous block; without <paramref name="protectLast"/> exactly
    /// <see cref="PrunePlan.RandomBlock"/>.</summary>
    public static PrunePlan RandomBlock(int n, int layers, int seed, bool protectLast)
    {
        Candidates.CheckN(n, layers, protectLast);
        var extra = new JsonObject { ["seed"] = seed, ["protect_last"] = protectLast };
        if (!protectLast) return WithRule(PrunePlan.RandomBlock(n, layers, seed), "a random contiguous block (seeded)", extra);
        int start = new Random(seed * 1000003 + n).Next(0, layers - n);
        var plan = new PrunePlan("random", layers, Enumerable.Range(start, n).ToArray());
        return WithRule(plan, "a random contiguous block that keeps the final layer (seeded)", extra);
    }
}
