using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using LayerPrune.Tests.Efficiency;
using LayerPrune.Tests.Evaluation.Suite;
using LayerPrune.Tests.Integration;
using LayerPrune.Tokenization;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Evaluation;

/// <summary>
/// The intra-op thread policy of scoring (<see cref="EvalThreads"/>). It sets libtorch's process-wide thread count, so
/// these tests run alone.
/// </summary>
[Collection(ProcessWideCollection.Name)]
public class EvalThreadsTests
{
    /// <summary>min(current, max(1, round(cores − (load − own)))): a core is free when others leave half of it.</summary>
    [Theory]
    [InlineData(2, 2, null, 0.0, 2)]      // no load average: torch's count
    [InlineData(2, 2, 0.3, 0.0, 2)]       // nearly idle
    [InlineData(2, 2, 0.6, 0.0, 1)]       // others hold more than half a core
    [InlineData(2, 2, 45.0, 1.0, 1)]      // the loaded 2-core machine of the measurements
    [InlineData(2, 2, 2.0, 2.0, 2)]       // the load is this process's own two threads
    [InlineData(8, 16, 4.0, 0.0, 8)]      // never more than the current count
    [InlineData(8, 16, 12.2, 1.0, 5)]     // 16 − 11.2 = 4.8
    [InlineData(1, 2, 0.0, 0.0, 1)]       // one thread stays one
    public void ChoosesTheCoresOthersLeaveFree(int current, int cores, double? load, double own, int expected) =>
        Assert.Equal(expected, EvalThreads.Choose(current, cores, load, own));

    sealed class ThreadsSeen : IProgressSink
    {
        public readonly HashSet<int> Seen = [];
        public void OnStart(ProgressSnapshot s) { }
        public void OnAdvance(ProgressSnapshot s) => Seen.Add(get_num_threads());
        public void OnEnd(ProgressSnapshot s) { }
    }

    /// <summary>The count applies while scoring and is restored after; one and two threads give the same log-likelihoods,
    /// digit for digit, and so the same per-document metrics.</summary>
    [Fact]
    public void ScoresDoNotDependOnTheThreadCountAndTheCountIsRestored()
    {
        using var model = CausalLM.Load(KjvModel.Dir);
        var tok = TokenizerLoader.Load(KjvModel.Dir);
        var task = EvalTasks.Parse($"arc_easy:{SuiteRequestTests.Files["arc_easy"]}")
            .Prepare(tok, new EvalOptions { Limit = 8, BatchSize = 4 });
        int before = get_num_threads();
        var records = new List<IReadOnlyList<JsonObject>>();
        try
        {
            foreach (int n in new[] { 1, 2 })
            {
                EvalThreads.Fixed = n;
                var seen = new ThreadsSeen();
                records.Add(task.Score(model, progress: seen).Records);
                Assert.Equal([n], seen.Seen);
                Assert.Equal(before, get_num_threads());
            }
        }
        finally { EvalThreads.Fixed = null; }
        Assert.Equal(8, records[0].Count);
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal(records[0][i]["filtered_resps"]!.ToJsonString(), records[1][i]["filtered_resps"]!.ToJsonString());
            Assert.Equal(records[0][i]["acc_norm"]!.GetValue<double>(), records[1][i]["acc_norm"]!.GetValue<double>());
        }
    }
}
