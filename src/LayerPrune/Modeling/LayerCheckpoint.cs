using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace LayerPrune.Modeling;

/// <summary>
/// Activation checkpointing per decoder layer (HF <c>gradient_checkpointing_enable()</c>; torch.utils.checkpoint with
/// use_reentrant=True): the forward pass runs the layer without building a graph and keeps only the layer's input; the
/// backward pass runs the layer's forward again with grad and back-propagates through it. Training memory is then one
/// residual stream per layer plus one layer's activations, instead of every layer's activations.
/// </summary>
public sealed class GradientCheckpointing
{
    /// <summary>
    /// Generators whose state is restored before the recompute (torch.utils.checkpoint preserve_rng_state), so
    /// dropout drawn from them gives the same masks in the recompute as in the forward pass.
    /// </summary>
    public IReadOnlyList<Generator> PreservedGenerators { get; init; } = [];

    /// <summary>
    /// Keep the outputs of a layer's frozen (quantized) matmuls whose in_features / out_features is at least this from its
    /// no-grad forward, and replay them in the recompute instead of multiplying again (0: every one; null: none). With all
    /// of them replayed the recompute runs only the cheap parts (norms, attention, activations, LoRA): the same gradients,
    /// about a sixth less work per step, for B·T·out_features values per replayed projection until the layer's backward. A
    /// projection costs in·out per token and keeps out values, so a higher ratio saves more work per value kept.
    /// </summary>
    public double? ReplayFanRatio { get; init; }

    /// <summary>Whether a replay at <paramref name="ratio"/> keeps a projection: in / out ≥ ratio.</summary>
    public static bool Replays(double ratio, long inFeatures, long outFeatures) => (double)inFeatures / outFeatures >= ratio;
}

/// <summary>A decoder layer that is materialized per use (read from the checkpoint) and released after it.</summary>
public interface IStreamedLayer
{
    /// <summary>The layer, ready to run (e.g. built from the checkpoint mapping, adapters attached).</summary>
    DecoderLayer Acquire();
    /// <summary>Frees what <see cref="Acquire"/> built (the adapters it attached stay alive).</summary>
    void Release(DecoderLayer layer);
}

/// <summary>
/// The autograd node of one checkpointed layer: y = layer(x), differentiable in x and in the layer's trainable
/// parameters (their gradients are accumulated by the backward pass through the recomputed graph, as the reentrant
/// torch.utils.checkpoint does).
/// </summary>
public sealed class LayerCheckpoint : SingleTensorFunction<LayerCheckpoint>
{
    [ThreadStatic]
    static int _recomputeDepth, _forwardDepth;

    /// <summary>The name autograd shows for this node.</summary>
    public override string Name => "LayerCheckpoint";

    /// <summary>
    /// True while a checkpointed layer is being recomputed for its backward pass: only that layer's graph is alive, so
    /// saving tensors for backward (e.g. a dequantized weight, see <see cref="QuantizedMatmul"/>) costs one layer.
    /// </summary>
    public static bool Recomputing => _recomputeDepth > 0;

    /// <summary>True while a checkpointed layer runs, in its no-grad forward pass or in its recompute.</summary>
    public static bool Active => _forwardDepth > 0 || _recomputeDepth > 0;

    /// <summary>x [B, T, H] → layer(x) [B, T, H] with the layer's activations recomputed in backward.</summary>
    public static Tensor Apply(DecoderLayer layer, Tensor x, AttentionInputs a, GradientCheckpointing settings) =>
        apply(x, new ResidentLayer(layer), a, settings);

    /// <summary>
    /// x [B, T, H] → layer(x) [B, T, H] for a layer that is not resident: <paramref name="layer"/> materializes it for the
    /// forward pass and again for the recompute in backward, and frees it after each (streamed heal: only the layer's
    /// input is kept between the two).
    /// </summary>
    public static Tensor Apply(IStreamedLayer layer, Tensor x, AttentionInputs a, GradientCheckpointing settings) =>
        apply(x, layer, a, settings);

    /// <inheritdoc/>
    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var layer = (IStreamedLayer)vars[1];
        var a = (AttentionInputs)vars[2];
        var settings = (GradientCheckpointing)vars[3];
        ctx.save_for_backward([x]);
        ctx.save_data("layer", layer);
        // The caller disposes its attention inputs after the forward call: keep handles of our own until backward.
        ctx.save_data("attention", Retain(a));
        ctx.save_data("settings", settings);
        ctx.save_data("rng", settings.PreservedGenerators.Select(g => g.get_state().DetachFromDisposeScope()).ToList());
        using (no_grad())
        {
            _forwardDepth++;
            if (settings.ReplayFanRatio is double ratio) QuantizedMatmul.BeginRecording(ratio);
            try { return Run(layer, l => l.Forward(x, a, null, 0)); }
            finally
            {
                _forwardDepth--;
                if (settings.ReplayFanRatio is not null) ctx.save_data("frozen outputs", QuantizedMatmul.EndRecording());
            }
        }
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var x = saved[0];
        var layer = (IStreamedLayer)ctx.get_data("layer");
        using var a = (AttentionInputs)ctx.get_data("attention");
        var settings = (GradientCheckpointing)ctx.get_data("settings");
        var forwardStates = (List<Tensor>)ctx.get_data("rng");
        var generators = settings.PreservedGenerators;
        // The generators continue from where the whole forward pass left them once this recompute is done.
        var current = generators.Select(g => g.get_state().DetachFromDisposeScope()).ToList();
        Tensor gradInput;
        try
        {
            for (int i = 0; i < generators.Count; i++)
                generators[i].set_state(forwardStates[i]);
            using var scope = NewDisposeScope();
            using var grad = enable_grad();
            if (_recomputeDepth++ == 0) QuantizedMatmul.BeginRecompute();
            var replayed = ctx.get_data("frozen outputs") as List<Tensor>;
            if (replayed is not null) QuantizedMatmul.BeginReplay(replayed, settings.ReplayFanRatio!.Value);
            try
            {
                var input = x.detach().requires_grad_(true);
                // The recomputed graph (and the layer's weights it saved) is freed before the layer is released.
                gradInput = Run(layer, l =>
                {
                    using var inner = NewDisposeScope();
                    var y = l.Forward(input, a, null, 0);
                    y.backward([gradOutput]);
                    return input.grad!.detach().MoveToOuterDisposeScope();
                }).MoveToOuterDisposeScope();
            }
            finally
            {
                _recomputeDepth--;
                if (replayed is not null)
                {
                    QuantizedMatmul.EndReplay();
                    foreach (var t in replayed) t.Dispose();
                    replayed.Clear();
                }
            }
        }
        finally
        {
            for (int i = 0; i < generators.Count; i++)
                generators[i].set_state(current[i]);
            foreach (var s in forwardStates.Concat(current).Concat(saved))
                s.Dispose();
        }
        // One entry per argument of apply: the layer, attention inputs and settings are not tensors.
        gradOutput.Dispose();   // our handle (BackwardHandles)
        return BackwardHandles.Returning([gradInput, null!, null!, null!]);
    }

    /// <summary>Runs <paramref name="body"/> on the materialized layer and releases it afterwards.</summary>
    static Tensor Run(IStreamedLayer source, Func<DecoderLayer, Tensor> body)
    {
        var layer = source.Acquire();
        try { return body(layer); }
        finally { source.Release(layer); }
    }

    /// <summary>A resident layer: acquired as is, never released.</summary>
    sealed class ResidentLayer(DecoderLayer layer) : IStreamedLayer
    {
        public DecoderLayer Acquire() => layer;
        public void Release(DecoderLayer l) { }
    }

    /// <summary>New handles to the same tensors, outside any dispose scope (released after the recompute).</summary>
    static AttentionInputs Retain(AttentionInputs a)
    {
        var kept = new AttentionInputs
        {
            Rope = a.Rope,
            Cos = a.Cos.alias().DetachFromDisposeScope(),
            SinSigned = a.SinSigned.alias().DetachFromDisposeScope(),
            FullMask = a.FullMask?.alias().DetachFromDisposeScope(),
            Skip = a.Skip,
        };
        foreach (var (window, mask) in a.SlidingMasks)
            kept.SlidingMasks[window] = mask.alias().DetachFromDisposeScope();
        return kept;
    }
}
