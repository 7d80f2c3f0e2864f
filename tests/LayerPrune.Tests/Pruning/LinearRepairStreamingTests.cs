using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tests.Robustness;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Pruning;

/// <summary>
/// The repair of an offloaded model (issue 24: "the accumulators must stream with the model when it is offloaded"): the fit
/// reads each layer once (layer-major) and gives the resident fit's maps; applied in memory it folds the streamed layer as it
/// is read; `prune --repair --offload` writes the same checkpoint as the resident prune. The golden fixtures are forced into
/// the streamed mode with offload: true / --offload.
/// </summary>
public class LinearRepairStreamingTests
{
    static List<int[]> RandomChunks(int count, int length, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, length).Select(_ => rng.Next(vocab)).ToArray()).ToList();
    }

    /// <summary>
    /// Same batches (4 + 2 chunks), same ops per batch, same order of the fp64 sums: the maps are expected bitwise equal; the
    /// stated tolerance (1e-12 relative, fp32 model, fp64 sums) only allows for a BLAS that splits differently.
    /// </summary>
    [Theory]
    [InlineData("llama", "2-3,6-7")]
    [InlineData("phi", "1,4")]
    public void StreamedFitReadsEachLayerOnceAndEqualsTheResidentFit(string arch, string spec)
    {
        using var g = new GoldenFixture(arch);
        using var resident = CausalLM.Load(g.Dir);
        using var streamed = CausalLM.Load(g.Dir, offload: true);
        Assert.True(streamed.Offloaded && !resident.Offloaded);
        var plan = PrunePlan.FromLayerSpec(spec, resident.NumLayers);
        var chunks = RandomChunks(6, 32, resident.Config.VocabSize, seed: 7);
        var o = new RepairOptions { BatchSize = 4 };
        using var a = LinearRepair.Fit(resident, plan, chunks, o);
        long reads = streamed.LayerReads;
        using var b = LinearRepair.Fit(streamed, plan, chunks, o);
        int depth = LinearRepair.RemovedRuns(plan).Max(r => r.EndExclusive);
        Assert.Equal(depth, streamed.LayerReads - reads);   // layer-major: layers 0 … e − 1 read once for all 6 chunks
        Assert.Equal(a.Maps.Count, b.Maps.Count);
        foreach (var (x, y) in a.Maps.Zip(b.Maps))
        {
            Assert.Equal((x.Start, x.EndExclusive, x.Tokens), (y.Start, y.EndExclusive, y.Tokens));
            double rel = (x.Transform - y.Transform).norm().item<double>() / x.Transform.norm().item<double>();
            Assert.True(rel <= 1e-12, $"{arch} {spec}: streamed map [{x.Start}, {x.EndExclusive}) differs by {rel:E2} (relative)");
            Assert.Equal(x.FitError, y.FitError, 1e-12);
            Assert.Equal(x.FitErrorIdentity, y.FitErrorIdentity, 1e-12);
        }
        // nothing is left attached to the model
        Assert.Null(streamed.LayerLoaded);
    }

    [Fact]
    public void AppliedToAnOffloadedModelTheRepairFoldsEachStreamedLayerAndIsUndone()
    {
        using var g = new GoldenFixture("phi");   // fc2 with a bias: both are folded
        using var resident = CausalLM.Load(g.Dir);
        using var streamed = CausalLM.Load(g.Dir, offload: true);
        var plan = PrunePlan.FromLayerSpec("1,4", resident.NumLayers);
        var chunks = RandomChunks(6, 32, resident.Config.VocabSize, seed: 3);
        var eval = RandomChunks(4, 32, resident.Config.VocabSize, seed: 4);
        using var repair = LinearRepair.Fit(resident, plan, chunks, new RepairOptions { BatchSize = 4 });
        double plain = LossEvaluator.Evaluate(streamed, eval, 4, plan.Kept).ValidationLoss;
        double expected;
        using (repair.ApplyTo(resident)) expected = LossEvaluator.Evaluate(resident, eval, 4, plan.Kept).ValidationLoss;
        double got;
        using (repair.ApplyTo(streamed)) got = LossEvaluator.Evaluate(streamed, eval, 4, plan.Kept).ValidationLoss;
        Assert.True(Math.Abs(got - expected) <= 1e-6, $"streamed repaired loss {got} vs resident {expected}");
        Assert.True(Math.Abs(got - plain) > 1e-4, $"the repair changed nothing ({got} vs {plain})");
        Assert.Null(streamed.LayerLoaded);
        double after = LossEvaluator.Evaluate(streamed, eval, 4, plan.Kept).ValidationLoss;
        Assert.Equal(plain, after);
    }

    [Fact]
    public void PruneRepairOffloadWritesTheResidentPrunesCheckpoint()
    {
        using var t = new TempDir();
        string golden = Path.Combine(TestPaths.Fixtures, "golden", "llama");
        var rng = new Random(11);
        string calib = t["calib.jsonl"];
        File.WriteAllLines(calib, Enumerable.Range(0, 6).Select(_ =>
            new JsonObject { ["input_ids"] = new JsonArray(Enumerable.Range(0, 32).Select(_ => (JsonNode)rng.Next(512)).ToArray()) }
                .ToJsonString()));
        string[] Args(string outDir, bool offload) =>
        [
            "prune", "-m", golden, "-o", outDir, "--layers", "2-3,6-7", "--repair", "linear", "--calibration", calib,
            "--calibration-chunks", "6", "--seq-len", "32", "--batch", "4", "--dtype", "fp32", "--quiet",
            .. offload ? ["--offload"] : Array.Empty<string>(),
        ];
        foreach (var (dir, offload) in new[] { (t["resident"], false), (t["streamed"], true) })
        {
            var (exit, _, stderr) = CliProcess.Run(Args(dir, offload));
            Assert.True(exit == 0, stderr);
        }
        Assert.Equal(File.ReadAllBytes(Path.Combine(t["resident"], "model.safetensors")),
            File.ReadAllBytes(Path.Combine(t["streamed"], "model.safetensors")));
        JsonNode Maps(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "prune_plan.json")))!["repair"]!["maps"]!;
        Assert.Equal(2, Maps(t["resident"]).AsArray().Count);
        Assert.True(JsonNode.DeepEquals(Maps(t["resident"]), Maps(t["streamed"])), "the recorded maps differ");
    }
}
