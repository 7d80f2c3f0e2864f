using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>A frozen base weight stored in a compressed form (e.g. NF4), expanded on demand.</summary>
public interface IQuantizedWeight : IDisposable
{
    /// <summary>The full weight's shape [out, in].</summary>
    long[] Shape { get; }
    /// <summary>The full weight [out, in] in <paramref name="dtype"/> on the weight's device.</summary>
    Tensor Dequantize(ScalarType dtype);
}

/// <summary>A trainable add-on to a linear layer (LoRA): y = base(x) + Forward(x).</summary>
public interface ILinearAdapter : IDisposable
{
    /// <summary>Training mode (dropout on); set through <see cref="Module.Train"/>.</summary>
    bool Training { get; set; }
    /// <summary>The adapter's contribution for input x [.., in] → [.., out], in the adapter's dtype (added to the base output).</summary>
    Tensor Forward(Tensor x);
}

/// <summary>y = x Wᵀ + b, like torch.nn.Linear; the base weight is either a plain tensor or quantized.</summary>
public sealed class Linear : Module
{
    /// <summary>The base weight [out, in]; null once replaced by <see cref="Quantized"/>.</summary>
    public Tensor? Weight;
    /// <summary>The bias [out], or null.</summary>
    public Tensor? Bias;
    /// <summary>The compressed base weight; replaces <see cref="Weight"/> when set.</summary>
    public IQuantizedWeight? Quantized;
    /// <summary>LoRA, when healing.</summary>
    public ILinearAdapter? Adapter;

    /// <summary>A linear over given tensors (views are kept, not copied).</summary>
    public Linear(Tensor weight, Tensor? bias)
    {
        Weight = weight;
        Bias = bias;
    }

    /// <summary>
    /// "weight" [out, in] and "bias" [out] from <paramref name="w"/>; the bias must exist when <paramref name="biasRequired"/>,
    /// otherwise it is read when the checkpoint has one.
    /// </summary>
    public Linear(Weights w, long outFeatures, long inFeatures, bool biasRequired)
    {
        Weight = w.Required("weight", outFeatures, inFeatures);
        Bias = biasRequired ? w.Required("bias", outFeatures) : w.Optional("bias", [outFeatures]);
    }

    /// <summary>Output features (rows of the weight).</summary>
    public long OutFeatures => Weight?.shape[0] ?? Quantized!.Shape[0];
    /// <summary>Input features (columns of the weight).</summary>
    public long InFeatures => Weight?.shape[1] ?? Quantized!.Shape[1];

    /// <summary>x [.., in] → [.., out].</summary>
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
        else if (Gemv.Applies(x, Weight!, Bias)) y = Gemv.Forward(x, Weight!, Bias);  // batch-1 decode: at the memory limit
        else if (Sgemm.Applies(x, Weight!, Bias)) y = Sgemm.Forward(x, Weight!, Bias);  // fp32 prefill: faster than libtorch's
        else y = nn.functional.linear(x, Weight!, Bias);
        if (Adapter is null) return y;
        // PEFT: result + delta in the promoted dtype (fp32 for an fp32 adapter), then .to(result dtype): one rounding.
        using var delta = Adapter.Forward(x);
        return y.add_(delta);
    }

    /// <inheritdoc/>
    protected override IEnumerable<(string Name, Tensor Tensor)> OwnTensors()
    {
        if (Weight is not null) yield return ("weight", Weight);
        if (Bias is not null) yield return ("bias", Bias);
    }

    /// <inheritdoc/>
    protected override void OnTrainingChanged(bool on)
    {
        if (Adapter is not null) Adapter.Training = on;
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        base.Dispose();
        Quantized?.Dispose();
        Adapter?.Dispose();
    }
}
