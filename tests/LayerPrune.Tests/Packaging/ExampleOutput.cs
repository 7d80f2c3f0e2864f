using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace LayerPrune.Tests.Packaging;

/// <summary>What samples/csharp prints, parsed; and the HF references it is checked against.</summary>
public sealed record ExampleOutput(int[] Removed, double LossBefore, double LossAfter)
{
    /// <summary>Parses "removed layers: 6,7,…" and "validation loss: A -> B" from the example's stdout.</summary>
    public static ExampleOutput Parse(string stdout)
    {
        var removed = Regex.Match(stdout, @"^removed layers: ([\d,]+)", RegexOptions.Multiline);
        var loss = Regex.Match(stdout, @"^validation loss: ([\d.]+) -> ([\d.]+)", RegexOptions.Multiline);
        Assert.True(removed.Success && loss.Success, "unexpected example output:\n" + stdout);
        return new ExampleOutput(
            removed.Groups[1].Value.Split(',').Select(int.Parse).ToArray(),
            double.Parse(loss.Groups[1].Value, CultureInfo.InvariantCulture),
            double.Parse(loss.Groups[2].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// With n = 8 the example must remove HF's layers 6–13, report the unpruned loss of
    /// tests/fixtures/reference/kjv-llama-16l.json (2.94131) and the pruned loss HF measured (3.7591), both within 1e-3,
    /// and write an 8-layer checkpoint to <paramref name="outDir"/>.
    /// </summary>
    public void AssertMatchesHfForEightLayers(string outDir)
    {
        string reference = Path.Combine(TestPaths.Fixtures, "reference");
        var unpruned = JsonNode.Parse(File.ReadAllText(Path.Combine(reference, "kjv-llama-16l.json")))!;
        var pruned = JsonNode.Parse(File.ReadAllText(Path.Combine(reference, "kjv-llama-16l-healing-hf-peft.json")))!["n8"]!;
        Assert.Equal(pruned["drop"]!.AsArray().Select(x => (int)x!), Removed);
        Assert.InRange(LossBefore - (double)unpruned["validation_loss"]!["value"]!, -1e-3, 1e-3);
        Assert.InRange(LossAfter - (double)pruned["val_loss_before_heal"]!, -1e-3, 1e-3);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.Equal(8, (int)config["num_hidden_layers"]!);
        Assert.True(File.Exists(Path.Combine(outDir, "prune_plan.json")));
    }
}
