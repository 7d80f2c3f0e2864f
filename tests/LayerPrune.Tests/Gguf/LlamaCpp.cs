using LLama;
using LLama.Common;
using System.Runtime.InteropServices;
using LLama.Native;

namespace LayerPrune.Tests.Gguf;

/// <summary>llama.cpp (through LLamaSharp 0.30.0, CPU backend) as the independent reference for exported GGUF files.</summary>
public static class LlamaCpp
{
    static readonly object Gate = new();
    static bool _initialized;
    static System.Text.StringBuilder? _capture; // llama.cpp's log while a call holds Gate and captures it

    /// <summary>Loads the native library once, with llama.cpp's logging silenced (LP_LLAMA_LOG=1 shows it).</summary>
    public static void Init()
    {
        lock (Gate)
        {
            if (_initialized) return;
            NativeLibraryConfig.All.WithLogCallback((level, message) =>
            {
                _capture?.Append(message);
                if (Environment.GetEnvironmentVariable("LP_LLAMA_LOG") == "1") Console.Write(message); // every tensor load otherwise
            });
            NativeApi.llama_empty_call(); // loads the native library (LLamaQuantizer alone does not)
            _initialized = true;
        }
    }

    /// <summary>
    /// Greedy decoding with llama.cpp: the prompt in one batch, then one token per step. Returns the new token ids and
    /// the logits llama.cpp computed at the prompt's last position.
    /// </summary>
    public static (int[] Tokens, float[] PromptLogits) Greedy(string gguf, IReadOnlyList<int> prompt, int newTokens)
    {
        Init();
        // f32 KV cache (llama.cpp's default is f16) and no flash attention: llama.cpp computes in f32 throughout.
        var p = new ModelParams(gguf)
        {
            ContextSize = 256, BatchSize = 256, GpuLayerCount = 0, Threads = 1, BatchThreads = 1,
            TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32,
            FlashAttention = false,
        };
        lock (Gate)
        {
            using var weights = LLamaWeights.LoadFromFile(p);
            using var ctx = weights.CreateContext(p);
            var batch = new LLamaBatch();
            for (int i = 0; i < prompt.Count; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
            Decode(ctx, batch);
            float[] first = ctx.NativeHandle.GetLogitsIth(batch.TokenCount - 1).ToArray();
            float[] logits = first;
            var tokens = new List<int>();
            for (int step = 0; step < newTokens; step++)
            {
                int next = ArgMax(logits);
                tokens.Add(next);
                if (step == newTokens - 1) break;
                batch.Clear();
                batch.Add((LLamaToken)next, prompt.Count + step, LLamaSeqId.Zero, true);
                Decode(ctx, batch);
                logits = ctx.NativeHandle.GetLogitsIth(0).ToArray();
            }
            return (tokens.ToArray(), first);
        }
    }

    /// <summary>llama.cpp's own quantization (llama_model_quantize) of <paramref name="input"/>.</summary>
    public static void Quantize(string input, string output, LLamaFtype type)
    {
        Init();
        lock (Gate)
        {
            if (!LLamaQuantizer.Quantize(input, output, type, nthread: 1, allowRequantize: false, quantizeOutputTensor: true))
                throw new InvalidOperationException($"llama.cpp failed to quantize {input}");
        }
    }

    /// <summary>
    /// llama.cpp's own quantization with per-tensor type overrides, as `llama-quantize --tensor-type PATTERN=TYPE` passes
    /// them (llama_model_quantize_params.tt_overrides, which LLamaSharp 0.30.0 calls tensor_types): an array of
    /// llama_model_tensor_override {const char * pattern; enum ggml_type type;} ended by a null pattern; a pattern is a
    /// regular expression searched in the tensor name. Returns false where llama.cpp refuses.
    /// </summary>
    public static bool Quantize(string input, string output, LLamaFtype type, IReadOnlyList<(string Pattern, GGMLType Type)> overrides)
    {
        Init();
        const int EntrySize = 16;
        var patterns = overrides.Select(o => Marshal.StringToCoTaskMemUTF8(o.Pattern)).ToArray();
        var entries = Marshal.AllocHGlobal(EntrySize * (overrides.Count + 1));
        try
        {
            for (int i = 0; i <= overrides.Count; i++)
            {
                Marshal.WriteIntPtr(entries + i * EntrySize, i < overrides.Count ? patterns[i] : IntPtr.Zero);
                Marshal.WriteInt64(entries + i * EntrySize + 8, i < overrides.Count ? (long)overrides[i].Type : 0);
            }
            var p = LLamaModelQuantizeParams.Default();
            p.ftype = type;
            p.nthread = 1;
            p.quantize_output_tensor = true;
            p.tensor_types = overrides.Count > 0 ? entries : IntPtr.Zero;
            lock (Gate) return NativeApi.llama_model_quantize(input, output, ref p) == 0;
        }
        finally
        {
            foreach (var ptr in patterns) Marshal.FreeCoTaskMem(ptr);
            Marshal.FreeHGlobal(entries);
        }
    }

    /// <summary>llama.cpp's tokenization of <paramref name="text"/> (<paramref name="special"/>: parse special-token text) with the GGUF's vocabulary.</summary>
    public static int[] Tokenize(string gguf, string text, bool addBos, bool special = false, bool vocabOnly = false)
    {
        Init();
        var p = new ModelParams(gguf) { ContextSize = 64, GpuLayerCount = 0, VocabOnly = vocabOnly };
        lock (Gate)
        {
            using var weights = LLamaWeights.LoadFromFile(p);
            return weights.Tokenize(text, addBos, special, System.Text.Encoding.UTF8).Select(t => (int)t).ToArray();
        }
    }

    /// <summary>
    /// Loads <paramref name="gguf"/> and returns llama.cpp's sliding window for it (llama_model_n_swa: 0 = full
    /// attention), with llama.cpp's log of the load in <paramref name="log"/> (also when loading fails).
    /// </summary>
    public static int SlidingWindow(string gguf, out string log)
    {
        Init();
        var p = new ModelParams(gguf) { ContextSize = 64, GpuLayerCount = 0 };
        lock (Gate)
        {
            _capture = new System.Text.StringBuilder();
            try
            {
                using var weights = LLamaWeights.LoadFromFile(p);
                return (int)weights.NativeHandle.SWACount;
            }
            finally
            {
                log = _capture.ToString();
                _capture = null;
            }
        }
    }

    static void Decode(LLamaContext ctx, LLamaBatch batch)
    {
        var r = ctx.NativeHandle.Decode(batch);
        if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed: {r}");
    }

    static int ArgMax(float[] x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
