using System.CommandLine;
using LayerPrune.Data;
using LayerPrune.Planning;
using LayerPrune.Pruning;

namespace LayerPrune.Cli.Commands;

/// <summary>`prune --repair none|linear|cosine` (ReplaceMe's training-free repair, docs/repair.md): options and the fit.</summary>
public sealed class PruneRepair
{
    /// <summary>--repair.</summary>
    public readonly Option<string> Method = new("--repair")
    {
        Description = "Training-free repair (docs/repair.md): none | linear (ReplaceMe's least-squares map from --calibration " +
                      "activations, folded into the down_proj before each removed run) | cosine (the linear map refined with Adam on " +
                      "the cosine distance)",
        DefaultValueFactory = _ => "none",
    };
    /// <summary>--repair-alpha.</summary>
    public readonly Option<double> Alpha = new("--repair-alpha")
    {
        Description = "Ridge alpha >= 0 added to the diagonal of M^T M in the least-squares solve", DefaultValueFactory = _ => 0,
    };
    /// <summary>--repair-steps.</summary>
    public readonly Option<int> Steps = new("--repair-steps")
    {
        Description = "--repair cosine: Adam steps over the subsample", DefaultValueFactory = _ => new RepairOptions().CosineSteps,
    };
    /// <summary>--repair-tokens.</summary>
    public readonly Option<int> Tokens = new("--repair-tokens")
    {
        Description = "--repair cosine: calibration tokens drawn for the refinement (seeded by --seed)",
        DefaultValueFactory = _ => new RepairOptions().CosineTokens,
    };

    /// <summary>Adds the options to <paramref name="c"/>.</summary>
    public void AddTo(Command c)
    {
        c.Options.Add(Method);
        c.Options.Add(Alpha);
        c.Options.Add(Steps);
        c.Options.Add(Tokens);
    }

    /// <summary>Whether --repair asks for a repair; checks the repair flags (before anything is written).</summary>
    public bool Requested(ParseResult p)
    {
        string m = p.GetValue(Method)!;
        Cli.Require(RepairOptions.Methods.Contains(m), $"--repair {m}: expected none, linear or cosine");
        double a = p.GetValue(Alpha);
        Cli.Require(a >= 0 && double.IsFinite(a), $"--repair-alpha {a}: must be a finite number >= 0");
        Cli.Require(p.GetValue(Steps) >= 1, $"--repair-steps {p.GetValue(Steps)}: must be at least 1");
        Cli.Require(p.GetValue(Tokens) >= 1, $"--repair-tokens {p.GetValue(Tokens)}: must be at least 1");
        return m != "none";
    }

    /// <summary>The calibration file of the repair: --calibration, else --data; a usage error when neither is given.</summary>
    public string CalibrationPath(ParseResult p, string? calibration, SimilarityDataOptions data)
    {
        if (calibration is not null) return Cli.ExistingFile(calibration, "--calibration");
        return p.GetValue(data.Data) is { } d ? Cli.ExistingFile(d, "--data")
            : throw LayerPruneException.Usage(
                $"--repair {p.GetValue(Method)}: needs calibration data: give --calibration FILE (or --data)");
    }

    /// <summary>Fits the maps of <paramref name="plan"/> on the first <paramref name="chunks"/> loss-protocol chunks of
    /// <paramref name="path"/> (text or pre-tokenized JSONL), running the unpruned model.</summary>
    public LinearRepair Fit(ParseResult p, SimilarityDataOptions data, string dir, PrunePlan plan, string path, int chunks, int seed)
    {
        string method = p.GetValue(Method)!;
        if (plan.Removed[0] == 0)
            throw LayerPruneException.Usage(
                $"--repair {method}: the plan removes layer 0, and no kept layer precedes it to take the map (use --repair none)");
        int seqLen = p.GetValue(data.SeqLen), batch = p.GetValue(data.Batch);
        Cli.Require(batch >= 1, $"--batch {batch}: must be at least 1");
        using var model = Cli.LoadModel(p, dir, p.GetValue(data.Offload), Workload.Evaluate, batch, seqLen, canOffload: true);
        var calib = PreTokenized.LossChunks(path, PreTokenized.IsPreTokenized(path) ? null : Cli.LoadTokenizer(dir), seqLen, chunks,
            model.Config.VocabSize);
        var options = new RepairOptions
        {
            Method = method, Alpha = p.GetValue(Alpha), BatchSize = batch, CosineSteps = p.GetValue(Steps),
            CosineTokens = p.GetValue(Tokens), Seed = seed, Progress = Cli.Progress,
        };
        return LinearRepair.Fit(model, plan, calib, options);
    }

    /// <summary>", repaired (linear: 2 maps from 16384 calibration tokens, 3.1 s)".</summary>
    public static string Summary(LinearRepair? r) => r is null ? "" :
        $", repaired ({r.Method}: {r.Maps.Count} map{(r.Maps.Count == 1 ? "" : "s")} from {r.Cost.Tokens} calibration tokens, " +
        $"fit error {string.Join("/", r.Maps.Select(m => m.FitError.ToString("F3")))} " +
        $"vs {string.Join("/", r.Maps.Select(m => m.FitErrorIdentity.ToString("F3")))} " +
        $"unrepaired, {r.Cost.Seconds:F1} s)";
}
