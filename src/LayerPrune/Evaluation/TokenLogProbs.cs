using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Evaluation;

/// <summary>
/// log P(target) of hidden states through the final norm and lm_head, chunked over positions: a chunk's logits and
/// log-softmax [rows, V] (fp32) are freed before the next chunk, so a 152K vocabulary never materializes [B, T, V].
/// </summary>
public static class TokenLogProbs
{
    /// <summary>Logit elements per chunk (2^25: 128 MB in fp32, e.g. 220 positions of a 152K vocabulary, 1048 of 32K).</summary>
    public const long ChunkElements = 1L << 25;

    /// <summary>Positions per chunk for a vocabulary of <paramref name="vocab"/> tokens (at least 1).</summary>
    public static long RowsPerChunk(long vocab) => Math.Max(1, ChunkElements / Math.Max(1, vocab));

    /// <summary>
    /// hidden [N, H] (the last residual stream, before the final norm), targets [N] (int64) → log P(target) [N] in fp32
    /// (log_softmax in fp32, as the unchunked path). Differentiable. <paramref name="rowsPerChunk"/> null: <see cref="RowsPerChunk"/>.
    /// </summary>
    public static Tensor Gather(CausalLM model, Tensor hidden, Tensor targets, long? rowsPerChunk = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        long n = hidden.shape[0];
        long step = Math.Max(1, rowsPerChunk ?? RowsPerChunk(model.Config.VocabSize));
        using var scope = NewDisposeScope();
        var index = targets.to(hidden.device).reshape(-1, 1);                           // [N, 1]
        var parts = new List<Tensor>();
        if (n == 0) return zeros(0, dtype: ScalarType.Float32, device: hidden.device).MoveToOuterDisposeScope();
        for (long start = 0; start < n; start += step)
        {
            long rows = Math.Min(step, n - start);
            using var chunkScope = NewDisposeScope();
            var h = hidden.narrow(0, start, rows).unsqueeze(0);                           // [1, rows, H]
            var logp = model.Head(h)[0].to(ScalarType.Float32).log_softmax(-1);          // [rows, V]
            var picked = logp.gather(1, index.narrow(0, start, rows)).squeeze(1);        // [rows]
            parts.Add(picked.MoveToOuterDisposeScope());
        }
        var all = parts.Count == 1 ? parts[0] : cat(parts, 0);
        return all.MoveToOuterDisposeScope();
    }

    /// <summary><see cref="Gather"/> (no gradient) plus, per row, whether the target is the argmax of the logits
    /// (greedy decoding would pick it; the first maximum wins, as torch.argmax).</summary>
    public static (Tensor LogProbs, Tensor IsMax) GatherWithGreedy(CausalLM model, Tensor hidden, Tensor targets)
    {
        ArgumentNullException.ThrowIfNull(model);
        long n = hidden.shape[0];
        long step = RowsPerChunk(model.Config.VocabSize);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var index = targets.to(hidden.device).reshape(-1, 1);
        if (n == 0)
            return (zeros(0, dtype: ScalarType.Float32).MoveToOuterDisposeScope(),
                zeros(0, dtype: ScalarType.Bool).MoveToOuterDisposeScope());
        var parts = new List<Tensor>();
        var maxes = new List<Tensor>();
        for (long start = 0; start < n; start += step)
        {
            long rows = Math.Min(step, n - start);
            using var chunkScope = NewDisposeScope();
            var logp = model.Head(hidden.narrow(0, start, rows).unsqueeze(0))[0].to(ScalarType.Float32).log_softmax(-1);
            var t = index.narrow(0, start, rows);
            parts.Add(logp.gather(1, t).squeeze(1).MoveToOuterDisposeScope());
            maxes.Add(logp.argmax(1).eq(t.squeeze(1)).MoveToOuterDisposeScope());
        }
        var a = parts.Count == 1 ? parts[0] : cat(parts, 0);
        var b = maxes.Count == 1 ? maxes[0] : cat(maxes, 0);
        return (a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope());
    }
}
