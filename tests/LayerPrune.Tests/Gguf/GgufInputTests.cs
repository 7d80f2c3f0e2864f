using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Gguf;
using LayerPrune.Hub;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Similarity;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tokenization;
using LLama.Native;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Gguf;

/// <summary>The kjv sample exported as f32, f16 and q8_0 GGUF and converted back (issue 27), in a temp folder.</summary>
public sealed class KjvGgufInputs : IDisposable
{
    public string Tmp { get; } = Directory.CreateTempSubdirectory("lp-gguf-in-").FullName;
    public Dictionary<GgufOutputType, (string Gguf, string Dir)> ByType { get; } = new();
    public KjvGgufInputs()
    {
        foreach (var t in new[] { GgufOutputType.F32, GgufOutputType.F16, GgufOutputType.Q8_0 })
        {
            string gguf = Path.Combine(Tmp, $"kjv-{t}.gguf");
            GgufExporter.Export(KjvModel.Dir, gguf, new GgufExportOptions { Type = t });
            ByType[t] = (gguf, ModelSource.Resolve(gguf, convertedCache: Path.Combine(Tmp, "cache")));
        }
    }
    public void Dispose() => Directory.Delete(Tmp, recursive: true);
}

/// <summary>
/// GGUF files as model input: the converted checkpoint measures like the HF folder it was exported from (issue 27
/// acceptance: f32 similarity 1e-5, loss 1e-4, l*(n) identical; f16 and q8_0 loss within the stated tolerances).
/// </summary>
public class GgufInputTests(KjvGgufInputs kjv) : IClassFixture<KjvGgufInputs>
{
    const int Chunks = 8, SeqLen = 96;

    static (double[,] Matrix, double Loss) Measure(string dir)
    {
        var tok = TokenizerLoader.Load(dir);
        var chunks = TokenChunks.FromLines(TextCorpus.Read(KjvModel.Validation), tok, SeqLen, Chunks);
        using var model = CausalLM.Load(dir);
        using var _ = no_grad();
        var sim = LayerSimilarity.Compute(model, chunks);
        return (sim.Matrix, LossEvaluator.Evaluate(model, chunks).ValidationLoss);
    }

    [Fact]
    public void F32GgufGivesTheHfFoldersSimilarityLossAndBlocks()
    {
        var (hfMatrix, hfLoss) = Measure(KjvModel.Dir);
        var (matrix, loss) = Measure(kjv.ByType[GgufOutputType.F32].Dir);
        double maxDiff = 0;
        for (int a = 0; a < matrix.GetLength(0); a++)
            for (int b = 0; b < matrix.GetLength(1); b++) maxDiff = Math.Max(maxDiff, Math.Abs(matrix[a, b] - hfMatrix[a, b]));
        Assert.InRange(maxDiff, 0, 1e-5);
        Assert.InRange(Math.Abs(loss - hfLoss), 0, 1e-4);
        int layers = matrix.GetLength(0) - 1;
        for (int n = 1; n < layers; n++)
            Assert.Equal(BlockChoice.Best(hfMatrix, n, false).Start, BlockChoice.Best(matrix, n, false).Start);
    }

    [Fact]
    public void F32GgufWeightsAreTheCheckpointsValuesWithQkPermutationUndone()
    {
        using var hf = Checkpoint.Open(KjvModel.Dir);
        using var back = Checkpoint.Open(kjv.ByType[GgufOutputType.F32].Dir);
        Assert.Equal(hf.WeightMap.Keys.Order(), back.WeightMap.Keys.Order());
        foreach (var name in hf.WeightMap.Keys)
        {
            using var a = hf.Load(name).to(ScalarType.Float32);
            using var b = back.Load(name);
            Assert.Equal(ScalarType.Float32, b.dtype);
            Assert.True(a.eq(b).all().item<bool>(), name);
        }
    }

    [Theory]
    [InlineData(GgufOutputType.F16, 1e-5)] // bf16 weights are exact in f16 unless below f16's range: measured 0 (8×96)
    [InlineData(GgufOutputType.Q8_0, 1e-3)] // 8-bit blocks of 32 (ffn_down stays f16: 688 columns): measured 2.1e-4 (8×96)
    public void QuantizedGgufLossIsWithinTolerance(GgufOutputType type, double tolerance)
    {
        var tok = TokenizerLoader.Load(KjvModel.Dir);
        var chunks = TokenChunks.FromLines(TextCorpus.Read(KjvModel.Validation), tok, SeqLen, Chunks);
        double Loss(string dir)
        {
            using var model = CausalLM.Load(dir);
            using var _ = no_grad();
            return LossEvaluator.Evaluate(model, chunks).ValidationLoss;
        }
        double hf = Loss(KjvModel.Dir), gguf = Loss(kjv.ByType[type].Dir);
        Console.WriteLine($"{type}: loss {gguf:F6} vs HF {hf:F6} (|diff| {Math.Abs(gguf - hf):E2})");
        Assert.InRange(Math.Abs(gguf - hf), 0, tolerance);
    }

    [Fact]
    public void TokenizerFromGgufMetadataEncodesAsTheOriginal()
    {
        var original = TokenizerLoader.Load(KjvModel.Dir);
        var back = TokenizerLoader.Load(kjv.ByType[GgufOutputType.Q8_0].Dir);
        foreach (var line in TextCorpus.Read(KjvModel.Validation).Take(200).Append("  two  spaces, digits 1234 and ünïcode"))
            Assert.Equal(original.Encode(line), back.Encode(line));
        Assert.Equal(original.BosId, back.BosId);
        Assert.Equal(original.EosIds, back.EosIds);
    }

    [Fact]
    public void ConvertedFolderIsReusedAndKeyedByTheFile()
    {
        var (gguf, dir) = kjv.ByType[GgufOutputType.F16];
        string cache = Path.Combine(kjv.Tmp, "cache");
        var before = File.GetLastWriteTimeUtc(Path.Combine(dir, Checkpoint.SingleFile));
        Assert.Equal(dir, ModelSource.Resolve(gguf, convertedCache: cache));
        Assert.Equal(before, File.GetLastWriteTimeUtc(Path.Combine(dir, Checkpoint.SingleFile)));
        Assert.Empty(Directory.GetDirectories(cache, "*.tmp-*"));
    }

    [Fact]
    public void Qwen2GoldenFixtureExportedAndReadBackGivesHfLogits()
    {
        using var g = new GoldenFixture("qwen2");
        string tmp = Directory.CreateTempSubdirectory("lp-gguf-qwen2-").FullName;
        try
        {
            string gguf = Path.Combine(tmp, "qwen2.gguf");
            GgufExporter.Export(g.Dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32 });
            string dir = ModelSource.Resolve(gguf, convertedCache: tmp);
            using var model = CausalLM.Load(dir);
            Assert.Equal("qwen2", model.Config.ModelType);
            using var ids = g["input_ids"].narrow(0, 0, 1);
            using var logits = model.Forward(ids);
            double diff = (logits[0].to(ScalarType.Float64) - g["logits_row0"].to(ScalarType.Float64)).abs().max().item<double>();
            Assert.InRange(diff, 0, 1e-4);
        }
        finally { Directory.Delete(tmp, recursive: true); }
    }

    [Fact]
    public void KQuantTensorIsRefusedInOneLineNamingTypeAndWayOut()
    {
        string tmp = Directory.CreateTempSubdirectory("lp-gguf-q4k-").FullName;
        try
        {
            string gguf = Path.Combine(tmp, "q4k.gguf");
            var meta = new List<KeyValuePair<string, GgufValue>> { new("general.architecture", GgufValue.Str("llama")) };
            GgufWriter.Write(gguf, meta, [new GgufTensorToWrite("blk.0.attn_q.weight", [256, 2], GgmlType.Q4_K,
                s => s.Write(new byte[2 * 144]))], force: false);
            var e = Assert.Throws<LayerPruneException>(() => ModelSource.Resolve(gguf, convertedCache: tmp));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains("'blk.0.attn_q.weight' is Q4_K", e.Message);
            Assert.Contains("f16 or q8_0", e.Message);
            Assert.Empty(Directory.GetDirectories(tmp));

            GgufWriter.Write(gguf, [new("general.architecture", GgufValue.Str("phi2"))], [], force: true);
            e = Assert.Throws<LayerPruneException>(() => ModelSource.Resolve(gguf, convertedCache: tmp));
            Assert.Contains("architecture 'phi2'", e.Message);
        }
        finally { Directory.Delete(tmp, recursive: true); }
    }

    /// <summary>
    /// A GGUF written by llama.cpp's own code (llama_model_quantize via LLamaSharp 0.30.0, q8_0 with the partial-block
    /// ffn_down matrices as f16, from our f32 export) is read and its greedy generation equals llama.cpp's on that file.
    /// </summary>
    [Fact]
    public void LlamaCppWrittenGgufIsReadAndGeneratesAsLlamaCpp()
    {
        var (f32, _) = kjv.ByType[GgufOutputType.F32];
        string theirs = Path.Combine(kjv.Tmp, "kjv-q8_0-llamacpp.gguf");
        var partial = GgufFile.Open(f32).Tensors.Where(t => t.Dims.Length >= 2 && t.Dims[0] % GgufExporter.Q8Block != 0)
            .Select(t => ($"^{System.Text.RegularExpressions.Regex.Escape(t.Name)}$", GGMLType.GGML_TYPE_F16)).ToList();
        if (!File.Exists(theirs)) Assert.True(LlamaCpp.Quantize(f32, theirs, LLamaFtype.MOSTLY_Q8_0, partial));
        Assert.Contains(GgufFile.Open(theirs).Tensors, t => t.Type == GgmlType.Q8_0);
        string dir = ModelSource.Resolve(theirs, convertedCache: Path.Combine(kjv.Tmp, "cache"));
        var tok = TokenizerLoader.Load(dir);
        var prompt = tok.Encode("In the beginning God created");
        Assert.Equal(LlamaCpp.Tokenize(theirs, "In the beginning God created", addBos: true), prompt);
        using var model = CausalLM.Load(dir);
        var ours = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 32, Greedy = true, StopAtEos = false });
        var (llama, _) = LlamaCpp.Greedy(theirs, prompt, 32);
        Assert.Equal(llama, ours.TokenIds[ours.PromptLength..]);
        Console.WriteLine($"llama.cpp-written q8_0 GGUF sha256 {Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(
            File.ReadAllBytes(theirs)))}");
    }

    /// <summary>
    /// `prune` of a GGUF input with a measured strategy chooses the block the HF folder's run chooses and writes a GGUF
    /// with exactly the tensors of the explicit-plan GGUF prune; `info` and `eval` take the GGUF too.
    /// </summary>
    [Fact]
    public void CliPrunesAGgufWithAMeasuredStrategyAndMeasuresIt()
    {
        var (gguf, _) = kjv.ByType[GgufOutputType.F32];
        var env = new Dictionary<string, string> { ["LAYERPRUNE_CACHE"] = Path.Combine(kjv.Tmp, "cli-cache") };
        string[] Args(string model, string outPath) =>
            ["prune", "--model", model, "--out", outPath, "--n", "3", "--strategy", "similarity", "--data", KjvModel.Validation,
             "--samples", "8", "--seq-len", "64", "--json", "--quiet"];
        var hf = Robustness.ChildRun.Run(Args(KjvModel.Dir, Path.Combine(kjv.Tmp, "hf-n3")), env: env);
        Assert.True(hf.Exit == 0, hf.Stderr);
        string outGguf = Path.Combine(kjv.Tmp, "kjv-n3.gguf");
        var r = Robustness.ChildRun.Run(Args(gguf, outGguf), env: env);
        Assert.True(r.Exit == 0, r.Stderr);
        var removed = System.Text.Json.Nodes.JsonNode.Parse(r.Stdout)!["removed"]!.ToJsonString();
        Assert.Equal(System.Text.Json.Nodes.JsonNode.Parse(hf.Stdout)!["removed"]!.ToJsonString(), removed);
        var plan = PrunePlan.FromJsonFile(Path.Combine(kjv.Tmp, "hf-n3", "prune_plan.json"), 16);
        string explicitOut = Path.Combine(kjv.Tmp, "kjv-n3-explicit.gguf");
        GgufPruner.Prune(gguf, plan, explicitOut, force: true);
        var a = GgufFile.Open(outGguf);
        var b = GgufFile.Open(explicitOut);
        Assert.Equal(13, a.BlockCount);
        static IEnumerable<(string, GgmlType, string)> Layout(GgufFile f) => f.Tensors.Select(t => (t.Name, t.Type, string.Join(",", t.Dims)));
        Assert.Equal(Layout(b), Layout(a));
        foreach (var t in a.Tensors.Take(12)) Assert.Equal(b.ReadTensorBytes(b.Tensors.First(x => x.Name == t.Name)), a.ReadTensorBytes(t));

        var info = Robustness.ChildRun.Run(["info", "--model", outGguf, "--json"], env: env);
        Assert.True(info.Exit == 0, info.Stderr);
        var eval = Robustness.ChildRun.Run(["eval", "--model", outGguf, "--task", "loss:" + KjvModel.Validation, "--max-chunks", "2",
            "--seq-len", "64", "--json", "--quiet"], env: env);
        Assert.True(eval.Exit == 0, eval.Stderr);
    }

    [Fact]
    public void UnpermuteInvertsTheExportPermutation()
    {
        using var w = randn(8 * 6, 5);
        using var p = GgufExporter.PermuteHeads(w, 6);
        using var back = GgufImporter.UnpermuteHeads(p, 6);
        Assert.False(p.eq(w).all().item<bool>());
        Assert.True(back.eq(w).all().item<bool>());
    }
}
