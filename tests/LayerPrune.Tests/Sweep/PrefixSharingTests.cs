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
        foreach (var row in plain.Rows)
        {
            string key = VariantRow.KeyOf(row.Strategy, row.N, row.Healed, row.Seed);
            var (ra, rb) = (a["rows"]![key]!, b["rows"]![key]!);
            Assert.Equal((long)ra["layer_forwards"]!, (long)rb["layer_forwards"]! + (long)rb["layer_forwards_saved"]!);
        }
    }
}
