using System.Runtime.InteropServices;
using LLama;
using LLama.Native;

namespace LayerPrune.Fuzz;

/// <summary>
/// GGUF seeds written by llama.cpp's own code: llama_model_quantize (LLamaSharp.Backend.Cpu 0.30.0) of one of our f32 exports.
/// Every tensor byte, the header layout, alignment, key order, general.file_type and general.quantization_version are
/// llama.cpp's. There is no network here to fetch a file written by convert_hf_to_gguf.py (tests/fixtures/gguf-input/README.md).
/// </summary>
static class LlamaCppSeeds
{
    static readonly object Gate = new();
    static bool _loaded;

    /// <summary>
    /// Quantizes <paramref name="f32"/> into <paramref name="output"/> as <paramref name="type"/>; tensors whose rows are not
    /// whole q8_0 blocks are kept f16 through llama.cpp's per-tensor overrides (llama-quantize --tensor-type).
    /// </summary>
    public static void Quantize(string f32, string output, LLamaFtype type, IReadOnlyList<string> f16Tensors)
    {
        lock (Gate)
        {
            if (!_loaded)
            {
                NativeLibraryConfig.All.WithLogCallback((_, message) =>
                {
                    if (Environment.GetEnvironmentVariable("LP_LLAMA_LOG") == "1") Console.Error.Write(message);
                });
                NativeApi.llama_empty_call(); // loads the native library
                _loaded = true;
            }
            const int EntrySize = 16; // llama_model_tensor_override { const char * pattern; enum ggml_type type; }
            var patterns = f16Tensors
                .Select(n => Marshal.StringToCoTaskMemUTF8($"^{System.Text.RegularExpressions.Regex.Escape(n)}$")).ToArray();
            var entries = Marshal.AllocHGlobal(EntrySize * (patterns.Length + 1));
            try
            {
                for (int i = 0; i <= patterns.Length; i++)
                {
                    Marshal.WriteIntPtr(entries + i * EntrySize, i < patterns.Length ? patterns[i] : IntPtr.Zero);
                    Marshal.WriteInt64(entries + i * EntrySize + 8, i < patterns.Length ? (long)GGMLType.GGML_TYPE_F16 : 0);
                }
                var p = LLamaModelQuantizeParams.Default();
                p.ftype = type;
                p.nthread = 1;
                p.quantize_output_tensor = true;
                p.tensor_types = patterns.Length > 0 ? entries : IntPtr.Zero;
                if (NativeApi.llama_model_quantize(f32, output, ref p) != 0)
                    throw new InvalidOperationException($"llama.cpp could not quantize {f32} to {type}");
            }
            finally
            {
                foreach (var ptr in patterns) Marshal.FreeCoTaskMem(ptr);
                Marshal.FreeHGlobal(entries);
            }
        }
    }
}
