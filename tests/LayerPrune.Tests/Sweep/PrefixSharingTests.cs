using System.Text.Json.Nodes;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Sweep;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sweep;

/// <summary>
/// Issue 30: residual streams shared by layer subsets are computed once (<see cref="PrefixCache"/>), with outputs equal to
/// the bit, and the sweep's rows are the same with and without sharing while it runs fewer decoder-layer forwards.
/// </summary>
public class PrefixSharingTests(KjvModel kjv) : IClassFixture<KjvModel>
{
    [Fact]
    public void ForwardsFromStoredStreamsEqualFullForwards()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var m = kjv.Model;
        int L = m.NumLayers;
        var ids = tensor(kjv.ValidationChunks(3).SelectMany(c => c.Take(48)).Select(x => (long)x).ToArray(), [3, 48]);
        int[] all = [.. Enumerable.Range(0, L)];
        int[] deepest = [.. Enumerable.Range(0, L - 5), L - 1];                  // deepest n=4: prefix of L−5 layers
        int[] block = [.. Enumerable.Range(0, 6), .. Enumerable.Range(10, L - 10)]; // a similarity-style block 6..9
        int[] shallow = [.. Enumerable.Range(3, L - 3)];                          // no shared prefix
        Tensor Run(int[] layers, Tensor input) => m.Forward(input, options: new ForwardOptions { Layers = layers });
        var expected = new[] { all, deepest, block, shallow }.Select(l => Run(l, ids)).ToArray();
        var other = ids.flip(1);
        var otherExpected = Run(deepest, other);
        var cache = new PrefixCache(64L << 20);
        try
        {
            m.PrefixCache = cache;
            var actual = new[] { all, deepest, block, shallow }.Select(l => Run(l, ids)).ToArray();
            for (int i = 0; i < actual.Length; i++)
                Assert.True(expected[i].equal(actual[i]).all().item<bool>(), $"variant {i}: logits differ with the cache");
            // deepest resumes after L−5 layers, the block after 6, the shallow variant from the embedding: 3 sequences each.
            Assert.Equal(3L * ((L - 5) + 6), cache.LayerForwardsSaved);
            Assert.Equal(3L * (L + 1 + (L - 10) + (L - 3)), cache.LayerForwards);
            // Another input shares nothing.
            long saved = cache.LayerForwardsSaved;
            Assert.True(Run(deepest, other).equal(otherExpected).all().item<bool>());
            Assert.Equal(saved, cache.LayerForwardsSaved);
        }
        finally
        {
            m.PrefixCache = null;
            cache.Dispose();
        }
    }

    [Fact]
    public void BudgetKeepsTheDeepestStreams()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var m = kjv.Model;
        int L = m.NumLayers;
        var ids = tensor(kjv.ValidationChunks(1)[0].Take(32).Select(x => (long)x).ToArray(), [1, 32]);
        long streamBytes = 32L * m.Config.HiddenSize * ids.shape[0] * (m.Dtype == ScalarType.Float32 ? 4 : 2);
        using var cache = new PrefixCache(streamBytes * 2);                       // room for two streams
        m.PrefixCache = cache;
        try
        {
            m.Forward(ids);
            Assert.Equal(streamBytes * 2, cache.Bytes);
            m.Forward(ids, options: new ForwardOptions { Layers = [.. Enumerable.Range(0, L - 2), L - 1] });
            Assert.Equal(L - 2L, cache.LayerForwardsSaved);                       // depth L−2 was kept (L−1 too)
            m.Forward(ids, options: new ForwardOptions { Layers = [.. Enumerable.Range(0, 3), L - 1] });
            Assert.Equal(L - 2L, cache.LayerForwardsSaved);                       // depth 3 was given up for deeper ones
        }
        finally { m.PrefixCache = null; }
        using var none = new PrefixCache(0);
        m.PrefixCache = none;
        try
        {
            m.Forward(ids);
            m.Forward(ids, options: new ForwardOptions { Layers = [0, 1, L - 1] });
            Assert.Equal(0, none.Bytes);
            Assert.Equal(0, none.LayerForwardsSaved);
            Assert.Equal(L + 3L, none.LayerForwards);
        }
        finally { m.PrefixCache = null; }
    }

    /// <summary>Cloze items of the embedded model as loglikelihood requests (context, each choice).</summary>
    List<IReadOnlyList<LoglikelihoodRequest>> ClozeItems(int count) => McTask.Load(KjvModel.Cloze, count)
        .Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations
            .Select(c => LoglikelihoodRequest.Build(kjv.Tokenizer, d.Context, c, addBos: true)).ToList()).ToList();

    static void AssertSame(List<Loglikelihood[]> expected, List<Loglikelihood[]> actual, string what)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            for (int c = 0; c < expected[i].Length; c++)
            {
                // Bitwise: the same hidden states give the same sums.
                Assert.True(BitConverter.DoubleToInt64Bits(expected[i][c].LogProb) == BitConverter.DoubleToInt64Bits(actual[i][c].LogProb),
                    $"{what}: item {i} choice {c}: {expected[i][c].LogProb:R} vs {actual[i][c].LogProb:R}");
                Assert.Equal(expected[i][c].IsGreedy, actual[i][c].IsGreedy);
            }
    }

    /// <summary>
    /// Multiple choice with the context in a KV cache: both passes start from the streams stored at the branch point and
    /// give the scores of a full forward to the bit; the layer forwards run and saved are exactly (items + choices) per layer.
    /// </summary>
    [Fact]
    public void ChoiceScoresFromStoredStreamsEqualFullForwards()
    {
        var m = kjv.Model;
        int L = m.NumLayers;
        var items = ClozeItems(7);
        long sequences = items.Count + items.Sum(x => x.Count);   // one context row and one row per choice
        int[] all = [.. Enumerable.Range(0, L)];
        int[] deepest = [.. Enumerable.Range(0, L - 5), L - 1];
        int[] block = [.. Enumerable.Range(0, 6), .. Enumerable.Range(10, L - 10)];
        int[] shallow = [.. Enumerable.Range(3, L - 3)];
        int[][] variants = [all, deepest, block, shallow];
        List<Loglikelihood[]> Score(int[] layers) => new LoglikelihoodScorer(m, batchSize: 3, layers: layers).ScoreDetailed(items);
        Assert.Null(m.PrefixCache);
        var expected = variants.Select(Score).ToArray();
        using var cache = new PrefixCache(64L << 20);
        m.PrefixCache = cache;
        try
        {
            var actual = variants.Select(Score).ToArray();
            for (int v = 0; v < variants.Length; v++) AssertSame(expected[v], actual[v], $"variant {v}");
            Assert.Equal(sequences * ((L - 5) + 6), cache.LayerForwardsSaved);
            Assert.Equal(sequences * (L + 1 + (L - 10) + (L - 3)), cache.LayerForwards);
            // Every batch stored its context and choice streams at depths 1 … L−1 (the shallow variant's layers 3… add none).
            Assert.Equal(cache.Bytes, cache.PeakBytes);
            Assert.Equal((L - 1) * PairBytes(items, 3), cache.Bytes);
        }
        finally { m.PrefixCache = null; }
    }

    /// <summary>Bytes of the context and choice streams of every batch of <paramref name="batchSize"/> items at one depth: the
    /// scorer's right-padded [D, P, H] and [N, R, H] (items sorted longest first, as it batches them).</summary>
    long PairBytes(List<IReadOnlyList<LoglikelihoodRequest>> items, int batchSize)
    {
        long elementBytes = kjv.Model.Dtype == ScalarType.Float32 ? 4 : 2, H = kjv.Model.Config.HiddenSize, bytes = 0;
        static int[] Seq(LoglikelihoodRequest r) => [.. r.ContextIds, .. r.ContinuationIds];
        static int Common(IReadOnlyList<LoglikelihoodRequest> item)
        {
            var seqs = item.Select(Seq).ToList();
            int n = seqs.Min(s => s.Length), i = 0;
            while (i < n && seqs.All(s => s[i] == seqs[0][i])) i++;
            return Math.Max(1, Math.Min(i, n - 1));
        }
        foreach (var batch in items.OrderByDescending(x => x.Max(r => Seq(r).Length)).Chunk(batchSize))
        {
            int P = batch.Max(Common);
            int R = Math.Max(1, batch.Max(x => x.Max(r => Seq(r).Length - 1) - Common(x)));
            bytes += (batch.Length * (long)P + batch.Sum(x => x.Count) * (long)R) * H * elementBytes;
        }
        return bytes;
    }

    /// <summary>
    /// The budget bounds the stored streams: room for two depths keeps the two deepest, a variant branching shallower runs
    /// from the embedding, and a budget below one batch's streams stores nothing; the scores stay those of full forwards.
    /// </summary>
    [Fact]
    public void ChoiceStreamsStayWithinTheBudget()
    {
        var m = kjv.Model;
        int L = m.NumLayers;
        var items = ClozeItems(4);
        long sequences = items.Count + items.Sum(x => x.Count);
        long pair = PairBytes(items, 8);                                       // one batch of 4 items
        int[] deepest1 = [.. Enumerable.Range(0, L - 2), L - 1], short3 = [0, 1, 2, L - 1];
        List<Loglikelihood[]> Score(int[]? layers) => new LoglikelihoodScorer(m, batchSize: 8, layers: layers).ScoreDetailed(items);
        var expected = new[] { null, deepest1, short3 }.Select(Score).ToArray();
        foreach (long budget in new[] { 2 * pair, pair - 1 })
        {
            using var cache = new PrefixCache(budget);
            m.PrefixCache = cache;
            try
            {
                var actual = new[] { null, deepest1, short3 }.Select(Score).ToArray();
                for (int v = 0; v < actual.Length; v++) AssertSame(expected[v], actual[v], $"budget {budget}, variant {v}");
                Assert.True(cache.PeakBytes <= budget, $"peak {cache.PeakBytes} B over the budget of {budget} B");
                bool room = budget >= pair;
                Assert.Equal(room ? 2 * pair : 0, cache.Bytes);                // depths L−1 and L−2, or nothing
                Assert.Equal(room ? sequences * (L - 2) : 0, cache.LayerForwardsSaved);
                Assert.Equal(sequences * (L + (room ? 1 : L - 1) + 4), cache.LayerForwards);
            }
            finally { m.PrefixCache = null; }
        }
    }

    [Fact]
    public void SweepRowsAreTheSameWithFewerLayerForwards()
    {
        using var tmp = new TempDir();
        SweepOptions Options(string dir, long budget) => new()
        {
            ModelDir = KjvModel.Dir, DataPath = KjvModel.Validation, Samples = 8, SeqLen = 64,
            Tasks = [$"loss:{KjvModel.Validation}", $"mc:{KjvModel.Cloze}"], Strategies = ["similarity", "deepest", "shallowest"],
            Ns = [2, 9], OutDir = tmp[dir], Eval = new EvalOptions { MaxChunks = 8, Limit = 4, BatchSize = 8 },
            PrefixCacheBytes = budget,
        };
        var plain = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Options("plain", 0));
        var shared = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Options("shared", 64L << 20));
        Assert.Null(kjv.Model.PrefixCache);
        Assert.Equal(plain.Rows.Count, shared.Rows.Count);
        for (int i = 0; i < plain.Rows.Count; i++)
            Assert.Equal(plain.Rows[i].ToJson().ToJsonString(), shared.Rows[i].ToJson().ToJsonString());   // (NaN ≠ NaN in DeepEquals)
        JsonNode Counts(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(tmp[dir], SweepPrefixes.FileName)))!;
        var a = Counts("plain");
        var b = Counts("shared");
        Assert.Equal(0L, (long)a["layer_forwards_without_prefix_reuse"]! - (long)a["layer_forwards"]!);
        // The same work either way: what sharing ran plus what it saved is what the plain sweep ran.
        Assert.Equal((long)a["layer_forwards"]!, (long)b["layer_forwards_without_prefix_reuse"]!);
        Assert.True((long)b["layer_forwards"]! < (long)a["layer_forwards"]!);
        // Exactly: S sequences (loss chunks, cloze contexts and choices) per layer; the unpruned row stores every depth, a
        // variant then runs only its layers after the first removed one.
        int L = kjv.Model.NumLayers;
        var cloze = McTask.Load(KjvModel.Cloze, 4);
        long S = 8 + cloze.Count + cloze.Sum(d => d.Continuations.Count);
        foreach (var row in shared.Rows)
        {
            string key = VariantRow.KeyOf(row.Strategy, row.N, row.Healed, row.Seed);
            var (ra, rb) = (a["rows"]![key]!, b["rows"]![key]!);
            Assert.Equal(S * (L - row.N), (long)ra["layer_forwards"]!);
            int branch = row.Removed.Count == 0 ? 0 : row.Removed[0];   // layers 0 … branch−1 are shared
            Assert.Equal(S * branch, (long)rb["layer_forwards_saved"]!);
            Assert.Equal(S * (L - row.N - branch), (long)rb["layer_forwards"]!);
        }
        Assert.Equal(2, shared.Rows.Count(r => r.Strategy == "deepest"));
        Assert.True((long)b["peak_bytes"]! <= 64L << 20);
        long run = (long)b["layer_forwards"]!, without = (long)b["layer_forwards_without_prefix_reuse"]!;
        Assert.Equal($"decoder-layer forwards: {run:N0} ({without:N0} without shared prefixes, "
            + $"{100.0 * (without - run) / without:F1} % fewer; layer_forwards.json)", SweepPrefixes.Summary(tmp["shared"]));
        Assert.Null(SweepPrefixes.Summary(tmp["none"]));

        // Resumed after losing its last two rows: the same rows; the resumed rows start from the embedding (nothing stored
        // yet in this process) or from streams stored since, and still count what the plain sweep ran.
        string results = Path.Combine(tmp["shared"], "results.json");
        string json = File.ReadAllText(results);
        var doc = JsonNode.Parse(json)!.AsObject();
        var rows = doc["rows"]!.AsArray();
        rows.RemoveAt(rows.Count - 1);
        rows.RemoveAt(rows.Count - 1);
        File.WriteAllText(results, doc.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        var resumed = SweepRunner.Run(kjv.Model, kjv.Tokenizer, Options("shared", 64L << 20));
        Assert.Equal(json, File.ReadAllText(results));
        Assert.Equal(plain.Rows.Select(r => r.ToJson().ToJsonString()), resumed.Rows.Select(r => r.ToJson().ToJsonString()));
        var c = Counts("shared");
        Assert.Equal(plain.Rows.Count, c["rows"]!.AsObject().Count);
        foreach (var row in plain.Rows)
        {
            string key = VariantRow.KeyOf(row.Strategy, row.N, row.Healed, row.Seed);
            var (ra, rc) = (a["rows"]![key]!, c["rows"]![key]!);
            Assert.Equal((long)ra["layer_forwards"]!, (long)rc["layer_forwards"]! + (long)rc["layer_forwards_saved"]!);
        }
    }
}
