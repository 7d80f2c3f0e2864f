using System.Text.Json.Nodes;
using LayerPrune.Gguf;
using LayerPrune.Pruning;
using LayerPrune.Tests.Cli;
using LayerPrune.Tests.Modeling;

namespace LayerPrune.Tests.Gguf;

/// <summary>`export`, `prune` and `info` on GGUF files through the CLI; bad input gives one line and a non-zero exit.</summary>
public class GgufCliTests : IDisposable
{
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-cli-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);
    static string Golden(string name) => Path.Combine(TestPaths.Fixtures, "golden", name);

    [Fact]
    public void Export_Info_Prune_Info()
    {
        string gguf = Path.Combine(_tmp, "llama.gguf"), pruned = Path.Combine(_tmp, "llama-pruned.gguf");
        var (code, stdout, stderr) = CliRunner.Run("export", "--model", Golden("llama"), "--out", gguf, "--type", "f16", "--json");
        Assert.True(code == 0, stderr);
        Assert.Contains("minimal", stderr); // the fixture has no tokenizer
        Assert.Equal(8, (int)JsonNode.Parse(stdout)!["layers"]!);
        (code, stdout, stderr) = CliRunner.Run("info", "--model", gguf, "--json");
        Assert.True(code == 0, stderr);
        var info = JsonNode.Parse(stdout)!;
        Assert.Equal("llama", (string)info["architecture"]!);
        Assert.Equal(8, (int)info["layers"]!);
        Assert.Contains("F16×", (string)info["tensor_types"]!);
        Assert.Contains("F32×", (string)info["tensor_types"]!); // norms
        (code, stdout, stderr) = CliRunner.Run("prune", "--model", gguf, "--layers", "3-5", "--out", pruned, "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal(new[] { 3, 4, 5 }, JsonNode.Parse(stdout)!["removed"]!.AsArray().Select(x => (int)x!));
        (code, stdout, stderr) = CliRunner.Run("info", "--model", pruned, "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal(5, (int)JsonNode.Parse(stdout)!["layers"]!);
        Assert.Equal(GgufFile.Open(gguf).Tensors.Count - 3 * 9, GgufFile.Open(pruned).Tensors.Count);
    }

    [Fact]
    public void Bad_Input_Is_One_Line_With_NonZero_Exit()
    {
        string gguf = Path.Combine(_tmp, "llama.gguf");
        void Fails(int expected, string contains, params string[] args)
        {
            var (code, _, stderr) = CliRunner.Run(args);
            Assert.Equal(expected, code);
            Assert.Single(stderr.Trim().Split('\n'), l => l.StartsWith("error:"));
            Assert.Contains(contains, stderr);
            Assert.DoesNotContain("   at ", stderr);
        }
        Fails(2, "--type q4_k", "export", "--model", Golden("llama"), "--out", gguf, "--type", "q4_k");
        Fails(2, "--format onnx", "export", "--model", Golden("llama"), "--out", gguf, "--format", "onnx");
        Fails(1, "sliding_window 8", "export", "--model", Golden("mistral"), "--out", gguf);
        Fails(1, "set --ignore-sliding-window to export anyway", "export", "--model", Golden("mistral"), "--out", gguf);
        Assert.False(File.Exists(gguf));
        Assert.Empty(Directory.GetFiles(_tmp)); // no temp file left behind
        Assert.Equal(0, CliRunner.Run("export", "--model", Golden("llama"), "--out", gguf, "--type", "f32").exitCode);
        Fails(2, "already exists", "export", "--model", Golden("llama"), "--out", gguf);
        // A measured plan on a GGUF is allowed since issue 27 (GgufInputTests); a repair is not (prune the HF checkpoint instead).
        Fails(2, "cannot be repaired", "prune", "--model", gguf, "--layers", "2-3", "--repair", "linear", "--out", Path.Combine(_tmp, "p.gguf"));
        Fails(2, "out of range", "prune", "--model", gguf, "--layers", "7-9", "--out", Path.Combine(_tmp, "p.gguf"));
        Fails(2, "must not be the input", "prune", "--model", gguf, "--layers", "1", "--out", gguf, "--force");
        string truncated = Path.Combine(_tmp, "truncated.gguf");
        File.WriteAllBytes(truncated, File.ReadAllBytes(gguf)[..100_000]);
        Fails(1, "truncated.gguf", "info", "--model", truncated);
        Fails(1, "truncated.gguf", "prune", "--model", truncated, "--layers", "1", "--out", Path.Combine(_tmp, "p.gguf"));
        string notGguf = Path.Combine(_tmp, "text.gguf");
        File.WriteAllText(notGguf, "hello, this is not a GGUF file at all");
        Fails(1, "not a GGUF file", "info", "--model", notGguf);
    }

    /// <summary>
    /// Per-layer metadata arrays (here per-layer KV head counts, as some models store them) are cut with the blocks
    /// (llama.cpp's own --prune-layers misses them, upstream issue #27976); llama.cpp loads the result and it
    /// generates like LayerPrune's engine on the pruned HF checkpoint.
    /// </summary>
    [Fact]
    public void Prune_Cuts_Per_Layer_Arrays_And_Matches_Pruned_Checkpoint_In_LlamaCpp()
    {
        string full = Path.Combine(_tmp, "full.gguf"), arrays = Path.Combine(_tmp, "arrays.gguf"), pruned = Path.Combine(_tmp, "pruned.gguf");
        GgufExporter.Export(Golden("llama"), full, new GgufExportOptions { Type = GgufOutputType.F32 });
        var f = GgufFile.Open(full);
        var perLayer = GgufValue.Array(GgufValueType.UInt32, Enumerable.Repeat(2u, 8).ToArray());
        var metadata = f.Metadata.Select(kv => kv.Key == "llama.attention.head_count_kv" ? new(kv.Key, perLayer) : kv).ToList();
        GgufWriter.Write(arrays, metadata, f.Tensors.Select(t => new GgufTensorToWrite(t.Name, t.Dims, t.Type, s => f.CopyTensor(t, s))).ToList());

        GgufPruner.Prune(arrays, PrunePlan.FromLayerSpec("3-5", 8), pruned, force: false);
        var p = GgufFile.Open(pruned);
        Assert.Equal(5, p.BlockCount);
        Assert.Equal(5, p.Get("llama.attention.head_count_kv")!.Count);
        Assert.Equal(4, p.Get("llama.attention.head_count")!.AsLong()); // scalars untouched
        Assert.DoesNotContain(p.Tensors, t => t.Name.StartsWith("blk.5."));
        // Layer 6 of the source is block 3 now, byte for byte.
        var src6 = f.Tensors.Single(t => t.Name == "blk.6.attn_q.weight");
        Assert.Equal(f.ReadTensorBytes(src6), p.ReadTensorBytes(p.Tensors.Single(t => t.Name == "blk.3.attn_q.weight")));

        using var golden = new GoldenFixture("llama");
        var prompt = golden.TwoSamples()[0];
        var (theirs, _) = LlamaCpp.Greedy(pruned, prompt, 16);
        using var model = LayerPrune.Modeling.CausalLM.Load(golden.PrunedDir);
        var ours = LayerPrune.Modeling.TextGenerator.Generate(model, prompt,
            new LayerPrune.Modeling.GenerationOptions { MaxNewTokens = 16, Greedy = true, StopAtEos = false });
        Assert.Equal(ours.TokenIds[ours.PromptLength..], theirs);
    }
}
