using System.Collections.Concurrent;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// Small constant lookup tables (NF4 pair values, the dynamic 8-bit map) kept on each accelerator once they are first
/// asked for there: built per call they cost a host-to-device copy for every dequantization, i.e. per matmul per layer.
/// On the CPU a fresh tensor is as cheap as a lookup and is returned as before (owned by the caller's dispose scope).
/// </summary>
static class DeviceTables
{
    static readonly ConcurrentDictionary<(string Name, string Device), Tensor> Cached = new();

    /// <summary><paramref name="values"/> as an fp32 tensor of <paramref name="shape"/> on <paramref name="device"/>.</summary>
    public static Tensor Get(string name, float[] values, long[] shape, Device device)
    {
        if (device.type == TorchSharp.DeviceType.CPU)
            return tensor(values, shape);
        return Cached.GetOrAdd((name, device.ToString()), _ => tensor(values, shape, device: device).DetachFromDisposeScope());
    }
}
