using System.Diagnostics;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using static TorchSharp.torch;

namespace LayerPrune.Pruning.Strategies;

/// <summary>Each candidate sublayer's LLM-Drop score: mean over real tokens of cos(x, x + F(norm(x))).</summary>
/// <param name="Scores">Candidate → mean cosine (higher = changes the residual stream less = dropped first).</param>
/// <param name="Tokens">Tokens averaged over.</param>
/// <param name="Seconds">Wall-clock seconds of the pass.</param>
public sealed record SublayerSimilarity(IReadOnlyDictionary<Sublayer, double> Scores, long Tokens, double Seconds);

/// <summary>
/// Strategies at the sublayer units (attention, mlp, or both ranked together):
/// <list type="bullet">
/// <item><c>similarity</c>: LLM-Drop (He et al. 2024, "What Matters in Transformers? Not All Attention is Needed"): every
/// sublayer's cos(x, x + F(norm(x))) averaged over tokens, all in one pass of the full model; the n most similar go.</item>
/// <item><c>greedy</c>: BlockPruner (Zhong et al. 2024): n rounds, each removing the sublayer whose removal gives the lowest
/// calibration loss; the residual states entering each layer are reused, so a trial runs only from its layer on.</item>
/// <item><c>deepest</c>: the n deepest sublayers of the unit, the last layer's excepted (MLP deeper than attention).</item>
/// <item><c>random</c>: n candidates drawn with a seed.</item>
/// </list>
/// </summary>
public static class SublayerStrategies
{
    /// <summary>The strategies at sublayer units.</summary>
    public static readonly IReadOnlyList<string> Names = ["similarity", "greedy", "deepest", "random"];

    /// <summary>Whether <paramref name="name"/> needs similarity samples.</summary>
    public static bool NeedsSimilarity(string name) => name == "similarity";
    /// <summary>Whether <paramref name="name"/> needs calibration chunks.</summary>
    public static bool NeedsCalibration(string name) => name == "greedy";

    /// <summary>Candidates of <paramref name="unit"/> in <paramref name="c"/>.</summary>
    public static IReadOnlyList<Sublayer> Candidates(ModelConfig c, PruneUnit unit) => PruneUnits.Candidates(c, unit);

    /// <summary>
    /// Measures what <paramref name="name"/> needs once and returns its plan for every n in 1 … <paramref name="maxN"/>.
    /// </summary>
    public static Func<int, SublayerPlan> Prepare(string name, PruneUnit unit, StrategyInputs inputs, int maxN)
    {
        if (unit == PruneUnit.Layer) throw new ArgumentException("use PruneStrategies for whole layers", nameof(unit));
        var c = inputs.Model.Config;
        var candidates = Candidates(c, unit);
        int limit = name == "deepest" ? candidates.Count(s => s.Layer < c.NumLayers - 1) : candidates.Count;
        if (maxN < 1 || maxN > limit)
            throw LayerPruneException.Invalid("n", maxN, $"must be between 1 and {limit} ({unit.Name()} sublayers the {name} strategy " +
                                                       $"may remove in this {c.NumLayers}-layer model)");
        switch (name)
        {
            case "similarity":
            {
                var samples = inputs.SimilaritySamples?.Invoke()
                    ?? throw new ArgumentException("the similarity strategy needs similarity samples", nameof(inputs));
                var s = Similarity(inputs.Model, samples, inputs.BatchSize, inputs.Progress);
                var ranked = candidates.OrderByDescending(x => s.Scores[x]).ThenBy(x => x.Layer).ThenBy(x => x.Kind).ToList();
                return n =>
                {
                    var selection = new JsonObject
                    {
                        ["method"] = "LLM-Drop: the n sublayers with the highest mean cos(x, x + F(norm(x))) over tokens",
                        ["scores"] = new JsonObject(candidates.Select(x => KeyValuePair.Create(x.ToString(), (JsonNode?)s.Scores[x]))),
                        ["cost"] = new SelectionCost(samples.Count, (long)samples.Count * c.NumLayers, s.Tokens, s.Seconds).ToJson(),
                    };
                    return SublayerPlan.Create("similarity", unit, c, ranked.Take(n), selection);
                };
            }
            case "greedy":
            {
                var chunks = inputs.CalibrationChunks?.Invoke()
                    ?? throw new ArgumentException("greedy needs calibration chunks", nameof(inputs));
                var rounds = Greedy(inputs.Model, chunks, candidates, maxN, inputs.BatchSize, inputs.Progress, out double baseLoss,
                                    out var cost);
                return n =>
                {
                    var selection = new JsonObject
                    {
                        ["method"] = "BlockPruner greedy: each round removes the sublayer whose removal gives the lowest calibration loss",
                        ["base_loss"] = baseLoss,
                        ["order"] = new JsonArray(rounds.Take(n).Select(r => (JsonNode?)new JsonObject
                            { ["removed"] = r.Removed.ToString(), ["loss"] = r.Loss }).ToArray()),
                        ["calibration_loss"] = rounds[n - 1].Loss,
                        ["calibration_chunks"] = chunks.Count,
                        ["cost"] = cost[n - 1].ToJson(),
                    };
                    return SublayerPlan.Create("greedy", unit, c, rounds.Take(n).Select(r => r.Removed), selection);
                };
            }
            case "deepest":
            {
                var order = candidates.Where(s => s.Layer < c.NumLayers - 1).OrderByDescending(s => s.Layer).ThenByDescending(s => s.Kind)
                    .ToList();
                return n => SublayerPlan.Create("deepest", unit, c, order.Take(n),
                                                Rule("the n deepest sublayers except the final layer's"));
            }
            case "random":
                return n =>
                {
                    var drawn = candidates.OrderBy(_ => 0).ToList();
                    var random = new Random(inputs.Seed * 1000003 + n);
                    for (int i = drawn.Count - 1; i > 0; i--)
                    {
                        int j = random.Next(i + 1);
                        (drawn[i], drawn[j]) = (drawn[j], drawn[i]);
                    }
                    var rule = Rule("n sublayers drawn at random (seeded)");
                    rule["seed"] = inputs.Seed;
                    return SublayerPlan.Create("random", unit, c, drawn.Take(n), rule);
                };
            default:
                throw new ArgumentException($"unknown sublayer strategy '{name}' (known: {string.Join(", ", Names)})", nameof(name));
        }
    }

    static JsonObject Rule(string method) => new() { ["method"] = method, ["cost"] = SelectionCost.None.ToJson() };

    /// <summary>
    /// LLM-Drop scores of every sublayer the model has, in one pass over <paramref name="samples"/> (layer-major; works on an
    /// offloaded model too). A sublayer's input x is the residual stream entering it (Llama: x for attention, h = x + attn
    /// for the MLP; Phi's parallel block: x for both), its output x + F(norm(x)).
    /// </summary>
    public static SublayerSimilarity Similarity(CausalLM model, IReadOnlyList<int[]> samples, int batchSize = 8,
        IProgressSink? progress = null)
    {
        if (samples.Count == 0) throw new ArgumentException("no samples", nameof(samples));
        var clock = Stopwatch.StartNew();
        var c = model.Config;
        bool parallel = c.Family == ArchitectureFamily.Phi;
        var sums = new Dictionary<Sublayer, double>();
        long tokens = samples.Sum(s => (long)s.Length);
        using var _ = no_grad();
        // Equal-length groups: no padding, every position is a real token.
        var batches = samples.GroupBy(s => s.Length).SelectMany(gr => gr.Chunk(Math.Max(1, batchSize))).ToList();
        var states = new List<(Tensor X, AttentionInputs Att)>();
        try
        {
            foreach (var b in batches)
            {
                var ids = tensor(b.SelectMany(s => s.Select(x => (long)x)).ToArray(), [b.Length, b[0].Length]);
                var x = model.Embed(ids).DetachFromDisposeScope();
                ids.Dispose();
                var att = model.PrepareAttention(b.Length, b[0].Length, 0, null);
                states.Add((x, att));
            }
            using var p = ProgressReporter.Start("sublayer similarity", c.NumLayers, "layers", progress ?? NullProgressSink.Instance,
                                                 clock: null);
            model.ForEachLayer(null, (k, layer) =>
            {
                var onlyAttention = new SublayerMask([], [k]);
                var onlyMlp = new SublayerMask([k], []);
                for (int bi = 0; bi < states.Count; bi++)
                {
                    using var scope = NewDisposeScope();
                    var (x, att) = states[bi];
                    Tensor h = x;
                    if (c.HasAttention(k))
                    {
                        att.Skip = onlyAttention;
                        h = layer.Forward(x, att, null, k);                                // x + attn(norm(x))
                        Add(sums, new Sublayer(k, SublayerKind.Attention), CosSum(x, h));
                    }
                    Tensor next;
                    if (c.HasMlp(k))
                    {
                        var input = parallel ? x : h;
                        att.Skip = onlyMlp;
                        var o = layer.Forward(input, att, null, k);                         // input + mlp(norm(input))
                        Add(sums, new Sublayer(k, SublayerKind.Mlp), CosSum(input, o));
                        att.Skip = null;
                        next = parallel ? layer.Forward(x, att, null, k) : o;
                    }
                    else next = h;
                    att.Skip = null;
                    states[bi] = (next.DetachFromDisposeScope(), att);
                    if (!ReferenceEquals(next, x)) x.Dispose();
                }
                p.Advance();
            });
        }
        finally
        {
            foreach (var (x, att) in states) { x.Dispose(); att.Dispose(); }
        }
        var scores = sums.ToDictionary(kv => kv.Key, kv => kv.Value / tokens);
        return new SublayerSimilarity(scores, tokens, clock.Elapsed.TotalSeconds);
    }

    static void Add(Dictionary<Sublayer, double> sums, Sublayer s, double v) => sums[s] = sums.GetValueOrDefault(s) + v;

    /// <summary>Σ over positions of cos(a, b) along the hidden dimension, in float64.</summary>
    static double CosSum(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var a64 = a.to(ScalarType.Float64);
        var b64 = b.to(ScalarType.Float64);
        var cos = (a64 * b64).sum(-1) / (a64.norm(-1) * b64.norm(-1)).clamp_min(1e-30);
        return cos.sum().item<double>();
    }

    /// <summary>One greedy round: the sublayer removed and the calibration loss without it and the earlier ones.</summary>
    public sealed record Round(Sublayer Removed, double Loss);

    /// <summary>
    /// BlockPruner's greedy search over <paramref name="candidates"/> for <paramref name="rounds"/> rounds (ties: the
    /// earlier candidate). Resident models only: the states entering every layer under the current removals are kept.
    /// </summary>
    public static IReadOnlyList<Round> Greedy(CausalLM model, IReadOnlyList<int[]> chunks, IReadOnlyList<Sublayer> candidates, int rounds,
        int batchSize, IProgressSink? progress, out double baseLoss, out IReadOnlyList<SelectionCost> costs)
    {
        if (model.Offloaded) throw new LayerPruneException("greedy sublayer selection needs a resident model (it runs many loss passes)");
        if (chunks.Count == 0) throw new ArgumentException("no calibration chunks", nameof(chunks));
        var clock = Stopwatch.StartNew();
        long passes = 0, layerForwards = 0, tokens = 0, perPass = chunks.Sum(x => (long)x.Length);
        using var _ = no_grad();
        var batches = chunks.GroupBy(s => s.Length).SelectMany(g => g.Chunk(Math.Max(1, batchSize))).Select(b =>
        {
            var ids = tensor(b.SelectMany(s => s.Select(x => (long)x)).ToArray(), [b.Length, b[0].Length]).DetachFromDisposeScope();
            var att = model.PrepareAttention(b.Length, b[0].Length, 0, null);
            return (ids, att);
        }).ToList();
        int L = model.NumLayers;
        var removed = new List<Sublayer>();
        var prefix = new Tensor[batches.Count][];
        try
        {
            // States entering every layer under the current removals; recomputed from the changed layer on after each round.
            void Refresh(int from)
            {
                for (int b = 0; b < batches.Count; b++)
                {
                    prefix[b] ??= new Tensor[L + 1];
                    if (from == 0) { prefix[b][0]?.Dispose(); prefix[b][0] = model.Embed(batches[b].ids).DetachFromDisposeScope(); }
                    var att = batches[b].att;
                    att.Skip = SublayerMask.Of(removed);
                    for (int i = from; i < L; i++)
                    {
                        prefix[b][i + 1]?.Dispose();
                        prefix[b][i + 1] = model.Layer(i).Forward(prefix[b][i], att, null, i).DetachFromDisposeScope();
                    }
                    att.Skip = null;
                }
                layerForwards += (long)chunks.Count * (L - from);
            }
            double LossFrom(int from, SublayerMask mask)
            {
                double total = 0;
                long count = 0;
                for (int b = 0; b < batches.Count; b++)
                {
                    using var scope = NewDisposeScope();
                    var (ids, att) = batches[b];
                    att.Skip = mask;
                    var h = prefix[b][from];
                    for (int i = from; i < L; i++) h = model.Layer(i).Forward(h, att, null, i);
                    att.Skip = null;
                    var (sum, predictions) = CalibrationLoss.NextTokenLossSum(model, h, ids);
                    total += sum;
                    count += predictions;
                }
                passes += chunks.Count;
                layerForwards += (long)chunks.Count * (L - from);
                tokens += perPass;
                return total / count;
            }
            long evaluations = 1 + Enumerable.Range(0, rounds).Sum(r => (long)candidates.Count - r);
            using var p = ProgressReporter.Start("greedy", evaluations, "evaluations", progress ?? NullProgressSink.Instance, clock: null);
            Refresh(0);
            baseLoss = LossFrom(L, SublayerMask.Of(removed));
            p.Advance();
            var result = new List<Round>();
            var costList = new List<SelectionCost>();
            for (int r = 0; r < rounds; r++)
            {
                Sublayer? best = null;
                double bestLoss = double.PositiveInfinity;
                foreach (var cand in candidates.Where(x => !removed.Contains(x)))
                {
                    var trial = SublayerMask.Of(removed.Append(cand));
                    double loss = LossFrom(cand.Layer, trial);   // the states entering cand's layer are unchanged by it
                    p.Advance(1, $"round {r + 1}: without {cand}");
                    if (loss < bestLoss) { bestLoss = loss; best = cand; }
                }
                removed.Add(best!.Value);
                result.Add(new Round(best.Value, bestLoss));
                costList.Add(new SelectionCost(passes, layerForwards, tokens, clock.Elapsed.TotalSeconds));
                if (r + 1 < rounds) Refresh(best.Value.Layer);
            }
            costs = costList;
            return result;
        }
        finally
        {
            foreach (var (ids, att) in batches) { ids.Dispose(); att.Dispose(); }
            foreach (var states in prefix) foreach (var t in states ?? []) t?.Dispose();
        }
    }
}
