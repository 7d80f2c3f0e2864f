using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;
using LayerPrune.Reporting;
using LayerPrune.Tokenization;
using TorchSharp;

namespace LayerPrune.Sweep;

/// <summary>
/// `sweep --unit attention,mlp,layer` (issue 25): beside the whole-layer variants, each sublayer unit's variants (its
/// strategies similarity / greedy / deepest / random × n sublayers, <see cref="SublayerStrategies"/>) evaluated with the
/// sublayers skipped in memory (<see cref="CausalLM.Skip"/>), all on one axis: removed parameters / decoder parameters
/// (<see cref="RemovedParameters"/>). Every row of such a sweep carries its unit, that fraction and the KV-cache bytes per
/// token of the layers that keep attention; report.md gets one curve per unit × strategy and a table. Without sublayer
/// units nothing here runs and the sweep's rows and report are those of a sweep of whole layers.
/// </summary>
public static class UnitSweep
{
    /// <summary>Whether <paramref name="o"/> sweeps a sublayer unit.</summary>
    public static bool Active(SweepOptions o) => o?.Units is { } u && u.Any(x => x != PruneUnit.Layer);

    /// <summary>The axis, as the figures and report state it.</summary>
    public const string AxisLabel = "removed parameters / decoder parameters";

    /// <summary>Checks <see cref="SweepOptions.Units"/> and what a sweep over sublayer units cannot combine with.</summary>
    public static void Validate(SweepOptions o)
    {
        ArgumentNullException.ThrowIfNull(o);
        if (o.Units is not { } units) return;
        if (units.Count == 0 || units.Distinct().Count() != units.Count)
            throw new ArgumentException("give one or more distinct units (layer, attention, mlp, sublayer)", nameof(SweepOptions.Units));
        if (!Active(o)) return;
        if (!units.Contains(PruneUnit.Layer))
            throw new ArgumentException("include layer: the whole-layer variants are what the sublayer units are compared with",
                nameof(SweepOptions.Units));
        if (!o.Strategies.Any(SublayerStrategies.Names.Contains))
            throw new ArgumentException($"none applies at sublayer units (they take {string.Join(", ", SublayerStrategies.Names)})",
                nameof(SweepOptions.Strategies));
        if (o.Heal is not null)
            throw new ArgumentException("healing applies to whole layers only; sweep sublayer units without it", nameof(SweepOptions.Heal));
        if (o.Repair is not null)
            throw new ArgumentException("repair applies to whole layers only; sweep sublayer units without it",
                nameof(SweepOptions.Repair));
        if (o.Stage is not null)
            throw new ArgumentException("a sweep over sublayer units runs in one process (no cluster stages)", nameof(SweepOptions.Stage));
    }

    /// <summary>Records the units in the sweep's config (only when a sublayer unit is swept: earlier sweeps still resume).</summary>
    public static void AddConfig(JsonObject config, SweepOptions o)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (!Active(o)) return;
        config["units"] = new JsonArray(o.Units!.Select(u => (JsonNode?)u.Name()).ToArray());
        config["unit_axis"] = $"removed_parameter_fraction = {AxisLabel} (tensors of model.layers.*); " +
                              "for a sublayer unit n = sublayers removed and fraction = removed_parameter_fraction";
    }

    /// <summary>A whole-layer row of a sweep over units, with its unit, parameter fraction and KV-cache bytes per token;
    /// any other sweep's row unchanged.</summary>
    public static VariantRow Annotate(VariantRow row, SweepOptions o, CausalLM model)
    {
        ArgumentNullException.ThrowIfNull(row);
        ArgumentNullException.ThrowIfNull(model);
        if (!Active(o)) return row;
        return row with
        {
            Unit = row.N > 0 ? PruneUnit.Layer.Name() : null,
            ParameterFraction = RemovedParameters.Fraction(model.Checkpoint, row.Removed, null),
            KvCacheBytesPerToken = RemovedParameters.KvCacheBytesPerToken(model.Config, row.Removed, null, ElementSize(model)),
        };
    }

    static int ElementSize(CausalLM model)
    {
        using var t = torch.empty(1, dtype: model.Dtype);
        return (int)t.ElementSize;
    }

    /// <summary>One sublayer variant: (unit, strategy, n sublayers, seed).</summary>
    sealed record Job(PruneUnit Unit, string Strategy, int N, int? Seed)
    {
        public string Key => VariantRow.KeyOf(Strategy, N, false, Seed, Unit.Name());
    }

    /// <summary>
    /// The n of a sublayer unit with <paramref name="candidates"/> sublayers: <see cref="SweepOptions.Ns"/> (those below
    /// the count), or each of <see cref="SweepOptions.Fractions"/> × the count (rounded, at least 1), or every n from 1 to
    /// count − 1.
    /// </summary>
    public static IReadOnlyList<int> SizesOf(SweepOptions o, int candidates)
    {
        ArgumentNullException.ThrowIfNull(o);
        var sizes = o.Ns is { } ns ? ns
            : o.Fractions is { } fr ? fr.Select(f => Math.Clamp((int)Math.Round(f * candidates, MidpointRounding.AwayFromZero), 1,
                candidates - 1))
            : Enumerable.Range(1, candidates - 1);
        return sizes.Where(n => n >= 1 && n < candidates).Distinct().Order().ToList();
    }

    static IEnumerable<Job> Jobs(SweepOptions o, ModelConfig c)
    {
        var strategies = o.Strategies.Where(SublayerStrategies.Names.Contains).ToList();
        foreach (var unit in o.Units!.Where(u => u != PruneUnit.Layer))
        {
            var candidates = PruneUnits.Candidates(c, unit);
            int deepest = candidates.Count(s => s.Layer < c.NumLayers - 1);
            foreach (int n in SizesOf(o, candidates.Count))
                foreach (var s in strategies)
                {
                    if (s == "deepest" && n > deepest) continue; // deepest never takes the final layer's sublayers
                    foreach (int? seed in s == "random" && o.Seeds is { } seeds ? seeds.Select(x => (int?)x) : [null])
                        yield return new Job(unit, s, n, seed);
                }
        }
    }

    /// <summary>
    /// Evaluates every sublayer variant not yet in <paramref name="rows"/> and appends its row, calling
    /// <paramref name="write"/> after each (the sweep's atomic results files). A strategy measures (similarity pass, greedy
    /// rounds) only when one of its variants is still to be evaluated.
    /// </summary>
    internal static void Run(CausalLM model, ITextTokenizer tok, SweepOptions o, List<VariantRow> rows, List<IPreparedTask> prepared,
        IReadOnlyList<IReadOnlyList<int>>? prompts, IProgressSink sink, Action write)
    {
        if (!Active(o)) return;
        var c = model.Config;
        var jobs = Jobs(o, c).ToList();
        var done = rows.Select(r => r.Key).ToHashSet();
        var planners = new Dictionary<(PruneUnit, string, int?), Func<int, SublayerPlan>>();
        Func<int, SublayerPlan> Planner(Job j)
        {
            if (planners.TryGetValue((j.Unit, j.Strategy, j.Seed), out var f)) return f;
            var inputs = new StrategyInputs
            {
                Model = model,
                SimilaritySamples = () => SampleLoader.Load(o.DataPath, tok, o.Samples, o.SeqLen),
                CalibrationChunks = () => PreTokenized.LossChunks(o.CalibrationPath ?? o.DataPath, tok, o.SeqLen,
                    o.CalibrationChunks, c.VocabSize),
                BatchSize = o.Batch,
                Seed = j.Seed ?? o.Seed,
                Progress = sink,
            };
            int maxN = jobs.Where(x => x.Unit == j.Unit && x.Strategy == j.Strategy).Max(x => x.N);
            f = SublayerStrategies.Prepare(j.Strategy, j.Unit, inputs, maxN);
            planners[(j.Unit, j.Strategy, j.Seed)] = f;
            return f;
        }
        int elementSize = ElementSize(model);
        using var bar = ProgressReporter.Start("sublayer variants", jobs.Count, "variants", sink, clock: null);
        bar.Advance(jobs.Count(j => done.Contains(j.Key)));
        foreach (var j in jobs)
        {
            if (done.Contains(j.Key)) continue;
            var plan = Planner(j)(j.N);
            var mask = plan.Mask;
            var kept = plan.KeptLayers(c).Select(k => k.Layer).ToList();
            var removedLayers = Enumerable.Range(0, c.NumLayers).Except(kept).ToList();
            OrderedDictionary<string, double> metrics;
            IReadOnlyList<Generation>? generations = null;
            model.Skip = mask; // every forward of the tasks and generations skips the plan's sublayers
            try
            {
                metrics = SweepRunner.Evaluate(prepared, model, kept, sink, SuiteSweep.LmEvalWriter(o, j.Key));
                if (prompts is not null) generations = SweepGenerations.Run(model, tok, prompts, o.GenerationTokens, kept);
            }
            finally
            {
                model.Skip = null;
            }
            if (generations is not null)
                metrics[SweepGenerations.Column] = SweepGenerations.Degeneration(generations.Select(g => g.TokenIds));
            var (efficiency, reference) = o.Efficiency is null ? (null, null) : Measure(model, kept, removedLayers, mask, j.Key, o);
            double fraction = RemovedParameters.Fraction(model.Checkpoint, removedLayers, mask);
            rows.Add(new VariantRow
            {
                Strategy = j.Strategy,
                Unit = j.Unit.Name(),
                N = j.N,
                Fraction = fraction,
                Removed = removedLayers,
                RemovedSublayers = plan.Removed,
                ParameterFraction = fraction,
                KvCacheBytesPerToken = RemovedParameters.KvCacheBytesPerToken(c, removedLayers, mask, elementSize),
                Seed = j.Seed,
                SelectionCost = plan.Selection?["cost"] is JsonObject cost ? VariantRow.CostFromJson(cost) with { Seconds = double.NaN }
                    : null,
                Metrics = metrics,
                Efficiency = efficiency,
                EfficiencyReference = reference,
                Generations = generations,
            });
            write();
            bar.Advance(1, $"{j.Unit.Name()} {j.Strategy} n={j.N}{(j.Seed is int sd ? $" seed {sd}" : "")}");
        }
    }

    /// <summary>The sublayer variant and the unpruned model timed interleaved (as the whole-layer rows); the variant's
    /// weight bytes are those it keeps (the skipped sublayers' tensors left out).</summary>
    static (EfficiencyResult, EfficiencyResult) Measure(CausalLM model, IReadOnlyList<int> kept, IReadOnlyList<int> removedLayers,
        SublayerMask mask, string key, SweepOptions o)
    {
        int threads = torch.get_num_threads();
        if (o.EfficiencyThreads is int t) torch.set_num_threads(t);
        try
        {
            var r = EfficiencyMeter.Measure([new EfficiencyTarget("unpruned", model), new EfficiencyTarget(key, model, kept, Skip: mask)],
                o.Efficiency!);
            var gone = removedLayers.ToHashSet();
            long weights = model.NamedTensors().Where(nt => !RemovedParameters.IsRemoved(nt.name, model.Config, gone, mask))
                .Sum(nt => nt.tensor.NumberOfElements * nt.tensor.ElementSize);
            return (r[1] with { WeightBytes = weights }, r[0]);
        }
        finally
        {
            torch.set_num_threads(threads);
        }
    }

    /// <summary>One curve of the report: unit × strategy.</summary>
    static string SeriesName(VariantRow r) => $"{r.Unit}:{r.Strategy}";

    /// <summary>
    /// "## Units": the axis stated, one figure per metric of quality against <see cref="AxisLabel"/> (and with efficiency
    /// against measured decode speed-up and KV-cache bytes per token) with one curve per unit × strategy, and the table of
    /// every row. Random variants of several seeds enter the figures as their mean per n. Empty without sublayer units.
    /// </summary>
    public static string Section(SweepOptions o, IReadOnlyList<VariantRow> rows, IReadOnlyList<MetricInfo> metrics, string model)
    {
        ArgumentNullException.ThrowIfNull(o);
        ArgumentNullException.ThrowIfNull(rows);
        ArgumentNullException.ThrowIfNull(metrics);
        if (!Active(o)) return "";
        var baseline = rows.First(r => r.Strategy == "none");
        var pruned = rows.Where(r => r.Unit is not null && r.ParameterFraction is not null && !r.Healed).ToList();
        var names = pruned.Select(SeriesName).Distinct().ToList();
        long decoder;
        using (var ckpt = Checkpoint.Open(o.ModelDir)) decoder = RemovedParameters.Decoder(ckpt);
        bool measured = o.Efficiency is not null && baseline.Efficiency is not null && pruned.All(r => r.Efficiency is not null);
        var figures = new List<string>();
        foreach (var m in metrics)
        {
            double? unpruned = baseline.Metrics.TryGetValue(m.Column, out var b) ? b : null;
            List<(string, IReadOnlyList<(double, double)>)> Curves(Func<VariantRow, double> x, double x0) => names.Select(s =>
                (s, (IReadOnlyList<(double, double)>)new[] { (x0, unpruned ?? double.NaN) }.Concat(pruned
                    .Where(r => SeriesName(r) == s && r.Metrics.ContainsKey(m.Column))
                    .GroupBy(r => r.N).OrderBy(g => g.Key)
                    .Select(g => (g.Average(x), g.Average(r => r.Metrics[m.Column]))))
                    .ToList())).ToList();
            string file = $"units_{m.Column}.png";
            UnitPlots.Save(Path.Combine(o.OutDir, file), $"{model}: {m.Column} vs {AxisLabel}",
                $"{AxisLabel} ({decoder:N0} decoder parameters)", m.AxisLabel, Curves(r => r.ParameterFraction!.Value, 0), m.Chance,
                unpruned, fractionAxis: true);
            figures.Add(file);
            if (!measured) continue;
            file = $"units_{m.Column}_decode.png";
            UnitPlots.Save(Path.Combine(o.OutDir, file), $"{model}: {m.Column} vs measured decode speed-up",
                "decode speed-up over unpruned (same run)", m.AxisLabel,
                Curves(r => r.Efficiency!.RowFields(r.EfficiencyReference ?? r.Efficiency)["decode_speedup"], 1.0), m.Chance, null,
                fractionAxis: false);
            figures.Add(file);
            file = $"units_{m.Column}_kv.png";
            UnitPlots.Save(Path.Combine(o.OutDir, file), $"{model}: {m.Column} vs KV-cache bytes per token",
                "measured KV-cache bytes per token", m.AxisLabel, Curves(r => r.Efficiency!.KvCacheBytesPerToken,
                    baseline.Efficiency!.KvCacheBytesPerToken), m.Chance, null, fractionAxis: false);
            figures.Add(file);
        }

        var sb = new StringBuilder("\n## Units: attention, MLP and whole layers (issue 25)\n\n");
        sb.Append(CultureInfo.InvariantCulture,
            $"x axis of every unit: **{AxisLabel}**, decoder parameters = the {decoder:N0} parameters of model.layers.* (embedding, ")
          .Append("final norm and lm_head excluded). A removed attention takes its self_attn tensors and input_layernorm, a removed ")
          .Append("MLP its mlp tensors and post_attention_layernorm; a layer losing both is a removed layer. Sublayer variants are ")
          .Append("evaluated with the sublayers skipped in memory (h = x without attention, out = h without MLP); n counts removed ")
          .Append("sublayers (whole-layer rows: layers). KV bytes/token: key and value of the layers that keep attention. ")
          .Append("One curve per unit × strategy; random seeds averaged per n.\n\n");
        var cols = metrics.Select(m => m.Column).ToList();
        sb.Append("| unit | strategy | n | removed | parameters removed | KV bytes/token | ").Append(string.Join(" | ", cols))
          .Append(measured ? " | decode speed-up |\n" : " |\n")
          .Append("|---|---|---:|---|---:|---:|").Append(string.Concat(cols.Select(_ => "---:|"))).Append(measured ? "---:|\n" : "\n");
        string F(double x) => double.IsFinite(x) ? x.ToString("0.0000", CultureInfo.InvariantCulture) : "–";
        void Line(VariantRow r, string unit, string strategy, string removed)
        {
            sb.Append(CultureInfo.InvariantCulture,
                $"| {unit} | {strategy}{(r.Seed is int sd ? $" seed {sd}" : "")} | {r.N} | {removed} | {F(r.ParameterFraction ?? 0)} | ")
              .Append(CultureInfo.InvariantCulture, $"{r.KvCacheBytesPerToken} |");
            foreach (var col in cols) sb.Append(' ').Append(F(r.Metrics.TryGetValue(col, out var v) ? v : double.NaN)).Append(" |");
            if (measured)
                sb.Append(' ').Append(r.Efficiency is { } e ? F(e.RowFields(r.EfficiencyReference ?? e)["decode_speedup"]) : "1.0000")
                  .Append(" |");
            sb.Append('\n');
        }
        Line(baseline, "–", "unpruned", "–");
        var order = o.Units!.Select(u => u.Name()).ToList();
        foreach (var r in pruned.OrderBy(r => order.IndexOf(r.Unit!)).ThenBy(r => o.Strategies.ToList().IndexOf(r.Strategy))
                     .ThenBy(r => r.N).ThenBy(r => r.Seed))
        {
            string removed = r.RemovedSublayers is { } subs
                ? NemotronNasConfig.Describe(subs.Where(x => x.Kind == SublayerKind.Attention).Select(x => x.Layer),
                    subs.Where(x => x.Kind == SublayerKind.Mlp).Select(x => x.Layer))
                : "layers " + string.Join(", ", r.Removed);
            Line(r, r.Unit!, r.Strategy, removed);
        }
        sb.Append("\nFigures: ").Append(string.Join(", ", figures.Select(f => $"![{f}]({f})"))).Append('\n');
        return sb.ToString();
    }
}
