using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>A frozen base weight stored in a compressed form (e.g. NF4), expanded on demand.</summary>
public interface IQuantizedWeight : IDisposable
{
    long[] Shape { get; }
    /// <summary>The full weight [out, in] in <paramref name="dtype"/> on the weight's device.</summary>
    Tensor Dequantize(ScalarType dtype);
}

/// <summary>A trainable add-on to a linear layer (LoRA): y = base(x) + Forward(x).</summary>
public interface ILinearAdapter : IDisposable
{
    Tensor Forward(Tensor x);
}

/// <summary>y = x Wᵀ + b, like torch.nn.Linear; the base weight is either a plain tensor or quantized.</summary>
public sealed class Linear : IDisposable
{
    public Tensor? Weight;              // [out, in]
    public Tensor? Bias;                // [out]
    public IQuantizedWeight? Quantized; // replaces Weight when set
    public ILinearAdapter? Adapter;     // LoRA, when healing

    public Linear(Tensor weight, Tensor? bias) { Weight = weight; Bias = bias; }

    public long OutFeatures => Weight?.shape[0] ?? Quantized!.Shape[0];
    public long InFeatures => Weight?.shape[1] ?? Quantized!.Shape[1];

    public Tensor Forward(Tensor x)
    {
        Tensor y;
        if (Quantized is not null)
        {
            // Dequantized again in backward instead of being saved (QLoRA memory: one layer's weight at a time).
            y = QuantizedMatmul.Apply(x, Quantized);
            if (Bias is not null)
            {
                using var noBias = y;
                y = noBias + Bias;
            }
        }
        else y = nn.functional.linear(x, Weight!, Bias);
        if (Adapter is null) return y;
        using var delta = Adapter.Forward(x);
        using (y) return y + delta;
    }

    public void Dispose() { Weight?.Dispose(); Bias?.Dispose(); Quantized?.Dispose(); Adapter?.Dispose(); }
}
