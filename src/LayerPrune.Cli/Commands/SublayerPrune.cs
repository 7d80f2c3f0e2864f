using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Planning;
using LayerPrune.Pruning;
using LayerPrune.Pruning.Strategies;

namespace LayerPrune.Cli.Commands;

/// <summary>`prune --unit attention|mlp|sublayer`: choose sublayers and write the Nemotron-NAS checkpoint.</summary>
public static class SublayerPrune
{
    /// <summary>The `--unit` option of prune (and sweep).</summary>
    public static Option<string> UnitOption() => new("--unit")
    {
        Description = "What is removed: layer (whole decoder layers, the paper) | attention | mlp (one kind of sublayer) | sublayer " +
                      "(attention and MLP sublayers ranked together; LLM-Drop, BlockPruner). Sublayer units take --strategy " +
                      "similarity (LLM-Drop's cos(x, x+F(norm x)), needs --data) | greedy (BlockPruner, needs --calibration or --data) " +
                      "| deepest | random, or --layers attention:1,3,mlp:2, and write a DeciLMForCausalLM (Nemotron-NAS) checkpoint",
        DefaultValueFactory = _ => "layer",
    };

    /// <summary>What prune's flags say, for a sublayer unit.</summary>
    public sealed record Request(string Model, string Out, string? Spec, string? PlanPath, int? N, double? Fraction, string Strategy,
        int Seed, bool Force, bool Json, string? Calibration, int CalibrationChunks, long? ShardBytes);

    /// <summary>Runs prune at <paramref name="unit"/>; returns the exit code.</summary>
    public static int Run(ParseResult p, SimilarityDataOptions data, PruneUnit unit, Request r)
    {
        Cli.Require(SublayerStrategies.Names.Contains(r.Strategy) || r.Spec is not null || r.PlanPath is not null,
            $"--strategy {r.Strategy}: with --unit {unit.Name()} expected one of {string.Join(", ", SublayerStrategies.Names)}");
        if (LayerPrune.Hub.ModelSource.IsGguf(r.Model)) return GgufSublayerPrune.Run(p, data, unit, r); // → a deci GGUF
        using var ckpt = Checkpoint.Open(r.Model);
        var c = ckpt.Config;
        SublayerCheckpointWriter.CheckWritable(c);
        OutputFolder.Check(r.Out, r.Force, "--out", r.Model);
        SublayerPlan? plan = null;
        int count = 0;
        if (r.Spec is not null) plan = SublayerPlan.FromSpec(r.Spec, unit, c);
        else if (r.PlanPath is not null)
            plan = SublayerPlan.FromJson(JsonInput.ReadObject(Cli.ExistingFile(r.PlanPath, "--plan")), r.PlanPath, c);
        else
        {
            int candidates = PruneUnits.Candidates(c, unit).Count;
            count = r.N ?? (r.Fraction is double f and > 0 and < 1
                ? Math.Clamp((int)Math.Round(f * candidates, MidpointRounding.AwayFromZero), 1, candidates)
                : throw LayerPruneException.Usage($"--fraction {r.Fraction}: must be strictly between 0 and 1"));
        }
        using var output = OutputFolder.Begin(r.Out, r.Force, "--out", r.Model);
        plan ??= Choose(p, data, r, unit, count);
        var written = SublayerCheckpointWriter.Write(ckpt, plan, output, r.ShardBytes);
        var json = plan.ToJson(c);
        json["out"] = Path.GetFullPath(r.Out);
        json["layers_written"] = written.Layers;
        json["note"] = written.Note;
        json["attention_free_note"] = plan.AttentionFreeNote(c);
        if (r.Json) { Cli.PrintJson(json); return 0; }
        if (written.Note is not null) Console.Error.WriteLine($"note: {written.Note}");
        if (plan.AttentionFreeNote(c) is { } free) Console.Error.WriteLine($"note: {free}");
        Console.Out.WriteLine($"removed {plan.Describe()} ({plan.Strategy}, unit {unit.Name()}); " +
                              $"{written.Layers} of {c.NumLayers} layers " +
                              $"written as {NemotronNasConfig.ArchitectureName} → {Path.GetFullPath(r.Out)}");
        return 0;
    }

    internal static SublayerPlan Choose(ParseResult p, SimilarityDataOptions data, Request r, PruneUnit unit, int count)
    {
        if (r.Strategy is "deepest" or "random")
        {
            using var config = LayerPrune.Modeling.CausalLM.Load(r.Model, offload: true);
            return SublayerStrategies.Prepare(r.Strategy, unit, new StrategyInputs { Model = config, Seed = r.Seed }, count)(count);
        }
        bool calibration = SublayerStrategies.NeedsCalibration(r.Strategy);
        string path = calibration && r.Calibration is not null
            ? Cli.ExistingFile(r.Calibration, "--calibration")
            : data.RequireData(p, $"with --unit {unit.Name()} --strategy {r.Strategy}");
        int seqLen = p.GetValue(data.SeqLen), batch = p.GetValue(data.Batch);
        Cli.Require(batch >= 1, $"--batch {batch}: must be at least 1");
        using var model = Cli.LoadModel(p, r.Model, p.GetValue(data.Offload) && !calibration,
            calibration ? Workload.Evaluate : Workload.Similarity, batch, seqLen, canOffload: !calibration);
        var inputs = new StrategyInputs
        {
            Model = model, BatchSize = batch, Progress = Cli.Progress, Seed = r.Seed,
            SimilaritySamples = () =>
                SimilarityDataOptions.LoadSamples(path, r.Model, model.Config.VocabSize, p.GetValue(data.Samples), seqLen),
            CalibrationChunks = () => PreTokenized.LossChunks(path, PreTokenized.IsPreTokenized(path) ? null : Cli.LoadTokenizer(r.Model),
                seqLen, r.CalibrationChunks, model.Config.VocabSize),
        };
        return SublayerStrategies.Prepare(r.Strategy, unit, inputs, count)(count);
    }
}
