using LayerPrune.Planning;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

/// <summary>
/// Activation checkpointing (recompute each decoder layer in backward) gives the loss and LoRA gradients of the plain
/// backward pass, with dropout drawn from the session's generator (its state is restored for the recompute).
/// </summary>
public sealed class GradientCheckpointingTests(HealFixture fx) : IClassFixture<HealFixture>
{
    /// <summary>
    /// One forward/backward with and without checkpointing on the 2-layer kjv model in fp32 (LoRA r 4 on every
    /// projection, B set non-zero so every A and B gets a gradient, dropout 0.1): the losses agree to 1e-6 and every
    /// gradient to 1e-6 of the largest gradient; the dropout generator ends in the same state. Then the same with an NF4
    /// base (the recompute keeps the dequantized weight instead of dequantizing again in backward).
    /// </summary>
    /// With <paramref name="replay"/> (<see cref="GradientCheckpointing.ReplayFanRatio"/> 0: every projection) the recompute takes the NF4
    /// matmuls' outputs from the forward pass: one replay per projection per layer, and the same loss and gradients.
    /// With ratio 2.5 only the projections with in/out at least that are replayed (the kjv model: down_proj, 688/256).
    [Theory]
    [InlineData(false, null)]
    [InlineData(true, null)]
    [InlineData(true, 0.0)]
    [InlineData(true, 2.5)]
    public void LossAndGradients_EqualPlainBackward(bool nf4, double? replayRatio)
    {
        using var setup = Adapted.Create(fx, nf4 ? BaseQuantization.Nf4 : BaseQuantization.None, chunkCount: 3);
        var (model, adapters, dropout, chunks) = (setup.Model, setup.Adapters, setup.Dropout, setup.Chunks);
        using var start = dropout.get_state();

        (double Loss, List<Tensor> Grads, Tensor Rng) Pass(GradientCheckpointing? checkpointing)
        {
            model.GradientCheckpointing = checkpointing;
            dropout.set_state(start);
            foreach (var (_, a) in adapters)
                foreach (var p in a.Parameters())
                    p.grad = null;
            using var loss = Healer.Loss(model, chunks);
            loss.backward();
            var grads = adapters.SelectMany(a => a.Adapter.Parameters()).Select(p => p.grad!.clone()).ToList();
            return (loss.item<float>(), grads, dropout.get_state());
        }

        var plain = Pass(null);
        long replayedBefore = QuantizedMatmul.ReplayedCount;
        var recomputed = Pass(new GradientCheckpointing { PreservedGenerators = [dropout], ReplayFanRatio = replayRatio });
        model.GradientCheckpointing = null;
        int perLayer = replayRatio switch
        {
            null => 0,
            double r => MemoryPlanner.ReplayedProjections(model.Config, r).Count(),
        };
        Assert.Equal(replayRatio is null ? 0 : replayRatio == 0 ? 7 : 1, perLayer);
        Assert.Equal((long)perLayer * model.NumLayers, QuantizedMatmul.ReplayedCount - replayedBefore);

        Assert.Equal(plain.Loss, recomputed.Loss, 1e-6);
        double scale = plain.Grads.Max(g => g.abs().max().item<float>());
        Assert.True(scale > 1e-4, $"gradients are all ~0 ({scale}): the test would not see a difference");
        double worst = plain.Grads.Zip(recomputed.Grads).Max(p => (p.First - p.Second).abs().max().item<float>());
        Assert.True(worst <= 1e-6 * scale, $"gradients differ by {worst} (largest gradient {scale})");
        Assert.True(HealingTestUtil.Same(plain.Rng, recomputed.Rng), "the dropout generator must end where the plain pass leaves it");
    }

    /// <summary>
    /// Without restoring the generator for the recompute, dropout would draw other masks in backward: the gradients then
    /// differ (shows that the test above can fail).
    /// </summary>
    [Fact]
    public void WithoutPreservedGenerator_GradientsDiffer()
    {
        using var setup = Adapted.Create(fx, BaseQuantization.None, chunkCount: 2);
        var (model, adapters, dropout, chunks) = (setup.Model, setup.Adapters, setup.Dropout, setup.Chunks);
        using var start = dropout.get_state();
        List<Tensor> Grads(GradientCheckpointing? c)
        {
            model.GradientCheckpointing = c;
            dropout.set_state(start);
            foreach (var p in adapters.SelectMany(a => a.Adapter.Parameters()))
                p.grad = null;
            using var loss = Healer.Loss(model, chunks);
            loss.backward();
            return adapters.Select(a => a.Adapter.A.grad!.clone()).ToList();
        }
        var plain = Grads(null);
        var unpreserved = Grads(new GradientCheckpointing());
        model.GradientCheckpointing = null;
        double worst = plain.Zip(unpreserved).Max(p => (p.First - p.Second).abs().max().item<float>());
        Assert.True(worst > 1e-4, $"gradients differ by only {worst}");
    }

    /// <summary>A whole heal run (6 steps, accumulation, dropout, NF4) gives the same adapters with and without checkpointing.</summary>
    [Fact]
    public void HealRun_SameAdapters()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        var o = fx.Options(fx.Fp32, a) with { Quant = BaseQuantization.Nf4, EvalDataPath = null };
        var ra = Healer.Run(o with { GradientCheckpointing = false });
        var rb = Healer.Run(o with { OutDir = b });
        Assert.True(rb.Options.GradientCheckpointing);
        using var fa = SafeTensorsFile.Open(Path.Combine(a, "adapter_model.safetensors"));
        using var fb = SafeTensorsFile.Open(Path.Combine(b, "adapter_model.safetensors"));
        double worst = 0;
        foreach (var name in fa.Tensors.Keys)
        {
            using var ta = fa.Load(name);
            using var tb = fb.Load(name);
            worst = Math.Max(worst, (ta - tb).abs().max().item<float>());
        }
        Assert.True(worst <= 1e-5, $"adapters differ by {worst}");
        Assert.Equal(ra.FinalTrainLoss!.Value, rb.FinalTrainLoss!.Value, 1e-5);
    }

    /// <summary>
    /// The 2-layer kjv model in fp32, frozen, with LoRA r 4 / alpha 8 / dropout 0.1 (seed 3) on every projection, B drawn
    /// non-zero (seed 11) so every A and B gets a gradient, dropout drawn from one generator (seed 5), and
    /// <paramref name="Chunks"/> of 32 training tokens.
    /// </summary>
    sealed record Adapted(CausalLM Model, IReadOnlyList<(string Name, LoraAdapter Adapter)> Adapters, Generator Dropout,
        List<int[]> Chunks) : IDisposable
    {
        public static Adapted Create(HealFixture fx, BaseQuantization quant, int chunkCount)
        {
            var model = CausalLM.Load(fx.Fp32);
            foreach (var (_, t) in model.NamedTensors())
                t.requires_grad_(false);
            var settings = new LoraSettings(LoraSettings.AllLinear, R: 4, Alpha: 8, Dropout: 0.1);
            var adapters = LoraInjector.Inject(model.NamedLinears(), settings, seed: 3, quant);
            using var init = new Generator(11);
            using (no_grad())
                foreach (var (_, a) in adapters)
                    a.B.normal_(0, 0.02, init);
            var dropout = new Generator(5);
            foreach (var (_, a) in adapters)
                a.DropoutGenerator = dropout;
            var chunks = TokenChunks.FromLines(TextCorpus.Read(fx.Train), TokenizerLoader.Load(fx.Fp32), 32, chunkCount);
            return new Adapted(model, adapters, dropout, chunks);
        }

        public void Dispose()
        {
            Dropout.Dispose();
            Model.Dispose();
        }
    }
}
