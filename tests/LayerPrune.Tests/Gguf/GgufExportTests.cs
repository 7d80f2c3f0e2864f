using LayerPrune.Gguf;
using LayerPrune.Modeling;
using LayerPrune.Tests.Integration;
using LayerPrune.Tokenization;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Gguf;

/// <summary>Exported GGUF files run in llama.cpp (LLamaSharp) exactly like LayerPrune's engine runs the HF checkpoint.</summary>
public class GgufExportTests : IDisposable
{
    /// <summary>Max |llama.cpp − LayerPrune| over the last position's logits, f32 export (the issue's bound).</summary>
    const double LogitTolerance = 1e-3;

    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    static (int[] Tokens, float[] PromptLogits) Ours(string dir, IReadOnlyList<int> prompt, int newTokens)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var model = CausalLM.Load(dir);
        float[] logits;
        using (no_grad())
        using (var ids = tensor(prompt.Select(x => (long)x).ToArray(), [1, prompt.Count]))
        using (var l = model.Forward(ids))
            logits = l[0, -1].to(ScalarType.Float32).data<float>().ToArray();
        var r = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = newTokens, Greedy = true, StopAtEos = false });
        Console.WriteLine($"ours greedy {newTokens}: {sw.Elapsed.TotalSeconds:F2}s");
        return (r.TokenIds[r.PromptLength..], logits);
    }

    static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    [Fact]
    public void Kjv_F32_Export_Matches_LlamaCpp()
    {
        string gguf = Path.Combine(_tmp, "kjv.gguf");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        GgufExporter.Export(KjvModel.Dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        Console.WriteLine($"export: {sw.Elapsed.TotalSeconds:F2}s");
        var prompt = TokenizerLoader.Load(KjvModel.Dir).Encode("In the beginning God created");
        var (ours, ourLogits) = Ours(KjvModel.Dir, prompt, 32);
        var (theirs, theirLogits) = LlamaCpp.Greedy(gguf, prompt, 32);
        double diff = MaxAbsDiff(ourLogits, theirLogits);
        Console.WriteLine($"kjv f32: max |Δlogit| = {diff:E3}; ours {string.Join(",", ours)}; llama.cpp {string.Join(",", theirs)}");
        Assert.Equal(ours, theirs);
        Assert.True(diff <= LogitTolerance, $"max |Δlogit| {diff:E3} > {LogitTolerance}");
    }
}
