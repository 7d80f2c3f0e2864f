using LayerPrune.Healing;
using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

public class QuantizedMatmulTests
{
    /// <summary>
    /// The recomputing NF4 matmul gives the same output and the same input gradient (through a LoRA-style trainable
    /// path as in healing) as the plain linear on the dequantized weight; fp64 so the comparison is exact to 1e-12.
    /// </summary>
    [Fact]
    public void ForwardAndInputGradientEqualLinearOnTheDequantizedWeight()
    {
        var g = new TorchSharp.torch.Generator(7);
        using var w = randn(48, 64, generator: g);
        using var nf4 = Nf4Weight.Quantize(w);
        using var bias = randn(48, dtype: ScalarType.Float64, generator: g);
        using var x0 = randn(3, 5, 64, dtype: ScalarType.Float64, generator: g);
        using var upstream = randn(3, 5, 48, dtype: ScalarType.Float64, generator: g);

        using var xa = x0.clone().requires_grad_(true);
        using var linear = new Linear(zeros(1), bias.clone()) { Weight = null, Quantized = nf4 };
        using var ya = linear.Forward(xa);
        ya.backward([upstream]);

        using var xb = x0.clone().requires_grad_(true);
        using var wd = nf4.Dequantize(ScalarType.Float64);
        using var yb = nn.functional.linear(xb, wd, bias);
        yb.backward([upstream]);

        Assert.Equal(0, (ya - yb).abs().max().item<double>(), 12);
        Assert.Equal(0, (xa.grad! - xb.grad!).abs().max().item<double>(), 12);
        linear.Quantized = null; // owned by the test's using
    }

    /// <summary>
    /// Two NF4 linears in a row share the per-thread dequantization buffer (equal numel): forward L1, forward L2, backward
    /// L2, backward L1 each overwrite it, and the output and input gradient still equal plain linears on the dequantized
    /// weights (fp64, 1e-12), also when the same weight is used twice.
    /// </summary>
    [Fact]
    public void ChainedLayers_SharingTheScratchBuffer_GiveTheSameGradients()
    {
        var g = new TorchSharp.torch.Generator(11);
        using var w1 = randn(48, 64, generator: g);
        using var w2 = randn(64, 48, generator: g);
        using var q1 = Nf4Weight.Quantize(w1);
        using var q2 = Nf4Weight.Quantize(w2);
        using var x0 = randn(2, 7, 64, dtype: ScalarType.Float64, generator: g);
        using var upstream = randn(2, 7, 48, dtype: ScalarType.Float64, generator: g);

        using var xa = x0.clone().requires_grad_(true);
        using var h1 = QuantizedMatmul.Apply(xa, q1);
        using var h2 = QuantizedMatmul.Apply(h1.tanh(), q2);
        using var ya = QuantizedMatmul.Apply(h2, q1);
        ya.backward([upstream]);

        using var xb = x0.clone().requires_grad_(true);
        using var d1 = q1.Dequantize(ScalarType.Float64);
        using var d2 = q2.Dequantize(ScalarType.Float64);
        using var yb = nn.functional.linear(nn.functional.linear(nn.functional.linear(xb, d1).tanh(), d2), d1);
        yb.backward([upstream]);

        Assert.Equal(0, (ya - yb).abs().max().item<double>(), 12);
        Assert.Equal(0, (xa.grad! - xb.grad!).abs().max().item<double>(), 12);
        Assert.True(xa.grad!.abs().max().item<double>() > 1e-3);
    }
}
