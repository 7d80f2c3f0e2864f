using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Sweep;

/// <summary>
/// Issue 14: a sweep on a streamed (offloaded) model — what the CLI does when the resident model would not fit — gives the
/// rows of the resident sweep: the same block choices, losses and cloze scores (fp32, 1e-6) and the same greedy generations.
/// </summary>
public class StreamedSweepTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    [Fact]
    public void OffloadedModelGivesTheResidentRows()
    {
        using var tmp = new TempDir();
        SweepOptions Options(string outDir) => new()
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 4, SeqLen = 64, Batch = 4,
            Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"], Strategies = ["similarity", "deepest"], Ns = [2, 8],
            OutDir = outDir, Eval = new EvalOptions { MaxChunks = 4, BatchSize = 4, SeqLen = 64, Limit = 12 },
            Prompts = ["And God said"], GenerationTokens = 8,
        };
        var resident = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Options(tmp["resident"]));
        using var streamed = CausalLM.Load(KjvModel.Dir, offload: true);
        var offloaded = SweepRunner.Run(streamed, kjv.Tokenizer, Options(tmp["streamed"]));
        Assert.Equal(resident.Rows.Count, offloaded.Rows.Count);
        Assert.Equal(5, resident.Rows.Count);
        foreach (var (a, b) in resident.Rows.Zip(offloaded.Rows))
        {
            Assert.Equal((a.Strategy, a.N), (b.Strategy, b.N));
            Assert.Equal(a.Removed, b.Removed);
            Assert.Equal(a.Metrics.Keys, b.Metrics.Keys);
            foreach (var (name, value) in a.Metrics)
                Assert.True(Math.Abs(value - b.Metrics[name]) <= 1e-6, $"{a.Strategy} n={a.N} {name}: {value} vs {b.Metrics[name]}");
            Assert.Equal(a.Generations!.Select(g => g.TokenIds), b.Generations!.Select(g => g.TokenIds));
        }
    }
}
