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
}
