using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>Where and in which precision the model runs: device auto|cpu|cuda|cuda:N, dtype auto|fp32|bf16|fp16.</summary>
public static class ComputeTarget
{
    const string NoCuda = "no CUDA device is available (this build uses the CPU libtorch; see docs/gpu.md)";

    /// <summary>auto: CUDA with bf16 when available, else CPU with fp32 (bf16 matmul is slow on CPUs without AVX512-BF16).</summary>
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
            "auto" => d.type == TorchSharp.DeviceType.CUDA ? ScalarType.BFloat16 : ScalarType.Float32,
            "fp32" or "float32" => ScalarType.Float32,
            "bf16" or "bfloat16" => ScalarType.BFloat16,
            "fp16" or "float16" => ScalarType.Float16,
            _ => throw LayerPruneException.Invalid(nameof(dtype), dtype, "expected auto, fp32, bf16 or fp16"),
        };
        return (d, t);
    }
}
