using System.Text.Json.Nodes;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Evaluation.Suite;

/// <summary>
/// <c>eval --output-path DIR --log-samples</c> on the embedded model: the results file read with lm-eval's key
/// conventions, and the samples files' request strings equal to the ones the harness builds (spelled out in
/// <see cref="SuiteRequestTests"/>).
/// </summary>
public class SuiteResultsFileTests
{
    [Fact]
    public void ResultsAndSamplesFilesFollowTheHarnessLayout()
    {
        using var dir = new TempDir();
        string[] tasks = ["arc_easy", "arc_challenge", "piqa", "openbookqa", "winogrande"];
        var args = new List<string> { "eval", "--model", Path.Combine(TestPaths.Samples, "kjv-llama-16l"), "--limit", "3",
            "--output-path", dir.Path, "--log-samples", "--json", "--quiet" };
        foreach (var t in tasks) args.AddRange(["--task", $"{t}:{SuiteRequestTests.Files[t]}"]);
        args.AddRange(["--task", $"lambada_openai:{SuiteRequestTests.Bench("lambada_openai", "test.jsonl")}"]);
        var (code, stdout, stderr) = CliRunner.Run([.. args]);
        Assert.True(code == 0, stderr);

        var folder = Assert.Single(Directory.GetDirectories(dir.Path));
        Assert.EndsWith("__kjv-llama-16l", folder);                       // model_name_sanitized: '/' runs → "__"
        var resultsFile = Assert.Single(Directory.GetFiles(folder, "results_*.json"));
        var r = JsonNode.Parse(File.ReadAllText(resultsFile))!.AsObject();
        foreach (var t in tasks.Append("lambada_openai"))
        {
            var entry = r["results"]![t]!.AsObject();
            double acc = entry["acc,none"]!.GetValue<double>();
            double se = entry["acc_stderr,none"]!.GetValue<double>();
            Assert.InRange(acc, 0, 1);
            // mean_stderr of 0/1 scores over n = 3: sqrt(p(1 − p) / (n − 1)).
            Assert.Equal(Math.Sqrt(acc * (1 - acc) / 2), se, 12);
            Assert.Equal(3, r["n-samples"]![t]!["effective"]!.GetValue<int>());
            Assert.Equal(20, r["n-samples"]![t]!["original"]!.GetValue<int>());
            Assert.Equal(0, r["n-shot"]![t]!.GetValue<int>());
            Assert.Equal(1.0, r["versions"]![t]!.GetValue<double>());
            Assert.Equal(t, r["configs"]![t]!["task"]!.GetValue<string>());
            Assert.True(r["higher_is_better"]![t]!["acc"]!.GetValue<bool>());
        }
        Assert.Equal("Question: {{question}}\nAnswer:", r["configs"]!["arc_easy"]!["doc_to_text"]!.GetValue<string>());
        Assert.Equal("perplexity", r["configs"]!["lambada_openai"]!["metric_list"]![0]!["metric"]!.GetValue<string>());
        Assert.True(r["results"]!["lambada_openai"]!["perplexity,none"]!.GetValue<double>() > 1);
        Assert.Equal("N/A", r["results"]!["winogrande"]!["acc_norm_stderr,none"]?.GetValue<string>() ?? "N/A");
        Assert.Null(r["results"]!["winogrande"]!["acc_norm,none"]);

        foreach (var t in tasks)
        {
            var lines = File.ReadAllLines(Assert.Single(Directory.GetFiles(folder, $"samples_{t}_*.jsonl")));
            Assert.Equal(3, lines.Length);
            for (int i = 0; i < 3; i++)
            {
                var s = JsonNode.Parse(lines[i])!.AsObject();
                Assert.Equal(i, s["doc_id"]!.GetValue<int>());
                var pairs = s["arguments"]!.AsArray().Select(a => (a![0]!.GetValue<string>(), a[1]!.GetValue<string>())).ToArray();
                Assert.Equal(SuiteRequestTests.Expected[t][i], pairs);
                Assert.Equal(pairs.Length, s["resps"]!.AsArray().Count);
                var ll = s["filtered_resps"]!.AsArray().Select(x => double.Parse(x![0]!.GetValue<string>(),
                    System.Globalization.CultureInfo.InvariantCulture)).ToArray();
                int argmax = Array.IndexOf(ll, ll.Max());
                Assert.Equal(argmax == SuiteRequestTests.Gold[t][i] ? 1.0 : 0.0, s["acc"]!.GetValue<double>());
                Assert.Equal(LayerPrune.Evaluation.Suite.SampleRecords.Sha256(pairs[0].Item1), s["prompt_hash"]!.GetValue<string>());
            }
        }
        Assert.Contains("winogrande", stdout);
    }
}
