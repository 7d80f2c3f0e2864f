using System.Text.Json.Nodes;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary><c>sweep --tasks qmsum:FILE,limit=N</c>: the generation task of the suite in a sweep on the embedded model.</summary>
public class QmsumSweepTests
{
    [Fact]
    public void SweepScoresQmsumPerVariantWritesItsLmEvalFilesAndResumesIdentically()
    {
        using var tmp = new TempDir();
        string spec = $"qmsum:{SuiteRequestTests.Bench("qmsum", "test.jsonl")},limit=2,max_gen_toks=3";
        string[] args = ["sweep", "--model", KjvModel.Dir, "--data", KjvModel.Validation, "--strategies", "deepest", "--n", "4",
            "--max-chunks", "1", "--tasks", spec, "--out", tmp["sweep"], "--quiet"];
        var (code, _, stderr) = CliRunner.Run(args);
        Assert.True(code == 0, stderr);
        var results = JsonNode.Parse(File.ReadAllText(Path.Combine(tmp["sweep"], "results.json")))!;
        var rows = results["rows"]!.AsArray();
        Assert.Equal([0, 4], rows.Select(r => r!["n"]!.GetValue<int>()));
        Assert.Equal(2, results["protocol"]![spec]!["items"]!.GetValue<int>());
        Assert.Equal(13, results["protocol"]![spec]!["documents"]!.GetValue<int>());   // the fixture's meeting: 1 + 12 queries

        // The unpruned row's ROUGE equals eval's on the same spec; each variant's lm-eval results file holds the row's values.
        using var evalDir = new TempDir();
        var (ecode, estdout, estderr) = CliRunner.Run("eval", "--model", KjvModel.Dir, "--task", spec, "--json", "--quiet");
        Assert.True(ecode == 0, estderr);
        var evalResults = JsonNode.Parse(estdout)!;
        foreach (var m in new[] { "rouge1", "rouge2", "rougeL" })
        {
            double fromEval = evalResults["results"]!["qmsum"]![m]!.GetValue<double>();
            Assert.Equal(fromEval, rows[0]!["qmsum_" + m]!.GetValue<double>(), 12);
        }
        var lmFiles = Directory.GetFiles(Path.Combine(tmp["sweep"], "lm-eval"), "results_*.json", SearchOption.AllDirectories);
        Assert.Equal(2, lmFiles.Length);
        var rouge1 = lmFiles.Select(f => JsonNode.Parse(File.ReadAllText(f))!["results"]!["qmsum"]!["rouge1,none"]!.GetValue<double>())
            .Order().ToArray();
        Assert.Equal(rows.Select(r => r!["qmsum_rouge1"]!.GetValue<double>()).Order().ToArray(), rouge1);
        Assert.Contains("qmsum_rouge1", File.ReadAllText(Path.Combine(tmp["sweep"], "report.md")));

        // Resume: the same command reuses the rows.
        var (code2, _, stderr2) = CliRunner.Run(args);
        Assert.True(code2 == 0, stderr2);
        var again = JsonNode.Parse(File.ReadAllText(Path.Combine(tmp["sweep"], "results.json")))!["rows"]!;
        Assert.Equal(rows.ToJsonString(), again.ToJsonString());
    }
}
