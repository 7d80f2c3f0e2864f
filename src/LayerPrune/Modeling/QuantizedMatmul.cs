using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace LayerPrune.Modeling;

/// <summary>
/// y = x Wᵀ for a frozen quantized W that is dequantized in forward and again in backward, never saved for backward:
/// what bitsandbytes' 4-bit matmul (MatMul4Bit) does. Plain <c>linear(x, Dequantize())</c> would keep every layer's
/// dequantized weight alive until backward (a full-precision copy of the model during training).
/// Gradient only for x (W is frozen): dL/dx = dL/dy · W.
/// </summary>
public sealed class QuantizedMatmul : SingleTensorFunction<QuantizedMatmul>
{
    /// <summary>The name autograd shows for this node.</summary>
    public override string Name => "QuantizedMatmul";

    /// <summary>
    /// x [..., in] · Wᵀ → [..., out], differentiable in x. While a checkpointed layer is recomputed for backward
    /// (<see cref="LayerCheckpoint.Recomputing"/>) the dequantized weight is saved instead: only that layer's graph is
    /// alive, so it costs one layer's weights and saves the second dequantization in backward.
    /// </summary>
    public static Tensor Apply(Tensor x, IQuantizedWeight weight)
    {
        if (LayerCheckpoint.Recomputing && is_grad_enabled())
        {
            if (_replay is not null && Replayed(weight, _replayRatio))
            {
                ReplayedCount++;
                return ReplayedMatmul.apply(x, weight, new Recorded(_replay[_replayNext++]));
            }
            using var w = Kept(weight, x.dtype); // [out, in], kept alive by the graph until this layer's backward
            return nn.functional.linear(x, w);
        }
        var y = apply(x, weight);
        if (_recording is not null && Replayed(weight, _recordRatio))
            _recording.Add(y.clone().DetachFromDisposeScope()); // the caller may add to y in place
        return y;
    }

    /// <summary>Frozen matmuls replayed by recomputes on this thread so far (tests).</summary>
    [ThreadStatic]
    internal static long ReplayedCount;

    [ThreadStatic]
    static List<Tensor>? _recording, _replay;
    [ThreadStatic]
    static int _replayNext;
    [ThreadStatic]
    static double _recordRatio, _replayRatio;

    /// <summary>Whether a weight [out, in] is replayed at <paramref name="ratio"/>.</summary>
    static bool Replayed(IQuantizedWeight weight, double ratio) => GradientCheckpointing.Replays(ratio, weight.Shape[1], weight.Shape[0]);

    /// <summary>
    /// Starts keeping the output of every frozen matmul with in / out ≥ <paramref name="ratio"/> on this thread (a
    /// checkpointed layer's no-grad forward, <see cref="GradientCheckpointing.ReplayFanRatio"/>).
    /// </summary>
    internal static void BeginRecording(double ratio)
    {
        _recording = [];
        _recordRatio = ratio;
    }

    /// <summary>The outputs kept since <see cref="BeginRecording"/>, in call order (the caller disposes them).</summary>
    internal static List<Tensor> EndRecording()
    {
        var r = _recording!;
        _recording = null;
        return r;
    }

    /// <summary>
    /// Makes the recompute's frozen matmuls with in / out ≥ <paramref name="ratio"/> (the recording's) return
    /// <paramref name="outputs"/> in order instead of computing them.
    /// </summary>
    internal static void BeginReplay(List<Tensor> outputs, double ratio)
    {
        _replay = outputs;
        _replayNext = 0;
        _replayRatio = ratio;
    }

    /// <summary>Ends <see cref="BeginReplay"/>.</summary>
    internal static void EndReplay() => _replay = null;

    /// <summary>A kept output passed through apply as a non-tensor argument (so autograd does not treat it as an input).</summary>
    sealed record Recorded(Tensor Output);

    /// <summary>
    /// The frozen matmul of a recompute, replayed: forward returns the output the layer's no-grad forward computed (the same
    /// value: same inputs, same kernel), backward is the matmul's: dL/dx = dL/dy · W (W dequantized again). It saves the
    /// recompute's matmuls and dequantizations, for the memory of the kept outputs.
    /// </summary>
    sealed class ReplayedMatmul : SingleTensorFunction<ReplayedMatmul>
    {
        public override string Name => "ReplayedMatmul";

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("weight", vars[1]);
            // The kept tensor itself (not a view, which autograd would not let the caller add to in place); used once.
            return ((Recorded)vars[2]).Output;
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput) =>
            BackwardHandles.Returning([InputGradient((IQuantizedWeight)ctx.get_data("weight"), gradOutput), null!, null!]);
    }

    [ThreadStatic]
    static Dictionary<ScalarType, Tensor>? _scratch;
    [ThreadStatic]
    static List<Tensor>? _recomputeBuffers;
    [ThreadStatic]
    static int _recomputeNext;

    /// <summary>
    /// The dequantized weight for one op that does not keep it (forward outside a recompute, backward): an NF4 weight is
    /// written into this thread's scratch buffer of that dtype (grown to the largest weight), since a fresh multi-megabyte
    /// tensor per use costs a page fault per 4 KiB page — as much as the dequantization. Dispose the returned view; the
    /// buffer is overwritten by the next call on this thread.
    /// </summary>
    static Tensor Transient(IQuantizedWeight weight, ScalarType dtype)
    {
        if (weight is not Healing.Nf4Weight nf4 || !nf4.CanDequantizeInto(dtype))
            return weight.Dequantize(dtype);
        _scratch ??= [];
        _scratch.TryGetValue(dtype, out var buffer);
        var w = Into(nf4, dtype, ref buffer);
        _scratch[dtype] = buffer!;
        return w;
    }

    /// <summary>
    /// The dequantized weight a recompute keeps for its backward: the n-th weight of a recompute goes into this thread's
    /// n-th recompute buffer, so one layer's worth of buffers serves every layer's recompute (the previous layer's graph,
    /// which saved them, is gone by then: <see cref="LayerCheckpoint"/> finishes a layer's backward before the next).
    /// </summary>
    static Tensor Kept(IQuantizedWeight weight, ScalarType dtype)
    {
        if (weight is not Healing.Nf4Weight nf4 || !nf4.CanDequantizeInto(dtype))
            return weight.Dequantize(dtype);
        _recomputeBuffers ??= [];
        int i = _recomputeNext++;
        Tensor? buffer = i < _recomputeBuffers.Count ? _recomputeBuffers[i] : null;
        var w = Into(nf4, dtype, ref buffer);
        if (i < _recomputeBuffers.Count) _recomputeBuffers[i] = buffer!;
        else _recomputeBuffers.Add(buffer!);
        return w;
    }

    /// <summary>
    /// Called by <see cref="LayerCheckpoint"/> as a layer's recompute starts: its weights reuse the buffers from the start.
    /// </summary>
    internal static void BeginRecompute() => _recomputeNext = 0;

    /// <summary>Frees this thread's scratch and recompute buffers (a finished training run calls it; they regrow on use).</summary>
    public static void ReleaseBuffers()
    {
        foreach (var b in _scratch?.Values ?? (IEnumerable<Tensor>)[]) b.Dispose();
        foreach (var b in _recomputeBuffers ?? []) b.Dispose();
        _scratch = null;
        _recomputeBuffers = null;
    }

    /// <summary>
    /// nf4 dequantized into <paramref name="buffer"/> (replaced by a larger one of <paramref name="dtype"/> when needed; it
    /// outlives the caller's dispose scope): the returned [out, in] view is the caller's to dispose.
    /// </summary>
    static Tensor Into(Healing.Nf4Weight nf4, ScalarType dtype, ref Tensor? buffer)
    {
        if (buffer is null || buffer.dtype != dtype || buffer.NumberOfElements < nf4.Numel)
        {
            buffer?.Dispose();
            buffer = empty(nf4.Numel, dtype).DetachFromDisposeScope();
        }
        using var used = buffer.narrow(0, 0, nf4.Numel); // freed at once: only the returned view is the caller's
        var w = used.view(nf4.Shape);
        nf4.DequantizeInto(w);
        return w;
    }

    /// <inheritdoc/>
    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (IQuantizedWeight)vars[1];
        ctx.save_data("weight", weight);
        using var w = Transient(weight, x.dtype); // [out, in]
        return nn.functional.linear(x, w);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        // One entry per argument of apply: the weight (not a tensor) gets none.
        return BackwardHandles.Returning([InputGradient((IQuantizedWeight)ctx.get_data("weight"), gradOutput), null!]);
    }

    /// <summary>
    /// dL/dx = dL/dy · W for a frozen W dequantized again ([..., out] · [out, in] → [..., in]); disposes
    /// <paramref name="gradOutput"/>, our handle (<see cref="BackwardHandles"/>).
    /// </summary>
    static Tensor InputGradient(IQuantizedWeight weight, Tensor gradOutput)
    {
        using var grad = gradOutput;
        using var w = Transient(weight, grad.dtype);   // [out, in]
        return grad.matmul(w);
    }
}
