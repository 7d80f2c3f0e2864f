using LLama;
using LLama.Common;
using LLama.Native;

namespace LayerPrune.Tests.Gguf;

/// <summary>llama.cpp (through LLamaSharp 0.30.0, CPU backend) as the independent reference for exported GGUF files.</summary>
public static class LlamaCpp
{
    static readonly object Gate = new();
    static bool _initialized;

    /// <summary>Loads the native library once, with llama.cpp's logging silenced (LP_LLAMA_LOG=1 shows it).</summary>
    public static void Init()
    {
        lock (Gate)
        {
            if (_initialized) return;
            NativeLibraryConfig.All.WithLogCallback((level, message) => { if (Environment.GetEnvironmentVariable("LP_LLAMA_LOG") == "1") Console.Write(message); }); // llama.cpp logs every tensor load otherwise
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
