using LayerPrune.Modeling;
using LayerPrune.Planning;
using static TorchSharp.torch;

namespace LayerPrune.Evaluation;

/// <summary>Mean next-token loss over <paramref name="Tokens"/> predictions of <paramref name="Chunks"/> chunks.</summary>
public sealed record LossResult(double ValidationLoss, long Tokens, int Chunks)
{
    /// <summary>exp(loss).</summary>
    public double Perplexity => Math.Exp(ValidationLoss);
}

/// <summary>
/// Mean next-token cross-entropy over fixed-length chunks, each an independent sequence (positions 0..T−1, causal):
/// the loss averages all Σ (T−1) predictions (the protocol of tests/fixtures/reference/kjv-llama-16l.json).
/// An offloaded model is run layer-major over groups of batches (each layer read from the checkpoint once per group);
/// the numbers are those of the resident model.
/// </summary>
public static class LossEvaluator
{
    /// <summary>The mean loss of <paramref name="chunks"/> (equal-length sequences), running only
    /// <paramref name="layers"/> when given.</summary>
    public static LossResult Evaluate(CausalLM model, IReadOnlyList<int[]> chunks, int batchSize = 8, IReadOnlyList<int>? layers = null,
        Action<int>? onChunksDone = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (chunks.Count == 0) throw new LayerPruneException("loss: no chunks (the data is shorter than one sequence)");
        int T = chunks[0].Length;
        if (chunks.Any(c => c.Length != T)) throw new ArgumentException("loss sequences must have equal length");
        double total = 0;
        long count = 0;
        using var _ = no_grad();
        var batches = chunks.Chunk(Math.Max(1, batchSize)).ToList();
        void Add(Tensor mean, int sequences)
        {
            long predictions = sequences * (long)(T - 1);
            total += mean.to(ScalarType.Float64).item<double>() * predictions;
            count += predictions;
            onChunksDone?.Invoke(sequences);
        }
        if (!model.Offloaded)
        {
            foreach (var batch in batches)
                using (var mean = MeanLoss(model, batch, layers))
                    Add(mean, batch.Length);
            return new LossResult(total / count, count, chunks.Count);
        }
        long bytesPerSequence = T * (long)model.Config.HiddenSize * ElementSize(model.Dtype);
        int perGroup = (int)Math.Clamp(MemoryPlanner.StreamGroupBytes / Math.Max(1, bytesPerSequence * batchSize), 1, batches.Count);
        foreach (var group in batches.Chunk(perGroup))
        {
            using var scope = NewDisposeScope();
            var ids = group.Select(Ids).ToList();
            var hidden = StreamHidden(model, ids, layers);
            for (int b = 0; b < group.Length; b++)
                Add(MeanLossOfHidden(model, hidden[b], ids[b]), group[b].Length);
        }
        return new LossResult(total / count, count, chunks.Count);
    }

    /// <summary>Mean next-token cross-entropy of equal-length sequences (log_softmax in fp32); differentiable (healing uses it).</summary>
    public static Tensor MeanLoss(CausalLM model, IReadOnlyList<int[]> sequences, IReadOnlyList<int>? layers = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var scope = NewDisposeScope();
        int T = sequences[0].Length;
        if (sequences.Any(c => c.Length != T)) throw new ArgumentException("loss sequences must have equal length");
        var ids = Ids(sequences);
        var hidden = model.Forward(ids, options: new ForwardOptions { Layers = layers, HiddenOnly = true });   // [B, T, H]
        return MeanLossOfHidden(model, hidden, ids).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean next-token cross-entropy from the last residual stream hidden [B, T, H] of ids [B, T]: positions 0..T−2 predict
    /// tokens 1..T−1, through the final norm and lm_head in chunks of positions (<see cref="TokenLogProbs"/>).
    /// </summary>
    public static Tensor MeanLossOfHidden(CausalLM model, Tensor hidden, Tensor ids)
    {
        using var scope = NewDisposeScope();
        long T = ids.shape[1];
        var h = hidden.narrow(1, 0, T - 1).reshape(-1, hidden.shape[2]);   // [B·(T−1), H]
        var targets = ids.narrow(1, 1, T - 1).reshape(-1);                  // [B·(T−1)]
        return (-TokenLogProbs.Gather(model, h, targets).mean()).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The last residual streams [B, T, H] of several unpadded batches, run layer-major: each layer (streamed from the
    /// checkpoint when the model is offloaded) is applied to every batch before the next layer is read.
    /// </summary>
    internal static List<Tensor> StreamHidden(CausalLM model, List<Tensor> ids, IReadOnlyList<int>? layers)
    {
        var atts = ids.Select(x => model.PrepareAttention(x.shape[0], x.shape[1], 0, null)).ToList();
        var hidden = ids.Select(model.Embed).ToList();
        try
        {
            model.ForEachLayer(layers, (k, layer) =>
            {
                for (int b = 0; b < hidden.Count; b++)
                {
                    var next = layer.Forward(hidden[b], atts[b], null, k);
                    hidden[b].Dispose();
                    hidden[b] = next;
                }
            });
        }
        finally
        {
            foreach (var a in atts) a.Dispose();
        }
        return hidden;
    }

    static Tensor Ids(IReadOnlyList<int[]> sequences) =>
        tensor(sequences.SelectMany(c => c.Select(x => (long)x)).ToArray(), [sequences.Count, sequences[0].Length]);

    static long ElementSize(ScalarType t) => t switch
    {
        ScalarType.Float64 => 8,
        ScalarType.Float32 => 4,
        _ => 2,
    };
}
