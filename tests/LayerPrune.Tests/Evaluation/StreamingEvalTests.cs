using LayerPrune.Checkpoints;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Planning;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Evaluation;

/// <summary>
/// Chunked lm_head / log-softmax and layer-major streaming (offloaded) evaluation give the numbers of the resident,
/// unchunked path (fp32, 1e-6).
/// </summary>
public class StreamingEvalTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    const double Tol = 1e-6;

    /// <summary>The pre-chunking formula: full [B, T, V] logits, fp32 log-softmax, gather, mean.</summary>
    static double UnchunkedMeanLoss(CausalLM model, IReadOnlyList<int[]> seqs)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int T = seqs[0].Length;
        var ids = tensor(seqs.SelectMany(s => s.Select(x => (long)x)).ToArray(), [seqs.Count, T]);
        var logp = model.Forward(ids).narrow(1, 0, T - 1).to(ScalarType.Float32).log_softmax(-1);
        var targets = ids.narrow(1, 1, T - 1).unsqueeze(-1);
        return (-logp.gather(2, targets).mean()).to(ScalarType.Float64).item<double>();
    }

    /// <summary>Sequences of length <paramref name="t"/> cut from the golden input ids (rotated so they differ).</summary>
    static List<int[]> GoldenSequences(GoldenFixture g, int count, int t)
    {
        var row = g.TwoSamples()[0];
        return Enumerable.Range(0, count).Select(k => Enumerable.Range(0, t).Select(i => row[(i + 3 * k) % row.Length]).ToArray()).ToList();
    }

    /// <summary>Items of 3 choices with a shared context and choices of different lengths (one shorter than the others).</summary>
    static List<IReadOnlyList<LoglikelihoodRequest>> GoldenItems(GoldenFixture g, int count)
    {
        var row = g.TwoSamples()[0];
        int At(int i) => row[i % row.Length];
        return Enumerable.Range(0, count).Select(k => (IReadOnlyList<LoglikelihoodRequest>)Enumerable.Range(0, 3)
            .Select(c => new LoglikelihoodRequest(
                Enumerable.Range(k, 5 + k % 4).Select(At).ToArray(),
                Enumerable.Range(7 * c + k, 1 + (c + k) % 3).Select(At).ToArray())).ToList()).ToList();
    }

    static void AssertScoresEqual(List<double[]> expected, List<double[]> actual, double tol)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            for (int c = 0; c < expected[i].Length; c++)
                Assert.True(Math.Abs(expected[i][c] - actual[i][c]) <= tol, $"item {i} choice {c}: {actual[i][c]} vs {expected[i][c]}");
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void ChunkedLogProbsEqualTheFullLogSoftmax(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        using var _ = no_grad();
        using var ids = g["input_ids"].narrow(0, 0, 1);
        using var hidden = model.Forward(ids, options: new ForwardOptions { HiddenOnly = true });          // [1, 24, H]
        using var flat = hidden[0];
        using var targets = ids[0].roll(-1, 0);
        using var full = model.Head(hidden)[0].to(ScalarType.Float32).log_softmax(-1).gather(1, targets.unsqueeze(1)).squeeze(1);
        foreach (long rows in new long[] { 1, 5, 24, 100 })
        {
            using var chunked = TokenLogProbs.Gather(model, flat, targets, rows);
            Assert.Equal(24, chunked.shape[0]);
            double diff = (chunked - full).abs().max().item<float>();
            Assert.True(diff <= Tol, $"{arch}, {rows} rows per chunk: max |Δ| = {diff}");
        }
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void StreamedEvaluationEqualsResident(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var resident = CausalLM.Load(g.Dir);
        using var streamed = CausalLM.Load(g.Dir, offload: true);
        Assert.True(streamed.Offloaded);
        var seqs = GoldenSequences(g, 7, 12);
        int[] layers = [0, 1, 2, 6, 7];
        foreach (var subset in new[] { null, layers })
        {
            var a = LossEvaluator.Evaluate(resident, seqs, batchSize: 3, layers: subset);
            var b = LossEvaluator.Evaluate(streamed, seqs, batchSize: 3, layers: subset);
            Assert.Equal(a.Tokens, b.Tokens);
            Assert.InRange(b.ValidationLoss - a.ValidationLoss, -Tol, Tol);
            if (subset is null) Assert.InRange(a.ValidationLoss - UnchunkedMeanLossOfAll(resident, seqs, 3), -Tol, Tol);
        }
        var items = GoldenItems(g, 6);
        foreach (bool reuse in new[] { true, false })
        {
            var a = new LoglikelihoodScorer(resident, batchSize: 4, layers: layers).Score(items, reuse);
            var b = new LoglikelihoodScorer(streamed, batchSize: 4, layers: layers).Score(items, reuse);
            AssertScoresEqual(a, b, Tol);
        }
    }

    /// <summary>Token-weighted mean of the unchunked per-batch losses (what Evaluate computed before chunking).</summary>
    static double UnchunkedMeanLossOfAll(CausalLM model, List<int[]> seqs, int batch) =>
        seqs.Chunk(batch).Sum(b => UnchunkedMeanLoss(model, b) * b.Length) / seqs.Count;

    [Fact]
    public void KjvStreamedLossAndClozeEqualResident()
    {
        var chunks = kjv.ValidationChunks(12);
        var resident = LossEvaluator.Evaluate(kjv.Model, chunks, batchSize: 4);
        Assert.InRange(resident.ValidationLoss - UnchunkedMeanLossOfAll(kjv.Model, chunks, 4), -Tol, Tol);
        using var streamed = CausalLM.Load(KjvModel.Dir, offload: true);
        var s = LossEvaluator.Evaluate(streamed, chunks, batchSize: 4);
        Assert.InRange(s.ValidationLoss - resident.ValidationLoss, -Tol, Tol);

        var docs = McTask.Load(KjvModel.Cloze, 10);
        var requests = docs.Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations
            .Select(c => LoglikelihoodRequest.Build(kjv.Tokenizer, d.Context, c, addBos: true)).ToList()).ToList();
        foreach (bool reuse in new[] { true, false })
            AssertScoresEqual(new LoglikelihoodScorer(kjv.Model, batchSize: 3).Score(requests, reuse),
                new LoglikelihoodScorer(streamed, batchSize: 3).Score(requests, reuse), Tol);
    }

    [Theory, InlineData("llama"), InlineData("qwen2")]
    public void StreamedGenerationGivesTheResidentTokens(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var resident = CausalLM.Load(g.Dir);
        using var streamed = CausalLM.Load(g.Dir, offload: true);
        var prompt = g.TwoSamples()[0].Take(6).ToArray();
        var o = new GenerationOptions { MaxNewTokens = 8, StopAtEos = false };
        var a = TextGenerator.Generate(resident, prompt, o);
        var b = TextGenerator.Generate(streamed, prompt, o);
        Assert.Equal(14, a.TokenIds.Length);
        Assert.Equal(a.TokenIds, b.TokenIds);
    }

    static ModelConfig Shape(string name) =>
        ModelConfig.Parse(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "bench", "shapes", name + ".json")), name);

    [Fact]
    public void PlannerStreamsEvaluationWhereTheResidentModelDoesNotFit()
    {
        // Llama-2-7B in fp32 on 24 GB: 27 GB of weights resident; streamed: embeddings + lm_head (1 GB) + one layer (0.8 GB) + a
        // group of residual streams (1 GB) + activations.
        var request = new MemoryRequest { Config = Shape("llama-2-7b"), ComputeDtype = ScalarType.Float32, Workload = Workload.Evaluate,
                                          BatchSize = 8, SeqLen = 256, StorageDtype = "BF16", CanOffload = true };
        var plan = MemoryPlanner.Plan(request, availableBytes: 24_000_000_000);
        Assert.True(plan.Offload);
        Assert.NotNull(plan.Notice);
        Assert.InRange(plan.Estimate.Required, 2_000_000_000, 6_000_000_000);
        // Without streaming the same request is refused (what eval did before), naming the bf16 dtype as the fix.
        var refused = Assert.Throws<MemoryPlanException>(() => MemoryPlanner.Plan(request with { CanOffload = false }, availableBytes: 24_000_000_000));
        Assert.Equal("dtype", refused.FixParameter);

        // A simulated small machine: TinyLlama in fp32 (4.4 GB of weights) with 5 GB available streams; with 40 GB it stays resident.
        var tiny = request with { Config = Shape("tinyllama-1.1b") };
        Assert.True(MemoryPlanner.Plan(tiny, availableBytes: 5_000_000_000).Offload);
        Assert.False(MemoryPlanner.Plan(tiny, availableBytes: 40_000_000_000).Offload);
        // --offload forces streaming even where resident fits.
        Assert.True(MemoryPlanner.Plan(tiny, forceOffload: true, availableBytes: 40_000_000_000).Offload);
    }

    [Fact]
    public void EvaluationLogitsAreBoundedByTheChunkNotTheVocabularyTimesPositions()
    {
        // Qwen2.5-0.5B (152K vocabulary), batch 4 × 256: the unchunked [B, T, V] fp32 logits + log-softmax alone are 1.25 GB.
        var request = new MemoryRequest { Config = Shape("qwen2.5-0.5b"), ComputeDtype = ScalarType.BFloat16, Workload = Workload.Evaluate,
                                          BatchSize = 4, SeqLen = 256, StorageDtype = "BF16" };
        var e = MemoryPlanner.Estimate(request, offload: false);
        long unchunked = 4L * 256 * 151_936 * 4 * 2;
        Assert.True(e.Activations < unchunked / 3, $"activations {e.Activations} vs unchunked logits {unchunked}");
    }
}
