using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// Residual streams shared by in-memory layer subsets, computed once (issue 30). Variants that keep the same first k
/// layers of the model (every `deepest` variant keeps 0…L−n−2, a similarity variant 0…l*−1) have the same residual stream
/// after those k layers, for the same input. While a cache is attached to a model (<see cref="CausalLM.PrefixCache"/>),
/// an inference forward without a KV cache stores the stream after each of its first k layers that are the model's
/// layers 0…k−1 (its branch points), and a later forward of the same input ids and mask whose layers begin with 0…k−1
/// starts from the deepest stored stream instead of the embedding. The stream is the exact tensor the skipped layers
/// would compute (same batch, same kernels), so results are identical to the bit.
/// Within <see cref="BudgetBytes"/> the deepest branch points are kept (each saves the most layer forwards).
/// </summary>
public sealed class PrefixCache : IDisposable
{
    readonly Dictionary<long, List<Entry>> _entries = [];
    readonly SortedSet<(int Depth, long Id)> _byDepth = [];
    long _nextId;

    /// <summary>A cache of at most <paramref name="budgetBytes"/> of stored residual streams.</summary>
    public PrefixCache(long budgetBytes)
    {
        if (budgetBytes < 0) throw LayerPruneException.Invalid(nameof(budgetBytes), budgetBytes, "must be 0 or more");
        BudgetBytes = budgetBytes;
    }

    /// <summary>Most bytes of residual streams held.</summary>
    public long BudgetBytes { get; }
    /// <summary>Bytes held now.</summary>
    public long Bytes { get; private set; }
    /// <summary>Decoder-layer applications to a sequence run by forwards of the model (a batch of B through k layers: B·k).</summary>
    public long LayerForwards { get; private set; }
    /// <summary>Decoder-layer applications to a sequence that a stored stream saved.</summary>
    public long LayerForwardsSaved { get; private set; }

    sealed class Entry(long id, Tensor ids, Tensor? mask)
    {
        public long Id { get; } = id;
        public Tensor Ids { get; } = ids;
        public Tensor? Mask { get; } = mask;
        public SortedDictionary<int, Tensor> Streams { get; } = [];
    }

    /// <summary>
    /// Whether a forward can use the cache: inference (no graph), no KV cache, no residual callback (those see every layer) and
    /// no skipped sublayers (their streams differ from the whole layers').
    /// </summary>
    internal static bool Usable(KvCache? cache, ForwardOptions? options) =>
        cache is null && options?.OnResidual is null && options?.Skip is null && !is_grad_enabled();

    /// <summary>Number of leading layers of <paramref name="order"/> that are the model's layers 0, 1, ….</summary>
    static int IdentityPrefix(IReadOnlyList<int> order)
    {
        int k = 0;
        while (k < order.Count && order[k] == k) k++;
        return k;
    }

    /// <summary>
    /// The deepest stored stream for this input at a depth at most the identity prefix of <paramref name="order"/> (a copy
    /// the caller owns) and its depth; (null, 0) when none is stored.
    /// </summary>
    internal (Tensor? Stream, int Depth) Resume(Tensor ids, Tensor? mask, IReadOnlyList<int> order)
    {
        int limit = IdentityPrefix(order);
        if (limit == 0 || Find(ids, mask) is not { } e) return (null, 0);
        foreach (var (depth, stream) in e.Streams.Reverse())
            if (depth <= limit)
            {
                LayerForwardsSaved += ids.shape[0] * depth;
                return (stream.clone(), depth);
            }
        return (null, 0);
    }

    /// <summary>Counts one layer applied to a batch of <paramref name="batch"/> sequences.</summary>
    internal void CountLayer(long batch) => LayerForwards += batch;

    /// <summary>
    /// Offers the stream <paramref name="h"/> after the first <paramref name="depth"/> layers of <paramref name="order"/>:
    /// stored (copied) when they are the model's layers 0…depth−1, another layer follows in some variant (depth below the
    /// model's <paramref name="numLayers"/>), it is not stored yet and the budget allows, shallower streams giving way.
    /// </summary>
    internal void Offer(Tensor ids, Tensor? mask, IReadOnlyList<int> order, int depth, int numLayers, Tensor h)
    {
        if (depth >= numLayers || depth > IdentityPrefix(order)) return;
        long bytes = h.NumberOfElements * h.ElementSize;
        var e = Find(ids, mask);
        if (e?.Streams.ContainsKey(depth) == true) return;
        while (Bytes + bytes > BudgetBytes && _byDepth.Count > 0 && _byDepth.Min.Depth < depth) Evict(_byDepth.Min);
        if (Bytes + bytes > BudgetBytes) return;
        if (e is null)
        {
            e = new Entry(_nextId++, ids.clone().DetachFromDisposeScope(), mask?.clone().DetachFromDisposeScope());
            long key = Key(ids, mask);
            if (!_entries.TryGetValue(key, out var list)) _entries[key] = list = [];
            list.Add(e);
        }
        e.Streams[depth] = h.detach().clone().DetachFromDisposeScope();  // outlives the forward's dispose scope
        _byDepth.Add((depth, e.Id));
        Bytes += bytes;
    }

    void Evict((int Depth, long Id) which)
    {
        _byDepth.Remove(which);
        foreach (var list in _entries.Values)
            foreach (var e in list)
                if (e.Id == which.Id && e.Streams.Remove(which.Depth, out var t))
                {
                    Bytes -= t.NumberOfElements * t.ElementSize;
                    t.Dispose();
                    return;
                }
    }

    Entry? Find(Tensor ids, Tensor? mask)
    {
        if (!_entries.TryGetValue(Key(ids, mask), out var list)) return null;
        foreach (var e in list)
            if (Same(e.Ids, ids) && (e.Mask is null ? mask is null : mask is not null && Same(e.Mask, mask)))
                return e;
        return null;
    }

    static bool Same(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.device_type == b.device_type && a.device_index == b.device_index
        && a.equal(b).all().item<bool>();

    /// <summary>A hash of the input's shape and contents (collisions are resolved by comparing the tensors).</summary>
    static long Key(Tensor ids, Tensor? mask)
    {
        var h = new HashCode();
        foreach (var t in mask is null ? [ids] : new[] { ids, mask })
        {
            foreach (long d in t.shape) h.Add(d);
            using var c = t.cpu().contiguous();
            h.AddBytes(c.bytes);
        }
        return h.ToHashCode();
    }

    /// <summary>Frees every stored stream (the counters stay).</summary>
    public void Clear()
    {
        foreach (var list in _entries.Values)
            foreach (var e in list)
            {
                e.Ids.Dispose();
                e.Mask?.Dispose();
                foreach (var t in e.Streams.Values) t.Dispose();
            }
        _entries.Clear();
        _byDepth.Clear();
        Bytes = 0;
    }

    /// <inheritdoc/>
    public void Dispose() => Clear();
}
