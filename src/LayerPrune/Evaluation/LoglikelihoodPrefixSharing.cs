using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Evaluation;

/// <summary>
/// The multiple-choice / loglikelihood forwards of <see cref="LoglikelihoodScorer"/> (a batch of contexts into a KV cache,
/// then every choice continuing from its context's cache rows) sharing layer prefixes through the model's
/// <see cref="PrefixCache"/> (issue 30). Both passes' residual streams after the first k layers depend only on layers
/// 0…k−1: the context's on its tokens, each choice's on its tokens and the context's keys and values of those layers. They
/// are stored together per batch at each depth k (a branch point), and a variant whose layers begin with 0…k−1 runs
/// only its layers from k on both passes, building the KV cache for those layers alone. The layers it runs see the same
/// tensors, shapes and kernels as a full forward, so its hidden states are identical to the bit.
/// </summary>
static class LoglikelihoodPrefixSharing
{
    /// <summary>
    /// The hidden states [D, P, H] of <paramref name="contextIds"/> (mask <paramref name="contextMask"/>, into a fresh KV cache)
    /// and [N, R, H] of <paramref name="restIds"/> continuing from cache rows <paramref name="itemOfRow"/> (mask
    /// <paramref name="mask"/> over context and rest), as two <see cref="CausalLM.Forward"/> calls with
    /// <paramref name="layers"/> compute them, starting from the deepest pair of streams <paramref name="shared"/> holds.
    /// </summary>
    public static (Tensor Context, Tensor Choices) Forward(CausalLM model, IReadOnlyList<int>? layers, PrefixCache shared,
        Tensor contextIds, Tensor contextMask, Tensor restIds, Tensor mask, Tensor itemOfRow)
    {
        var order = layers ?? Enumerable.Range(0, model.NumLayers).ToArray();
        Tensor?[] key = [contextIds, contextMask, restIds, mask, itemOfRow];
        var (stored, depth) = shared.Resume(key, order, contextIds.shape[0] + restIds.shape[0]);
        var contextStreams = new Dictionary<int, Tensor>();
        try
        {
            using var cache = new KvCache(order.Count);
            var context = model.Forward(contextIds, contextMask, cache, new ForwardOptions
            {
                Layers = order, HiddenOnly = true, Start = stored is null ? null : (stored[0], depth),
                OnResidual = (k, h) =>
                {
                    if (k > depth && shared.Stores(order, k, model.NumLayers))
                        contextStreams[k] = h.clone().DetachFromDisposeScope();
                },
            });
            using var rowCache = cache.Select(itemOfRow);
            var rest = model.Forward(restIds, mask, rowCache, new ForwardOptions
            {
                Layers = order, HiddenOnly = true, Start = stored is null ? null : (stored[1], depth),
                OnResidual = (k, h) =>
                {
                    if (contextStreams.Remove(k, out var c))
                        using (c)
                            shared.Offer(key, order, k, model.NumLayers, [c, h]);
                },
            });
            return (context, rest);
        }
        finally
        {
            foreach (var c in contextStreams.Values) c.Dispose();
            foreach (var t in stored ?? []) t.Dispose();
        }
    }
}
