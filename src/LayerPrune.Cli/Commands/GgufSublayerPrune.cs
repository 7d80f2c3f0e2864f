using System.CommandLine;
using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using LayerPrune.Pruning;

namespace LayerPrune.Cli.Commands;

/// <summary>
/// `prune --model X.gguf --unit attention|mlp|sublayer`: the plan is made on the GGUF's imported checkpoint (its config; the
/// model itself for similarity and greedy), the output is the GGUF without those sublayers, as llama.cpp's deci architecture
/// (<see cref="GgufSublayerPruner"/>).
/// </summary>
public static class GgufSublayerPrune
{
    /// <summary>Runs the GGUF form of a sublayer prune; returns the exit code.</summary>
    public static int Run(ParseResult p, SimilarityDataOptions data, PruneUnit unit, SublayerPrune.Request r)
    {
        GgufSublayerPruner.Open(r.Model); // a non-llama GGUF fails before the import
        Cli.Require(r.ShardBytes is null, "--max-shard-size: a GGUF output is one file");
        string imported = Cli.ResolveModel(p, r.Model);
        ModelConfig c;
        using (var ckpt = Checkpoint.Open(imported)) c = ckpt.Config;
        SublayerPlan plan;
        if (r.Spec is not null) plan = SublayerPlan.FromSpec(r.Spec, unit, c);
        else if (r.PlanPath is not null)
            plan = SublayerPlan.FromJson(JsonInput.ReadObject(Cli.ExistingFile(r.PlanPath, "--plan")), r.PlanPath, c);
        else
        {
            int candidates = PruneUnits.Candidates(c, unit).Count;
            int count = r.N ?? (r.Fraction is double f and > 0 and < 1
                ? Math.Clamp((int)Math.Round(f * candidates, MidpointRounding.AwayFromZero), 1, candidates)
                : throw LayerPruneException.Usage($"--fraction {r.Fraction}: must be strictly between 0 and 1"));
            plan = SublayerPrune.Choose(p, data, r with { Model = imported }, unit, count);
        }
        var written = GgufSublayerPruner.Prune(r.Model, plan, c, r.Out, r.Force);
        var json = plan.ToJson(c);
        json["out"] = written.Path;
        json["format"] = "GGUF, llama.cpp architecture deci (per-layer head_count, head_count_kv, feed_forward_length; 0 = removed)";
        json["layers_written"] = written.KeptLayers;
        json["attention_free_note"] = plan.AttentionFreeNote(c);
        if (r.Json) { Cli.PrintJson(json); return 0; }
        if (plan.AttentionFreeNote(c) is { } free) Console.Error.WriteLine($"note: {free}");
        Console.Out.WriteLine($"removed {plan.Describe()} ({plan.Strategy}, unit {unit.Name()}); {written.KeptLayers} of " +
                              $"{written.OriginalLayers} layers written as GGUF architecture deci → {written.Path}");
        return 0;
    }
}
