using System.Diagnostics;
using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>How <see cref="TextGenerator.Generate"/> continues a prompt.</summary>
public sealed class GenerationOptions
{
    /// <summary>Most tokens to generate.</summary>
    public int MaxNewTokens { get; init; } = 64;
    /// <summary>Argmax decoding; false samples with <see cref="Temperature"/> and <see cref="TopP"/>.</summary>
    public bool Greedy { get; init; } = true;
    /// <summary>Sampling temperature.</summary>
    public double Temperature { get; init; } = 1.0;
    /// <summary>Nucleus sampling mass (1 = off).</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>Seed of the sampler.</summary>
    public long Seed { get; init; } = 0;
    /// <summary>Stop at the model's EOS token.</summary>
    public bool StopAtEos { get; init; } = true;
    /// <summary>Run only these original layers (in-memory pruning); null = all.</summary>
    public IReadOnlyList<int>? Layers { get; init; }
    /// <summary>Stop when the decoded continuation would contain one of these (checked by the caller's callback).</summary>
    public Func<IReadOnlyList<int>, bool>? ShouldStop { get; init; }
}

/// <summary>A generation's tokens and timings.</summary>
/// <param name="TokenIds">Prompt and generated ids.</param>
/// <param name="PromptLength">Tokens of the prompt.</param>
/// <param name="NewTokens">Tokens generated.</param>
/// <param name="PrefillSeconds">Time of the prompt's forward pass.</param>
/// <param name="DecodeSeconds">Time of the decoding steps.</param>
/// <param name="DecodeCpuSeconds">CPU time of this process (all threads) during the decoding steps: on a shared machine the
/// wall time is an upper bound, the CPU time shows the work itself.</param>
public sealed record GenerationResult(int[] TokenIds, int PromptLength, int NewTokens, double PrefillSeconds, double DecodeSeconds,
    double DecodeCpuSeconds = 0)
{
    /// <summary>Decode throughput (tokens after the first per second).</summary>
    public double DecodeTokensPerSecond => NewTokens > 1 && DecodeSeconds > 0 ? (NewTokens - 1) / DecodeSeconds : 0;
    /// <summary>CPU seconds per decoded token (after the first); 0 when fewer than two tokens were generated.</summary>
    public double DecodeCpuSecondsPerToken => NewTokens > 1 ? DecodeCpuSeconds / (NewTokens - 1) : 0;
}

/// <summary>Autoregressive decoding with a KV cache: one prefill over the prompt, then one position per step.</summary>
public static class TextGenerator
{
    /// <summary>Continues <paramref name="prompt"/> with <paramref name="model"/> as <paramref name="o"/> says (KV-cached
    /// decoding).</summary>
    public static GenerationResult Generate(CausalLM model, IReadOnlyList<int> prompt, GenerationOptions o)
    {
        if (prompt.Count == 0) throw LayerPruneException.Invalid(nameof(prompt), null, "is empty: give at least one token id");
        var layers = o.Layers ?? Enumerable.Range(0, model.NumLayers).ToArray();
        using var cache = new KvCache(layers.Count);
        var forward = new ForwardOptions { Layers = layers, LastPositionOnly = true };
        var tokens = prompt.ToList();
        var eos = model.Config.EosTokenIds.ToHashSet();
        using var gen = new TorchSharp.torch.Generator((ulong)o.Seed);
        var sw = Stopwatch.StartNew();
        double prefill = 0;
        TimeSpan cpuAtDecode = TimeSpan.Zero;
        using (no_grad())
        {
            Tensor input = tensor(prompt.Select(x => (long)x).ToArray(), [1, prompt.Count]);
            for (int step = 0; step < o.MaxNewTokens; step++)
            {
                using var scope = NewDisposeScope();
                var logits = model.Forward(input, cache: cache, options: forward)[0, -1].to(ScalarType.Float32).cpu(); // [V]
                int next = o.Greedy || o.Temperature <= 0 ? (int)logits.argmax().item<long>() : Sample(logits, o, gen);
                if (step == 0)
                {
                    prefill = sw.Elapsed.TotalSeconds;
                    sw.Restart();
                    cpuAtDecode = Process.GetCurrentProcess().TotalProcessorTime;
                }
                tokens.Add(next);
                if ((o.StopAtEos && eos.Contains(next))
                    || (o.ShouldStop?.Invoke(tokens.GetRange(prompt.Count, tokens.Count - prompt.Count)) ?? false)) break;
                input = tensor(new long[] { next }, [1, 1]).DetachFromDisposeScope();
            }
        }
        double decode = sw.Elapsed.TotalSeconds;
        double decodeCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpuAtDecode).TotalSeconds;
        return new GenerationResult(tokens.ToArray(), prompt.Count, tokens.Count - prompt.Count, prefill, decode, decodeCpu);
    }

    /// <summary>Temperature, then nucleus (top-p) filtering: keep the smallest set of tokens whose probability reaches p.</summary>
    static int Sample(Tensor logits, GenerationOptions o, TorchSharp.torch.Generator gen)
    {
        using var scope = NewDisposeScope();
        var probs = (logits / o.Temperature).softmax(-1);
        if (o.TopP < 1.0)
        {
            var (sorted, idx) = probs.sort(descending: true);
            var cumBefore = sorted.cumsum(dim: 0) - sorted;
            var kept = sorted.masked_fill(cumBefore.ge(o.TopP), 0);
            probs = zeros_like(probs).scatter(0, idx, kept);
        }
        return (int)multinomial(probs / probs.sum(), 1, generator: gen).item<long>();
    }
}
