using System.CommandLine;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Reporting;
using LayerPrune.Similarity;
using Spectre.Console;

namespace LayerPrune.Cli.Commands;

/// <summary>The data options of a similarity pass (shared by similarity, prune --strategy similarity and sweep).</summary>
public sealed class SimilarityDataOptions
{
    public readonly Option<string?> Data = new("--data", "-d") { Description = "Text for the similarity pass: .txt (chunked like the loss protocol) or .jsonl/.parquet with a 'text' field (one sample per row)" };
    public readonly Option<int> Samples = new("--samples") { Description = "Number of samples", DefaultValueFactory = _ => 64 };
    public readonly Option<int> SeqLen = new("--seq-len") { Description = "Tokens per sample", DefaultValueFactory = _ => 256 };
    public readonly Option<int> Batch = new("--batch", "-b") { Description = "Samples per forward batch", DefaultValueFactory = _ => 8 };
    public readonly Option<bool> Offload = new("--offload") { Description = "Stream one layer at a time from the memory-mapped checkpoint (models larger than RAM)" };

    public void AddTo(Command c) { c.Options.Add(Data); c.Options.Add(Samples); c.Options.Add(SeqLen); c.Options.Add(Batch); c.Options.Add(Offload); }

    public string RequireData(ParseResult p, string why)
    {
        var path = p.GetValue(Data) ?? throw LayerPruneException.Usage($"--data is required {why}");
        return Cli.ExistingFile(path, "--data");
    }

    /// <summary>Runs the one-pass similarity measurement with a progress bar.</summary>
    public SimilarityResult Measure(ParseResult p, CausalLM model, string modelDir, bool blockInfluence)
    {
        string data = RequireData(p, "for a similarity pass");
        Cli.Require(p.GetValue(Batch) >= 1, $"--batch {p.GetValue(Batch)}: must be at least 1");
        var samples = SampleLoader.Load(data, Cli.LoadTokenizer(modelDir), p.GetValue(Samples), p.GetValue(SeqLen));
        using var progress = ProgressReporter.Start("similarity", samples.Count, "samples");
        return LayerSimilarity.Compute(model, samples, p.GetValue(Batch), blockInfluence, n => progress.Advance(n));
    }
}

public static class SimilarityCommand
{
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var data = new SimilarityDataOptions();
        var metric = new Option<string>("--metric") { Description = "angular (the paper) | bi (also ShortGPT's Block Influence per layer)", DefaultValueFactory = _ => "angular" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder for similarity.json, .csv and .png", DefaultValueFactory = _ => "similarity-out" };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out folder" };
        var json = Cli.JsonOption();
        var cmd = new Command("similarity", "Angular distance between the residual stream at every pair of layers, in one pass: the best block to remove for every block size n") { model, metric, output, force, json };
        data.AddTo(cmd);
        return cmd.WithAction(p =>
        {
            string dir = p.GetValue(model)!;
            string m = p.GetValue(metric)!;
            Cli.Require(m is "angular" or "bi", $"--metric {m}: expected angular or bi");
            data.RequireData(p, "(text to measure on)");
            using var outDir = OutputFolder.Begin(p.GetValue(output)!, p.GetValue(force), "--out", dir);
            using var lm = Cli.LoadModel(p, dir, p.GetValue(data.Offload));
            var result = data.Measure(p, lm, dir, blockInfluence: m == "bi");
            SimilarityReport.Write(outDir.TempPath, result, dir, p.GetValue(data.Data)!, p.GetValue(data.SeqLen));
            outDir.Commit();
            if (p.GetValue(json)) { Cli.PrintJson(SimilarityReport.ToJson(result, dir, p.GetValue(data.Data)!, p.GetValue(data.SeqLen))); return 0; }
            var table = new Table().AddColumn("n").AddColumn("remove layers (0-based)").AddColumn("distance").AddColumn("mergekit slices");
            foreach (var b in result.Best())
            {
                string kept = PrunePlan.FromSimilarity(result, b.N).KeptSlices();
                table.AddRow(b.N.ToString(), $"{b.Start}..{b.EndExclusive - 1}", $"{b.Distance:F4}", Markup.Escape(kept));
            }
            AnsiConsole.Write(table);
            if (result.BlockInfluence is { } bi)
                Console.Out.WriteLine("block influence (lowest first): " + string.Join(", ", bi.Select((v, i) => (v, i)).OrderBy(x => x.v).Select(x => $"{x.i}:{x.v:F4}")));
            Console.Error.WriteLine($"wrote {Path.GetFullPath(outDir.FinalPath)}/similarity.{{json,csv,png}}");
            return 0;
        });
    }
}
