using LayerPrune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>Rotary position embedding as HF's modeling_rope_utils.py + LlamaRotaryEmbedding (rotate_half layout).</summary>
public sealed class Rope : IDisposable
{
    /// <summary>Dimensions rotated per head (head_dim × partial_rotary_factor).</summary>
    public int RotaryDim { get; }
    readonly Tensor _invFreq; // [RotaryDim/2] fp32
    readonly double _positionScale;

    /// <summary>Inverse frequencies of <paramref name="s"/> for heads of <paramref name="headDim"/>, on
    /// <paramref name="device"/>.</summary>
    public Rope(RopeSettings s, int headDim, Device device)
    {
        RotaryDim = (int)(headDim * s.PartialRotaryFactor);
        // inv_freq = 1 / theta^(arange(0, dim, 2) / dim), computed in fp32 like HF (_compute_default_rope_parameters).
        using var exponents = arange(0, RotaryDim, 2, dtype: ScalarType.Int64).to(ScalarType.Float32) / RotaryDim;
        var invFreq = 1.0f / pow(tensor((float)s.Theta), exponents);
        if (s.Type == "llama3")
        {
            // _compute_llama3_parameters: long wavelengths scaled by 1/factor, short ones kept, smooth blend between.
            double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor, highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
            var wavelen = 2 * Math.PI / invFreq;
            var scaled = where(wavelen > lowWavelen, invFreq / s.Factor, invFreq);
            var smooth = (s.OriginalMaxPositions / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
            var smoothed = (1 - smooth) * scaled / s.Factor + smooth * scaled;
            var isMedium = (wavelen >= highWavelen).logical_and(wavelen <= lowWavelen);
            invFreq = where(isMedium, smoothed, scaled);
        }
        _positionScale = s.Type == "linear" ? 1.0 / s.Factor : 1.0;
        _invFreq = invFreq.to(device);
    }

    /// <summary>
    /// cos and signed sin of shape [B, 1, T, RotaryDim] (broadcast over heads) for integer positions [B, T]; fp32 math, result
    /// in <paramref name="dtype"/>. HF: emb = cat(freqs, freqs); we return sinSigned = cat(−sin(freqs), sin(freqs)) so that
    /// rotate_half(x)·sin = roll(x, half)·sinSigned (one roll instead of narrow, neg and cat per call).
    /// </summary>
    public (Tensor cos, Tensor sinSigned) CosSin(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var pos = positions.to(ScalarType.Float32);
        if (_positionScale != 1.0) pos = pos * _positionScale;
        var freqs = (pos.unsqueeze(-1) * _invFreq).unsqueeze(1);   // [B, 1, T, dim/2]
        var cos = cat([freqs.cos(), freqs.cos()], -1);               // [B, 1, T, dim]
        var sin = freqs.sin();
        var sinSigned = cat([-sin, sin], -1);
        return (cos.to(dtype).MoveToOuterDisposeScope(), sinSigned.to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin on the first RotaryDim features of x [B, heads, T, headDim]
    /// (HF apply_rotary_pos_emb).</summary>
    public Tensor Apply(Tensor x, Tensor cos, Tensor sinSigned)
    {
        long headDim = x.shape[^1];
        if (RotaryDim == headDim) return Rotate(x, cos, sinSigned);
        using var rot = x.narrow(-1, 0, RotaryDim);
        using var pass = x.narrow(-1, RotaryDim, headDim - RotaryDim);
        using var rotated = Rotate(rot, cos, sinSigned);
        return cat([rotated, pass], -1);
    }

    static Tensor Rotate(Tensor x, Tensor cos, Tensor sinSigned)
    {
        using var swapped = x.roll(x.shape[^1] / 2, -1);   // cat(x2, x1)
        using var rotated = swapped * sinSigned;           // cat(−x2, x1) · sin
        var y = x * cos;
        return y.add_(rotated);
    }

    /// <summary>Releases the inverse frequencies.</summary>
    public void Dispose() => _invFreq.Dispose();
}
