using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>Where and in which precision the model runs: device auto|cpu|cuda|cuda:N, dtype auto|fp32|bf16|fp16.</summary>
public static class ComputeTarget
{
    const string NoCuda = "no CUDA device is available (this build uses the CPU libtorch; see docs/gpu.md)";

    /// <summary>
    /// auto: CUDA with bf16 when available; else the CPU with bf16 where it has native bf16 instructions (AVX512-BF16 or
    /// AMX: 2–3× faster than fp32 at half the memory) and fp32 elsewhere (bf16 is several times slower without them).
    /// </summary>
    public static (Device device, ScalarType dtype) Resolve(string device = "auto", string dtype = "auto")
    {
        bool cudaAvailable = cuda.is_available();
        Device d = device.ToLowerInvariant() switch
        {
            "auto" => cudaAvailable ? CUDA : CPU,
            "cpu" => CPU,
            "cuda" => cudaAvailable ? CUDA : throw LayerPruneException.Failed(nameof(device), "cuda", NoCuda),
            var s when s.StartsWith("cuda:") && cudaAvailable => new Device(s),
            _ => throw LayerPruneException.Invalid(nameof(device), device, "expected auto, cpu, cuda or cuda:N"),
        };
        ScalarType t = dtype.ToLowerInvariant() switch
        {
            "auto" => AutoDtype(d),
            "fp32" or "float32" => ScalarType.Float32,
            "bf16" or "bfloat16" => ScalarType.BFloat16,
            "fp16" or "float16" => ScalarType.Float16,
            _ => throw LayerPruneException.Invalid(nameof(dtype), dtype, "expected auto, fp32, bf16 or fp16"),
        };
        return (d, t);
    }

    /// <summary>The dtype <c>auto</c> picks on <paramref name="device"/> (see <see cref="Resolve"/>).</summary>
    public static ScalarType AutoDtype(Device device) =>
        device.type == TorchSharp.DeviceType.CUDA || Planning.CpuFeatures.NativeBf16 ? ScalarType.BFloat16 : ScalarType.Float32;

    /// <summary>"fp32", "bf16" or "fp16", as the dtype flag and result files spell it.</summary>
    public static string Name(ScalarType dtype) => dtype switch
    {
        ScalarType.Float32 => "fp32",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        _ => dtype.ToString(),
    };
}
