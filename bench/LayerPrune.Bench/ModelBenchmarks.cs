using System.Diagnostics;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Similarity;
using LayerPrune.Tokenization;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>The embedded samples, found the same way the CLI finds them.</summary>
public static class BenchPaths
{
    public static string Sample(string relative) => LayerPrune.Cli.Commands.Samples.Find(relative);
}

public static class ModelBenchmarks
{
    /// <summary>Median seconds of <paramref name="repeats"/> runs after one warm-up.</summary>
    public static double Time(Action action, int repeats = 3)
    {
        action();
        var times = new List<double>();
        for (int i = 0; i < repeats; i++) { var sw = Stopwatch.StartNew(); action(); times.Add(sw.Elapsed.TotalSeconds); }
        return times.Order().ElementAt(times.Count / 2);
    }

    /// <summary>GFLOP/s of an fp32 matmul [m, k] × [k, n].</summary>
    static double MatmulGflops(int m, int k, int n)
    {
        using var a = randn(m, k); using var b = randn(k, n);
        return Gflops(2.0 * m * k * n, () => a.matmul(b).Dispose());
    }

    /// <summary>
    /// GFLOP/s of x [m, k] times a weight stored [n, k] as the model stores it (nn.functional.linear, as every projection
    /// runs) in <paramref name="dtype"/>. A plain matmul with a [k, n] right operand measured 404 vs 853 GFLOP/s here in
    /// bf16 (oneDNN picks another kernel for the transposed weight), so only this form is the model's peak.
    /// </summary>
    internal static double LinearGflops(int m, int k, int n, ScalarType dtype)
    {
        using var a = randn(m, k).to(dtype);
        using var w = randn(n, k).to(dtype);
        return Gflops(2.0 * m * k * n, () => nn.functional.linear(a, w).Dispose());
    }

    /// <summary>GFLOP/s of <paramref name="call"/> (<paramref name="flopsPerCall"/> each), repeated to ~20 GFLOP per timing.</summary>
    static double Gflops(double flopsPerCall, Action call)
    {
        int reps = Math.Max(1, (int)(2e10 / flopsPerCall));
        double s = Time(() => { for (int i = 0; i < reps; i++) call(); });
        return flopsPerCall * reps / s / 1e9;
    }

    /// <summary>Forward FLOPs per token: 2 per weight of every matmul (layers + lm_head) + attention scores and mixing (causal: T/2 keys on average).</summary>
    internal static double FlopsPerToken(CausalLM m, int seqLen)
    {
        var c = m.Config;
        double linear = m.NamedLinears().Sum(x => (double)x.linear.InFeatures * x.linear.OutFeatures) + (double)c.HiddenSize * c.VocabSize;
        double attention = 2.0 * 2 * c.NumLayers * c.NumHeads * c.HeadDim * (seqLen / 2.0);
        return 2 * linear + attention;
    }

    static List<int[]> Chunks(string model, int count, int seqLen) =>
        TokenChunks.FromLines(TextCorpus.Read(BenchPaths.Sample(Path.Combine("data", "kjv", "validation.txt"))), TokenizerLoader.Load(model), seqLen, count);

    static Tensor Batch(List<int[]> chunks) => tensor(chunks.SelectMany(c => c.Select(x => (long)x)).ToArray(), [chunks.Count, chunks[0].Length]);

    /// <summary>Issue 2: CPU forward throughput as a fraction of fp32 matmul speed measured now (goal ≥ 0.5).</summary>
    public static void Forward(TextWriter o, string modelDir)
    {
        using var m = CausalLM.Load(modelDir);
        const int B = 8, T = 256;
        using var ids = Batch(Chunks(modelDir, B, T));
        using var _ = no_grad();
        double s = Time(() => m.Forward(ids).Dispose());
        double tokensPerSecond = B * T / s, modelGflops = tokensPerSecond * FlopsPerToken(m, T) / 1e9;
        var c = m.Config;
        double mlpShaped = MatmulGflops(B * T, c.HiddenSize, c.IntermediateSize);
        double square = MatmulGflops(2048, 2048, 2048);
        o.WriteLine($"forward   : {tokensPerSecond:F0} tokens/s (batch {B}×{T}, fp32) = {modelGflops:F1} GFLOP/s");
        o.WriteLine($"            ratio to an fp32 matmul of the model's MLP shape [{B * T}×{c.HiddenSize}]×[{c.HiddenSize}×{c.IntermediateSize}] ({mlpShaped:F1} GFLOP/s): {modelGflops / mlpShaped:F2}  (goal ≥ 0.5)");
        o.WriteLine($"            ratio to a 2048³ fp32 matmul ({square:F1} GFLOP/s): {modelGflops / square:F2}");
    }

    /// <summary>Issue 3: the whole (L+1)² distance matrix vs one plain forward pass (logits) over the same samples (goal ≤ 1.1).</summary>
    public static void Similarity(TextWriter o, string modelDir)
    {
        using var m = CausalLM.Load(modelDir);
        var samples = Chunks(modelDir, 64, 256);
        using var _ = no_grad();
        double plain = Time(() => { foreach (var b in samples.Chunk(8)) using (var ids = Batch(b.ToList())) m.Forward(ids).Dispose(); });
        double sim = Time(() => LayerSimilarity.Compute(m, samples, 8));
        double simBi = Time(() => LayerSimilarity.Compute(m, samples, 8, blockInfluence: true));
        o.WriteLine($"similarity: full {m.NumLayers + 1}×{m.NumLayers + 1} matrix, 64×256 tokens: {sim / plain:F2}× the time of a plain forward pass (goal ≤ 1.1); with block influence {simBi / plain:F2}×");
    }

    /// <summary>Issue 5: scoring 4-choice items with a shared-prefix KV cache vs every choice from scratch (goal ≥ 2×).</summary>
    public static void PrefixReuse(TextWriter o, string modelDir)
    {
        using var m = CausalLM.Load(modelDir);
        var tok = TokenizerLoader.Load(modelDir);
        var cloze = BenchPaths.Sample(Path.Combine("data", "kjv-cloze"));
        foreach (var (name, docs) in new[] { ("mmlu 5-shot (kjv-cloze CSV)", MmluTask.Load(cloze, 5, 12)), ("mc 0-shot (kjv-cloze JSONL)", McTask.Load(Path.Combine(cloze, "test.jsonl"), 100)) })
        {
            var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations.Select(c => LoglikelihoodRequest.Build(tok, d.Context, c, true)).ToList()).ToList();
            var scorer = new LoglikelihoodScorer(m, batchSize: 8);
            double reuse = Time(() => scorer.Score(requests, reusePrefix: true), 1);
            double scratch = Time(() => scorer.Score(requests, reusePrefix: false), 1);
            double avgCtx = requests.Average(r => r[0].ContextIds.Length), avgCont = requests.Average(r => r.Average(x => x.ContinuationIds.Length));
            o.WriteLine($"prefix    : {name}, {docs.Count} items, context {avgCtx:F0} / continuation {avgCont:F1} tokens: shared-prefix scoring is {scratch / reuse:F2}× faster than from scratch (goal ≥ 2)");
        }
    }
}
