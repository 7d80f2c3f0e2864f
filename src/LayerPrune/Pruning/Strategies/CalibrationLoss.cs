using System.Diagnostics;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Reporting;
using static TorchSharp.torch;

namespace LayerPrune.Pruning.Strategies;

/// <summary>
/// Mean next-token cross-entropy of equal-length calibration chunks with a subset of layers run (the others skipped in
/// memory, no checkpoint written), counting what every evaluation costs. The loss is <see cref="LossEvaluator"/>'s, so
/// it equals what evaluation reports for the pruned checkpoint.
/// <see cref="LossWithout"/> reuses prefixes: the residual states entering every layer of the current order are kept,
/// so skipping the layer at position k runs only the layers after it (bit-identical to a full forward).
/// </summary>
public sealed class CalibrationLoss(CausalLM model, IReadOnlyList<int[]> chunks, int batchSize = 8, bool reusePrefix = true) : IDisposable
{
    /// <summary>Largest prefix cache (residual states of every chunk at every position) kept, in bytes.</summary>
    public const long MaxPrefixBytes = 4L << 30;

    readonly Stopwatch _clock = new();
    readonly List<int[][]> _batches = chunks.Chunk(Math.Max(1, batchSize)).ToList();
    long _passes, _layerForwards, _tokens;
    int[]? _cachedOrder;
    List<(Tensor ids, AttentionInputs att, Tensor[] states)>? _cache; // per batch: ids [B, T], states[k] [B, T, H] entering position k

    /// <summary>The model whose layers are evaluated.</summary>
    public CausalLM Model => model;

    /// <summary>Number of calibration chunks.</summary>
    public int Chunks => chunks.Count;

    /// <summary>Loss with only <paramref name="layers"/> (original 0-based indices, in order) run.</summary>
    public double Loss(IReadOnlyList<int> layers)
    {
        _clock.Start();
        try
        {
            var r = LossEvaluator.Evaluate(model, chunks, batchSize, layers);
            Count(chunks.Count, (long)chunks.Count * layers.Count);
            return r.ValidationLoss;
        }
        finally { _clock.Stop(); }
    }

    /// <summary>Loss of <paramref name="order"/> with its layer at <paramref name="position"/> skipped (equal to
    /// <see cref="Loss"/> of that order; computed from the cached prefix when reuse is on and the cache fits).</summary>
    public double LossWithout(IReadOnlyList<int> order, int position)
    {
        if (position < 0 || position >= order.Count) throw new ArgumentOutOfRangeException(nameof(position));
        if (!PrefixFits(order.Count)) return Loss(order.Where((_, k) => k != position).ToList());
        _clock.Start();
        try
        {
            using var _ = no_grad();
            EnsurePrefix(order);
            double total = 0;
            long count = 0;
            foreach (var (ids, att, states) in _cache!)
            {
                using var scope = NewDisposeScope();
                var h = states[position];
                for (int k = position + 1; k < order.Count; k++) h = model.Layer(order[k]).Forward(h, att, null, k - 1);
                var (sum, predictions) = NextTokenLossSum(model, h, ids);
                total += sum;
                count += predictions;
            }
            Count(chunks.Count, (long)chunks.Count * (order.Count - 1 - position));
            return total / count;
        }
        finally { _clock.Stop(); }
    }

    bool PrefixFits(int positions)
    {
        if (!reusePrefix || model.Offloaded || chunks.Any(c => c.Length != chunks[0].Length)) return false;
        int elementSize = model.Dtype switch { ScalarType.Float64 => 8, ScalarType.Float32 => 4, _ => 2 };
        long bytes = (long)positions * chunks.Sum(c => (long)c.Length) * model.Config.HiddenSize * elementSize;
        return bytes <= MaxPrefixBytes;
    }

    /// <summary>Runs <paramref name="order"/> once over all chunks and keeps the states entering each position.</summary>
    void EnsurePrefix(IReadOnlyList<int> order)
    {
        if (_cachedOrder is not null && _cachedOrder.SequenceEqual(order)) return;
        DropCache();
        _cache = new();
        foreach (var batch in _batches)
        {
            int T = batch[0].Length;
            // Detached from any caller's dispose scope: the cache lives until the order changes or Dispose.
            var ids = tensor(batch.SelectMany(c => c.Select(x => (long)x)).ToArray(), [batch.Length, T]).to(model.Device)
                .DetachFromDisposeScope();
            var att = model.PrepareAttention(batch.Length, T, 0, null);
            att.Cos.DetachFromDisposeScope();
            att.SinSigned.DetachFromDisposeScope();
            att.FullMask?.DetachFromDisposeScope();
            foreach (var m in att.SlidingMasks.Values) m.DetachFromDisposeScope();
            var states = new Tensor[order.Count];
            var h = model.Embed(ids).DetachFromDisposeScope();
            for (int k = 0; k < order.Count; k++)
            {
                states[k] = h;
                if (k + 1 < order.Count) h = model.Layer(order[k]).Forward(h, att, null, k).DetachFromDisposeScope();
            }
            _cache.Add((ids, att, states));
        }
        _cachedOrder = order.ToArray();
        Count(0, (long)chunks.Count * (order.Count - 1));
    }

    void Count(long passes, long layerForwards)
    {
        _passes += passes;
        _layerForwards += layerForwards;
        if (passes > 0) _tokens += chunks.Sum(c => (long)c.Length);
    }

    void DropCache()
    {
        foreach (var (ids, att, states) in _cache ?? [])
        {
            ids.Dispose();
            att.Dispose();
            foreach (var s in states) s.Dispose();
        }
        _cache = null;
        _cachedOrder = null;
    }

    /// <summary>Everything evaluated so far (prefix passes counted in layer forwards).</summary>
    public SelectionCost Cost => new(_passes, _layerForwards, _tokens, _clock.Elapsed.TotalSeconds);

    /// <summary>
    /// Summed next-token cross-entropy of a batch from its last hidden states <paramref name="h"/> [B, T, H] (the head
    /// applied here), and the number of predictions it sums: the mean over B·(T−1) positions, times their count.
    /// </summary>
    internal static (double Sum, long Predictions) NextTokenLossSum(CausalLM model, Tensor h, Tensor ids)
    {
        var logits = model.Head(h);                                                              // [B, T, V]
        long T = ids.shape[1];
        var logp = logits.narrow(1, 0, T - 1).to(ScalarType.Float32).log_softmax(-1);
        var targets = ids.narrow(1, 1, T - 1).to(logp.device).unsqueeze(-1);
        var mean = -logp.gather(2, targets).mean();
        long predictions = ids.shape[0] * (T - 1);
        return (mean.to(ScalarType.Float64).item<double>() * predictions, predictions);
    }

    /// <summary>A progress reporter on <paramref name="sink"/> (nothing when null).</summary>
    internal static ProgressReporter Progress(string label, long total, IProgressSink? sink) =>
        ProgressReporter.Start(label, total, "evaluations", sink ?? NullProgressSink.Instance, clock: null);

    /// <summary>Frees the prefix cache.</summary>
    public void Dispose() => DropCache();
}
