using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace LayerPrune.Tests.Packaging;

/// <summary>What samples/csharp prints, parsed; and the HF references it is checked against.</summary>
public sealed record ExampleOutput(int[] Removed, double PrunedLoss)
{
    /// <summary>Parses "removed layers: 6,7,…" and "validation loss without them: X" from the example's stdout.</summary>
    public static ExampleOutput Parse(string stdout)
    {
        var removed = Regex.Match(stdout, @"^removed layers: ([\d,]+)", RegexOptions.Multiline);
        var loss = Regex.Match(stdout, @"^validation loss without them: ([\d.]+)", RegexOptions.Multiline);
        Assert.True(removed.Success && loss.Success, "unexpected example output:\n" + stdout);
        return new ExampleOutput(
            removed.Groups[1].Value.Split(',').Select(int.Parse).ToArray(),
            double.Parse(loss.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// With n = 8 the example must remove the layers HF's similarity picks (6–13), report the validation loss HF measured
    /// without them (3.7591, tests/fixtures/reference/kjv-llama-16l-healing-hf-peft.json) within 1e-3,
    /// and write an 8-layer checkpoint to <paramref name="outDir"/>.
    /// </summary>
    public void AssertMatchesHfForEightLayers(string outDir)
    {
        string reference = Path.Combine(TestPaths.Fixtures, "reference", "kjv-llama-16l-healing-hf-peft.json");
        var pruned = JsonNode.Parse(File.ReadAllText(reference))!["n8"]!;
        Assert.Equal(pruned["drop"]!.AsArray().Select(x => (int)x!), Removed);
        Assert.InRange(PrunedLoss - (double)pruned["val_loss_before_heal"]!, -1e-3, 1e-3);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")))!;
        Assert.Equal(8, (int)config["num_hidden_layers"]!);
        Assert.True(File.Exists(Path.Combine(outDir, "prune_plan.json")));
    }
}
