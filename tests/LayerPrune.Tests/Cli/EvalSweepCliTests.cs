using System.Text.Json.Nodes;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Cli;

/// <summary>The eval and sweep commands with their defaults: one validation-loss protocol, stated in the output;
/// the library's parameter-named errors reach the user as flag-named one-liners.</summary>
public class EvalSweepCliTests
{
    /// <summary>
    /// Issue 12, defect 3: `eval` used 128 chunks by default and `sweep` 64, so their unpruned losses differed. Both
    /// commands now take their loss protocol defaults from EvalOptions.Default (128 × 256); the library-level equality
    /// of the two losses is SweepProtocolTests.UnprunedValidationLossOfEvalAndSweepDefaultsIsEqualAndMatchesTheReference.
    /// </summary>
    [Fact]
    public void EvalAndSweepCommandsDefaultToTheSameLossProtocol()
    {
        var eval = LayerPrune.Cli.Commands.EvalCommand.Create().Parse(["--model", "m", "--task", "loss:x"]);
        var sweep = LayerPrune.Cli.Commands.SweepCommand.Create().Parse([]);
        Assert.Empty(eval.Errors);
        Assert.Empty(sweep.Errors);
        foreach (var p in new[] { eval, sweep })
        {
            Assert.Equal(128, p.GetValue<int>("--max-chunks"));
            Assert.Equal(256, p.GetValue<int>("--seq-len"));
        }
        Assert.Equal(LayerPrune.Evaluation.EvalOptions.Default.MaxChunks, eval.GetValue<int>("--max-chunks"));
    }

    /// <summary>The eval JSON and the sweep's results state the protocol they used; the sweep's loss equals eval's.</summary>
    [Fact]
    public void EvalAndSweepOutputsStateTheProtocolTheyUsed()
    {
        using var tmp = new TempDir();
        string spec = $"loss:{KjvModel.Validation}";
        var (code, stdout, stderr) = CliRunner.Run("eval", "--model", KjvModel.Dir, "--task", spec, "--max-chunks", "4", "--json", "--quiet");
        Assert.True(code == 0, stderr);
        var eval = JsonNode.Parse(stdout)!;
        var protocol = eval["protocol"]![spec]!;
        Assert.Equal((256, 4, 4, 4 * 255), ((int)protocol["seq_len"]!, (int)protocol["max_chunks"]!,
            (int)protocol["chunks"]!, (int)protocol["tokens"]!));

        string[] sweepArgs = ["sweep", "--model", KjvModel.Dir, "--data", KjvModel.Validation, "--tasks", spec, "--max-chunks", "4",
            "--strategies", "deepest", "--samples", "8", "--out", tmp["sweep"], "--quiet"];
        (code, stdout, stderr) = CliRunner.Run([.. sweepArgs, "--n", "1", "--json"]);
        Assert.True(code == 0, stderr);
        var sweep = JsonNode.Parse(stdout)!;
        var baseline = sweep["rows"]!.AsArray().Single(r => (string)r!["strategy"]! == "none")!;
        Assert.Equal((double)eval["validation_loss"]!, (double)baseline["validation_loss"]!);
        Assert.Equal(protocol.ToJsonString(), sweep["protocol"]![spec]!.ToJsonString());
        Assert.Contains("- `loss:validation.txt`: seq_len 256, max_chunks 4, chunks 4, tokens 1020",
            File.ReadAllText(Path.Combine(tmp["sweep"], "report.md")));

        // Another sweep into the same folder: refused with the flags to use.
        (code, _, stderr) = CliRunner.Run([.. sweepArgs, "--n", "2"]);
        Assert.Equal(1, code);
        Assert.Equal($"error: --out {tmp["sweep"]}: holds results of a different sweep (other model, data, tasks or options); " +
            "use --force to start over or another --out", stderr.Trim());
    }

    [Theory]
    [InlineData("--strategies", "foo",
        "error: --strategies: unknown strategy 'foo' (supported: similarity, bi, greedy, loss-rank, deepest, shallowest, random)")]
    [InlineData("--n", "16", "error: --n: block size 16 is out of range 1..15 (the model has 16 layers)")]
    public void SweepOptionErrorsNameTheFlag(string flag, string value, string message)
    {
        using var tmp = new TempDir();
        var args = new List<string> { "sweep", "--out", tmp["sweep"], "--quiet", flag, value };
        if (flag != "--strategies") args.AddRange(["--strategies", "deepest"]);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Equal(message, stderr.Trim());
    }
}
