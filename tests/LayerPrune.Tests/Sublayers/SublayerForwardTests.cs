using LayerPrune.Modeling;
using LayerPrune.Tests.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Sublayers;

/// <summary>In-memory sublayer removal on every golden architecture against <see cref="PlainForward"/>.</summary>
public class SublayerForwardTests
{
    internal static readonly SublayerMask Golden = new(attention: [1, 3], mlp: [2]);

    internal static double MaxDiff(Tensor a, Tensor b) =>
        (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void AttentionOf1And3AndMlpOf2RemovedEqualsPlainForward(string arch)
    {
        using var g = new GoldenFixture(arch);
        var ids = g["input_ids"][0].data<long>().ToArray();
        using var expected = PlainForward.Logits(g.Dir, ids, new HashSet<int> { 1, 3 }, new HashSet<int> { 2 });
        using var model = CausalLM.Load(g.Dir, dtype: ScalarType.Float64);
        using var input = tensor(ids, [1, ids.Length]);
        using var got = model.Forward(input, options: new ForwardOptions { Skip = Golden });
        Assert.InRange(MaxDiff(got[0], expected), 0, 1e-5);
        // The check can fail: the full model differs from the pruned reference by far more than the tolerance.
        using var full = model.Forward(input);
        Assert.True(MaxDiff(full[0], expected) > 1e-2);
        // And the plain forward with nothing removed is the model's own forward.
        using var plainFull = PlainForward.Logits(g.Dir, ids, new HashSet<int>(), new HashSet<int>());
        Assert.InRange(MaxDiff(full[0], plainFull), 0, 1e-5);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void KvCachedDecodingWithSkippedSublayersEqualsTheFullPass(string arch)
    {
        using var g = new GoldenFixture(arch);
        var ids = g["input_ids"][0].data<long>().Take(12).ToArray();
        using var model = CausalLM.Load(g.Dir, dtype: ScalarType.Float64);
        var options = new ForwardOptions { Skip = Golden };
        using var all = model.Forward(tensor(ids, [1, ids.Length]), options: options);
        using var cache = new KvCache(model.NumLayers);
        using var prefill = model.Forward(tensor(ids.Take(8).ToArray(), [1, 8]), cache: cache, options: options);
        for (int t = 8; t < ids.Length; t++)
        {
            using var step = model.Forward(tensor(new[] { ids[t] }, [1, 1]), cache: cache, options: options);
            Assert.InRange(MaxDiff(step[0, 0], all[0, t]), 0, 1e-9);
        }
        // Layers 1 and 3 have no attention: their slots hold nothing, the others hold 12 positions each.
        long perLayer = 2L * model.Config.NumKvHeads * model.Config.HeadDim * ids.Length * sizeof(double);
        Assert.Equal((model.NumLayers - 2) * perLayer, cache.Bytes);
        Assert.Equal(ids.Length, cache.Length);
    }
}
