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
}
