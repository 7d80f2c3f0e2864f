using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tests.Robustness;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Pruning;

/// <summary>`prune --repair` on the golden llama with pre-tokenized calibration: the written checkpoint, the plan's record,
/// and bad input refused in one line with nothing written.</summary>
public class RepairCliTests
{
    static string Golden => Path.Combine(TestPaths.Fixtures, "golden", "llama");

    /// <summary>Pre-tokenized JSONL calibration: <paramref name="rows"/> rows of 32 seeded random ids below 512.</summary>
    static string Calibration(TempDir t, int rows = 4)
    {
        var rng = new Random(11);
        string p = t["calib.jsonl"];
        File.WriteAllLines(p, Enumerable.Range(0, rows).Select(_ =>
            new JsonObject { ["input_ids"] = new JsonArray(Enumerable.Range(0, 32).Select(_ => (JsonNode)rng.Next(512)).ToArray()) }
                .ToJsonString()));
        return p;
    }

    [Fact]
    public void PruneRepairLinearWritesTheFoldedCheckpointAndRecordsTheRepair()
    {
        using var t = new TempDir();
        string calib = Calibration(t);
        var (exit, stdout, stderr) = CliProcess.Run(["prune", "-m", Golden, "-o", t["out"], "--layers", "3-5", "--repair", "linear",
            "--calibration", calib, "--calibration-chunks", "4", "--seq-len", "32", "--dtype", "fp32", "--json", "--quiet"]);
        Assert.True(exit == 0, stderr);
        var printed = JsonNode.Parse(stdout)!;
        var plan = JsonNode.Parse(File.ReadAllText(Path.Combine(t["out"], "prune_plan.json")))!;
        var repair = plan["repair"]!;
        Assert.Equal("linear", (string)repair["method"]!);
        Assert.Equal(128, (long)repair["calibration_tokens"]!);
        Assert.Equal(0.0, (double)repair["alpha"]!);
        Assert.True((double)repair["seconds"]! >= 0);
        var map = repair["maps"]![0]!;
        Assert.Equal(2, (int)map["folded_into_layer"]!);
        Assert.True((double)map["relative_residual"]! < 1e-9 && (double)map["condition_estimate"]! >= 1);
        Assert.True(JsonNode.DeepEquals(repair["maps"], printed["repair"]!["maps"]));

        // the same map fitted by the library from the same chunks gives the written down_proj
        using var model = CausalLM.Load(Golden);
        var chunks = Data.PreTokenized.Chunks(calib, 32, 4);
        using var fit = LinearRepair.Fit(model, PrunePlan.FromLayerSpec("3-5", 8), chunks);
        using var src = Checkpoint.Open(Golden);
        var expected = fit.FoldedTensors(src)["model.layers.2.mlp.down_proj.weight"];
        using var written = SafeTensorsFile.Open(Path.Combine(t["out"], "model.safetensors"));
        using var w = written.Load("model.layers.2.mlp.down_proj.weight");
        Assert.True(w.allclose(expected, 0, 0), "the CLI's folded down_proj differs from the library's");
        expected.Dispose();
    }

    public static readonly TheoryData<string> BadCases = new() { "layer0", "nodata", "alpha", "singular", "method", "gguf" };

    /// <summary>A file that is a GGUF by its magic bytes (all the refusal looks at, before any tensor is read).</summary>
    static string GgufMagicOnly(string path)
    {
        File.WriteAllBytes(path, [(byte)'G', (byte)'G', (byte)'U', (byte)'F', 3, 0, 0, 0]);
        return path;
    }

    [Theory, MemberData(nameof(BadCases))]
    public void BadRepairInputGivesOneLineAndWritesNothing(string name)
    {
        using var t = new TempDir();
        string calib = Calibration(t);
        string[] common = ["prune", "-m", Golden, "-o", t["out"], "--dtype", "fp32"];
        var (args, fragment) = name switch
        {
            "layer0" => ((string[])[.. common, "--layers", "0-2", "--repair", "linear", "--calibration", calib, "--seq-len", "32"],
                         "--repair linear: the plan removes layer 0"),
            "nodata" => ([.. common, "--layers", "3-5", "--repair", "linear"], "--repair linear: needs calibration data"),
            "alpha" => ([.. common, "--layers", "3-5", "--repair", "linear", "--repair-alpha", "-1", "--calibration", calib],
                        "--repair-alpha -1: must be a finite number >= 0"),
            "singular" => ([.. common, "--layers", "3-5", "--repair", "linear", "--calibration", calib, "--seq-len", "1",
                            "--calibration-chunks", "1"], "is singular (rank 1 of 64 from 1 calibration tokens)"),
            "method" => ([.. common, "--layers", "3-5", "--repair", "ols", "--calibration", calib], "--repair ols: expected none, linear or cosine"),
            _ => (["prune", "-m", GgufMagicOnly(t["x.gguf"]), "-o", t["out"], "--layers", "3-5", "--repair", "linear"], "--repair: a .gguf model cannot be repaired"),
        };
        var (exit, _, stderr) = CliProcess.Run(args);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("dtype:")).ToArray();
        Assert.True(lines.Length == 1, $"expected one line:\n{stderr}");
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(fragment, lines[0]);
        Assert.NotEqual(0, exit);
        Assert.False(Directory.Exists(t["out"]), "--out was written");
        Assert.Empty(Directory.EnumerateDirectories(t.Path));   // no temp sibling left behind
    }
}
