using TorchSharp;
using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

static class HealingTestUtil
{
    /// <summary>Same shape, dtype and values (bitwise-equal for floats other than NaN).</summary>
    public static bool Same(Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape)) return false;
        using var eq = a.eq(b).all();
        return eq.item<bool>();
    }

    /// <summary>Every tensor of a safetensors file, as fp32 copies.</summary>
    public static Dictionary<string, Tensor> ReadAll(string file)
    {
        using var f = SafeTensorsFile.Open(file);
        return f.Tensors.Keys.ToDictionary(k => k, k => { using var t = f.Load(k); return t.to(ScalarType.Float32).clone(); });
    }

    /// <summary>The largest |a − b| over tensors of the same names (asserts that both hold the same names).</summary>
    public static double MaxDiff(Dictionary<string, Tensor> a, Dictionary<string, Tensor> b)
    {
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        return a.Keys.Max(k => { using var d = (a[k] - b[k]).abs().max(); return d.ToDouble(); });
    }
}
