using LayerPrune.Planning;
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
    /// <summary>--data: the text of the similarity pass.</summary>
    public readonly Option<string?> Data = new("--data", "-d")
        { Description = "Text for the similarity pass: .txt (chunked like the loss protocol), .jsonl/.parquet with a 'text' field (one " +
        "sample per row), or pre-tokenized .jsonl rows {\"input_ids\": [...]}" };
    /// <summary>--samples: number of samples.</summary>
    public readonly Option<int> Samples = new("--samples") { Description = "Number of samples", DefaultValueFactory = _ => 64 };
    /// <summary>--seq-len: tokens per sample.</summary>
    public readonly Option<int> SeqLen = new("--seq-len") { Description = "Tokens per sample", DefaultValueFactory = _ => 256 };
    /// <summary>--batch: samples per forward batch.</summary>
    public readonly Option<int> Batch = new("--batch", "-b") { Description = "Samples per forward batch", DefaultValueFactory = _ => 8 };
    /// <summary>--offload: stream one layer at a time from the memory-mapped checkpoint.</summary>
    public readonly Option<bool> Offload = new("--offload")
        { Description = "Stream one layer at a time from the memory-mapped checkpoint (models larger than RAM)" };

    /// <summary>--protect-last: never remove the final layer (the paper's advice).</summary>
    public static Option<bool> ProtectLastOption() => new("--protect-last")
        { Description = "Never remove the final layer (as the paper advises)" };

    /// <summary>Adds these options to <paramref name="c"/>.</summary>
    public void AddTo(Command c)
    {
        c.Options.Add(Data);
        c.Options.Add(Samples);
        c.Options.Add(SeqLen);
        c.Options.Add(Batch);
        c.Options.Add(Offload);
    }

    /// <summary>The existing --data file; a usage error naming --data and <paramref name="why"/> when it is missing.</summary>
    public string RequireData(ParseResult p, string why)
    {
        var path = p.GetValue(Data) ?? throw LayerPruneException.Usage($"--data is required {why}");
        return Cli.ExistingFile(path, "--data");
    }

    /// <summary>Runs the one-pass similarity measurement with a progress bar.</summary>
    public SimilarityResult Measure(ParseResult p, CausalLM model, string modelDir, bool blockInfluence, bool cka = false)
    {
        string data = RequireData(p, "for a similarity pass");
        Cli.Require(p.GetValue(Batch) >= 1, $"--batch {p.GetValue(Batch)}: must be at least 1");
        var samples = LoadSamples(data, modelDir, model.Config.VocabSize, p.GetValue(Samples), p.GetValue(SeqLen));
        return LayerSimilarity.Compute(model, samples, p.GetValue(Batch), blockInfluence, cka: cka, progress: Cli.Progress);
    }

    /// <summary>Similarity samples; the tokenizer is loaded only for text (pre-tokenized JSONL needs none).</summary>
    public static List<int[]> LoadSamples(string data, string modelDir, int vocabSize, int samples, int seqLen) =>
        SampleLoader.Load(data, PreTokenized.IsPreTokenized(data) ? null : Cli.LoadTokenizer(modelDir), samples, seqLen, vocabSize);
}

/// <summary>`layerprune similarity`: the angular-distance matrix between residual-stream states.</summary>
public static class SimilarityCommand
{
    /// <summary>The `similarity` command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var data = new SimilarityDataOptions();
        var metric = new Option<string>("--metric")
            { Description = "Block choice by: angular (the paper, last token) | bi (all-token 1 - cos; also ShortGPT's Block Influence " +
            "per layer) | cka (1 - linear CKA over all tokens)", DefaultValueFactory = _ => "angular" };
        var protectLast = SimilarityDataOptions.ProtectLastOption();
        var bootstrap = new Option<int>("--bootstrap")
            { Description = "Resample the samples K times: how often l*(n) is the argmin and a 95% interval of its distance (0 = off)",
                DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Seed of --bootstrap", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out", "-o")
            { Description = "Output folder for similarity.json, .csv and .png", DefaultValueFactory = _ => "similarity-out" };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out folder" };
        var json = Cli.JsonOption();
        var cmd = new Command("similarity",
            "Angular distance between the residual stream at every pair of layers, in one pass: the best block to remove for every " +
            "block size n") { model, metric, protectLast, bootstrap, seed, output, force, json };
        data.AddTo(cmd);
        return cmd.WithAction(p =>
        {
            string dir = Cli.ResolveModel(p, p.GetValue(model)!);
            string m = p.GetValue(metric)!;
            var chosen = SimilarityMetrics.Parse(m) ?? throw LayerPruneException.Usage($"--metric {m}: expected angular, bi or cka");
            int resamples = p.GetValue(bootstrap);
            Cli.Require(resamples >= 0, $"--bootstrap {resamples}: must be 0 (off) or a number of resamples");
            Cli.Require(resamples == 0 || chosen == SimilarityMetric.Angular,
                $"--bootstrap with --metric {m}: the bootstrap resamples per-sample angular matrices; use --metric angular");
            data.RequireData(p, "(text to measure on)");
            using var outDir = OutputFolder.Begin(p.GetValue(output)!, p.GetValue(force), "--out", dir);
            using var lm = Cli.LoadModel(p, dir, p.GetValue(data.Offload), Workload.Similarity, p.GetValue(data.Batch),
                p.GetValue(data.SeqLen), canOffload: true);
            Cli.Require(!p.GetValue(protectLast) || lm.NumLayers >= 3,
                $"--protect-last: the model has {lm.NumLayers} layers; at least 3 are needed");
            var result = data.Measure(p, lm, dir, blockInfluence: chosen == SimilarityMetric.BlockInfluence,
                cka: chosen == SimilarityMetric.Cka);
            var boot = resamples > 0 ? SimilarityBootstrap.Run(result, resamples, p.GetValue(seed), p.GetValue(protectLast)) : null;
            var (dataPath, seqLen) = (p.GetValue(data.Data)!, p.GetValue(data.SeqLen));
            SimilarityReport.Write(outDir.TempPath, result, dir, dataPath, seqLen, chosen, p.GetValue(protectLast), boot);
            outDir.Commit();
            if (p.GetValue(json))
            {
                Cli.PrintJson(SimilarityReport.ToJson(result, dir, dataPath, seqLen, chosen, p.GetValue(protectLast), boot));
                return 0;
            }
            var table = new Table().AddColumn("n").AddColumn("remove layers (0-based)").AddColumn($"{m} distance")
                .AddColumn("mergekit slices");
            if (boot is not null) table.AddColumn("argmin share").AddColumn("95% interval");
            foreach (var b in result.BestAll(chosen, p.GetValue(protectLast)))
            {
                var cells = new List<string> { b.N.ToString(), $"{b.Start}..{b.EndExclusive - 1}", $"{b.Distance:F4}",
                    Markup.Escape(KeptSlices(b, result.Layers)) };
                if (boot?.Choices.FirstOrDefault(c => c.N == b.N) is { } c)
                    cells.AddRange([$"{c.ArgminFrequency:P0}", $"[{c.Low:F4}, {c.High:F4}]"]);
                table.AddRow(cells.ToArray());
            }
            AnsiConsole.Write(table);
            if (result.BlockInfluence is { } bi)
                Console.Out.WriteLine("block influence (lowest first): "
                    + string.Join(", ", bi.Select((v, i) => (v, i)).OrderBy(x => x.v).Select(x => $"{x.i}:{x.v:F4}")));
            string extra = chosen == SimilarityMetric.Angular ? "" : $" and similarity_{m}.png";
            Console.Error.WriteLine($"wrote {Path.GetFullPath(outDir.FinalPath)}/similarity.{{json,csv,png}}{extra}");
            return 0;
        });
    }

    /// <summary>The kept layers after removing block <paramref name="b"/>, e.g. "[0, 18)" (never an empty range).</summary>
    static string KeptSlices(BestBlock b, int layers) =>
        PrunePlan.FromLayerSpec($"{b.Start}-{b.EndExclusive - 1}", layers).KeptSlices();
}
