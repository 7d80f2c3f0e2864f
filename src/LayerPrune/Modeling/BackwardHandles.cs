using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// Frees the managed handles that TorchSharp's custom-function bridge (autograd <c>Node.ApplyFunc</c>, 0.107) leaves to
/// the GC: it wraps each incoming gradient in a new handle for backward and keeps the handles backward returns; neither is
/// disposed, so every custom node's gradients stayed allocated until a finalizer ran (a no-checkpointing TinyLlama step held
/// ~4 GB more than its graph). A custom backward disposes its incoming gradient itself and returns through
/// <see cref="Returning"/>: those handles are disposed at the next custom backward on the thread (libtorch has copied the
/// tensors when the previous call returned) or by <see cref="ReleaseReturned"/> once a backward pass is over.
/// </summary>
public static class BackwardHandles
{
    [ThreadStatic]
    static List<Tensor>? _returned;

    /// <summary>Registers the gradients a custom backward returns (frees those of the previous call first).</summary>
    public static List<Tensor> Returning(List<Tensor> grads)
    {
        ReleaseReturned();
        _returned ??= [];
        foreach (var g in grads)
            if (g is not null) _returned.Add(g);
        return grads;
    }

    /// <summary>Disposes the handles the last custom backward on this thread returned.</summary>
    public static void ReleaseReturned()
    {
        if (_returned is null) return;
        foreach (var g in _returned) g.Dispose();
        _returned.Clear();
    }
}
