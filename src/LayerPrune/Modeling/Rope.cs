using LayerPrune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>Rotary position embedding as HF's modeling_rope_utils.py + LlamaRotaryEmbedding (rotate_half layout).</summary>
public sealed class Rope : IDisposable
{
    public int RotaryDim { get; }
    readonly Tensor _invFreq; // [RotaryDim/2] fp32
    readonly double _positionScale;

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

    /// <summary>cos, sin of shape [B, T, RotaryDim] for integer positions [B, T]; fp32 math, result in <paramref name="dtype"/>.</summary>
    public (Tensor cos, Tensor sin) CosSin(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var pos = positions.to(ScalarType.Float32);
        if (_positionScale != 1.0) pos = pos * _positionScale;
        var freqs = pos.unsqueeze(-1) * _invFreq;       // [B, T, dim/2]
        var emb = cat([freqs, freqs], -1);               // [B, T, dim]
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    /// <summary>x·cos + rotate_half(x)·sin on the first RotaryDim features of x [B, heads, T, headDim]; cos/sin [B, T, RotaryDim].</summary>
    public Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var c = cos.unsqueeze(1);
        using var s = sin.unsqueeze(1);
        long headDim = x.shape[^1];
        if (RotaryDim == headDim) return x * c + RotateHalf(x) * s;
        using var rot = x.narrow(-1, 0, RotaryDim);
        using var pass = x.narrow(-1, RotaryDim, headDim - RotaryDim);
        using var rotated = rot * c + RotateHalf(rot) * s;
        return cat([rotated, pass], -1);
    }

    static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[^1] / 2;
        using var x1 = x.narrow(-1, 0, half);
        using var x2 = x.narrow(-1, half, half);
        using var neg = -x2;
        return cat([neg, x1], -1);
    }

    public void Dispose() => _invFreq.Dispose();
}
