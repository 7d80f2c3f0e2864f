using System.Diagnostics;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Reporting;

namespace LayerPrune.Pruning.Strategies;

/// <summary>
/// Mean next-token cross-entropy of equal-length calibration chunks with a subset of layers run (the others skipped in
/// memory, no checkpoint written), counting what every evaluation costs. The loss is <see cref="LossEvaluator"/>'s, so
/// it equals what evaluation reports for the pruned checkpoint.
/// </summary>
public sealed class CalibrationLoss(CausalLM model, IReadOnlyList<int[]> chunks, int batchSize = 8)
{
    readonly Stopwatch _clock = new();
    long _passes, _layerForwards, _tokens;

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
            _passes += chunks.Count;
            _layerForwards += (long)chunks.Count * layers.Count;
            _tokens += chunks.Sum(c => (long)c.Length);
            return r.ValidationLoss;
        }
        finally { _clock.Stop(); }
    }

    /// <summary>Everything evaluated so far.</summary>
    public SelectionCost Cost => new(_passes, _layerForwards, _tokens, _clock.Elapsed.TotalSeconds);

    /// <summary>A progress reporter on <paramref name="sink"/> (nothing when null).</summary>
    internal static ProgressReporter Progress(string label, long total, IProgressSink? sink) =>
        ProgressReporter.Start(label, total, "evaluations", sink ?? NullProgressSink.Instance, clock: null);
}
