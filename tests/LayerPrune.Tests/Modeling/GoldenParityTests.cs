using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Modeling;

/// <summary>Parity with HF transformers on every architecture's golden fixture (fp32, tolerance 1e-4 absolute).</summary>
public class GoldenParityTests
{
    const double Tol = 1e-4;

    static double MaxAbsDiff(Tensor a, Tensor b) => (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs().max().item<double>();

    [Fact]
    public void NativeBackendLoadsAndComputes()
    {
        Assert.StartsWith("2.10", __version__);
        using var a = tensor(new float[] { 1, 2, 3, 4 }, [2, 2]);
        using var p = a.matmul(a);
        Assert.Equal(new float[] { 7, 10, 15, 22 }, p.data<float>().ToArray());
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void LogitsOfRow0MatchHf(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        using var ids = g["input_ids"].narrow(0, 0, 1);
        using var logits = model.Forward(ids);
        Assert.InRange(MaxAbsDiff(logits[0], g["logits_row0"]), 0, Tol);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void LeftPaddedBatchMatchesHfOnValidPositions(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        var mask = g["attention_mask"];
        using var logits = model.Forward(g["input_ids"], mask);
        var expected = g["logits_batch_padded"];
        int firstValid = (int)(24 - mask[1].sum().item<long>());
        Assert.Equal(5, firstValid);
        Assert.InRange(MaxAbsDiff(logits[0], expected[0]), 0, Tol);
        Assert.InRange(MaxAbsDiff(logits[1].narrow(0, firstValid, 24 - firstValid), expected[1].narrow(0, firstValid, 24 - firstValid)), 0, Tol);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void RightPaddingGivesTheUnpaddedLogits(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        // Row 0 truncated to 19 tokens and right-padded with 5 junk tokens: the first 19 positions must equal row 0's logits.
        using var ids = g["input_ids"].clone();
        ids[1] = ids[0].clone(); ids[1, TensorIndex.Slice(19, 24)] = tensor(7L);
        using var mask = ones(2, 24, dtype: ScalarType.Int64);
        mask[1, TensorIndex.Slice(19, 24)] = tensor(0L);
        using var logits = model.Forward(ids, mask);
        Assert.InRange(MaxAbsDiff(logits[1].narrow(0, 0, 19), g["logits_row0"].narrow(0, 0, 19)), 0, Tol);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void ResidualStreamMatchesHfBeforeFinalNorm(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        var expected = g["residual_stream_row0"]; // [L+1, T, H]
        var got = new Tensor[model.NumLayers + 1];
        using var ids = g["input_ids"].narrow(0, 0, 1);
        using var _ = model.Forward(ids, options: new ForwardOptions { OnResidual = (k, x) => got[k] = x[0].clone().DetachFromDisposeScope() });
        for (int k = 0; k <= model.NumLayers; k++) Assert.InRange(MaxAbsDiff(got[k], expected[k]), 0, Tol);
        // HF's last hidden_states entry has the final norm applied: ours (before the norm) must differ from it.
        Assert.True(MaxAbsDiff(got[^1], g["hf_hidden_states_row0"][model.NumLayers]) > 1e-2);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void GreedyGenerationWithKvCacheMatchesHf(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var model = CausalLM.Load(g.Dir);
        var prompt = g["input_ids"][0].narrow(0, 0, 8).data<long>().Select(x => (int)x).ToArray();
        var result = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = 12, Greedy = true, StopAtEos = false });
        Assert.Equal(g["greedy_generate_row0_prompt8_new12"].data<long>().Select(x => (int)x).ToArray(), result.TokenIds);
    }

    [Theory, MemberData(nameof(GoldenFixture.Architectures), MemberType = typeof(GoldenFixture))]
    public void HfPrunedCheckpointAndInMemorySkipBothMatchHf(string arch)
    {
        using var g = new GoldenFixture(arch);
        using var ids = g["input_ids"].narrow(0, 0, 1);
        var expected = g["pruned_3_6_logits_row0"];
        using (var pruned = CausalLM.Load(g.PrunedDir))
        {
            Assert.Equal(5, pruned.NumLayers);
            using var logits = pruned.Forward(ids);
            Assert.InRange(MaxAbsDiff(logits[0], expected), 0, Tol);
        }
        using var model = CausalLM.Load(g.Dir);
        using var skipped = model.Forward(ids, options: new ForwardOptions { Layers = [0, 1, 2, 6, 7] });
        Assert.InRange(MaxAbsDiff(skipped[0], expected), 0, Tol);
    }
}
