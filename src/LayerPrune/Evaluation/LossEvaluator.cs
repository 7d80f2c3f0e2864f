using LayerPrune.Modeling;
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
/// </summary>
public static class LossEvaluator
{
    /// <summary>The mean loss of <paramref name="chunks"/> (equal-length sequences), running only
    /// <paramref name="layers"/> when given.</summary>
    public static LossResult Evaluate(CausalLM model, IReadOnlyList<int[]> chunks, int batchSize = 8, IReadOnlyList<int>? layers = null,
        Action<int>? onChunksDone = null)
    {
        if (chunks.Count == 0) throw new LayerPruneException("loss: no chunks (the data is shorter than one sequence)");
        double total = 0;
        long count = 0;
        using var _ = no_grad();
        foreach (var batch in chunks.Chunk(Math.Max(1, batchSize)))
        {
            using var mean = MeanLoss(model, batch, layers);
            long predictions = batch.Length * (long)(batch[0].Length - 1);
            total += mean.to(ScalarType.Float64).item<double>() * predictions;
            count += predictions;
            onChunksDone?.Invoke(batch.Length);
        }
        return new LossResult(total / count, count, chunks.Count);
    }

    /// <summary>Mean next-token cross-entropy of equal-length sequences (log_softmax in fp32); differentiable (healing uses it).</summary>
    public static Tensor MeanLoss(CausalLM model, IReadOnlyList<int[]> sequences, IReadOnlyList<int>? layers = null)
    {
        using var scope = NewDisposeScope();
        int T = sequences[0].Length;
        if (sequences.Any(c => c.Length != T)) throw new ArgumentException("loss sequences must have equal length");
        var ids = tensor(sequences.SelectMany(c => c.Select(x => (long)x)).ToArray(), [sequences.Count, T]);
        var logits = model.Forward(ids, options: new ForwardOptions { Layers = layers });         // [B, T, V]
        var logp = logits.narrow(1, 0, T - 1).to(ScalarType.Float32).log_softmax(-1);             // predicts tokens 1..T−1
        var targets = ids.narrow(1, 1, T - 1).to(logp.device).unsqueeze(-1);
        return (-logp.gather(2, targets).mean()).MoveToOuterDisposeScope();
    }
}
