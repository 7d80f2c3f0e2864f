using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>
/// Residual streams shared by in-memory layer subsets, computed once (issue 30). Variants that keep the same first k
/// layers of the model (every `deepest` variant keeps 0…L−n−2, a similarity variant 0…l*−1) have the same residual stream
/// after those k layers, for the same input. While a cache is attached to a model (<see cref="CausalLM.PrefixCache"/>),
/// an inference forward without a KV cache stores the stream after each of its first k layers that are the model's
/// layers 0…k−1 (its branch points), and a later forward of the same input ids and mask whose layers begin with 0…k−1
/// starts from the deepest stored stream instead of the embedding. The stream is the exact tensor the skipped layers
/// would compute (same batch, same kernels), so results are identical to the bit. Forwards with a KV cache share
/// explicitly: the multiple-choice scorer stores the context's and the choices' streams together per batch
/// (<c>LoglikelihoodPrefixSharing</c>) and starts both passes from them (<see cref="ForwardOptions.Start"/>).
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

    /// <summary>Most bytes held at any time.</summary>
    public long PeakBytes { get; private set; }

    /// <summary>One input (the tensors its streams depend on) and its stored streams per depth, all stored together.</summary>
    sealed class Entry(long id, Tensor?[] key)
    {
        public long Id { get; } = id;
        public Tensor?[] Key { get; } = key;
        public SortedDictionary<int, Tensor[]> Streams { get; } = [];
    }

    /// <summary>
    /// Whether a forward can use the cache: inference (no graph), no KV cache, no residual callback (those see every layer), no
    /// given start (its caller shares explicitly) and no skipped sublayers (their streams differ from the whole layers').
    /// </summary>
    internal static bool Usable(KvCache? cache, ForwardOptions? options) =>
        cache is null && options?.OnResidual is null && options?.Skip is null && options?.Start is null && !is_grad_enabled();

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
        var (streams, depth) = Resume([ids, mask], order, ids.shape[0]);
        return (streams?[0], depth);
    }

    /// <summary>
    /// The deepest streams stored for <paramref name="key"/> at a depth at most the identity prefix of <paramref name="order"/>
    /// (copies the caller owns) and their depth, counting <paramref name="sequences"/> × depth layer forwards saved; (null, 0)
    /// when none are stored. <paramref name="key"/> lists every tensor the streams depend on besides the layers (null = none).
    /// </summary>
    internal (Tensor[]? Streams, int Depth) Resume(Tensor?[] key, IReadOnlyList<int> order, long sequences)
    {
        int limit = IdentityPrefix(order);
        if (limit == 0 || Find(key) is not { } e) return (null, 0);
        foreach (var (depth, streams) in e.Streams.Reverse())
            if (depth <= limit)
            {
                LayerForwardsSaved += sequences * depth;
                return (streams.Select(t => t.clone()).ToArray(), depth);
            }
        return (null, 0);
    }

    /// <summary>Counts one layer applied to a batch of <paramref name="batch"/> sequences.</summary>
    internal void CountLayer(long batch) => LayerForwards += batch;

    /// <summary>
    /// Whether streams after the first <paramref name="depth"/> layers of <paramref name="order"/> may be stored at all: they
    /// are the model's layers 0…depth−1, another layer follows in some variant (depth below <paramref name="numLayers"/>)
    /// and the budget is not 0. Callers that copy streams before offering them ask first.
    /// </summary>
    internal bool Stores(IReadOnlyList<int> order, int depth, int numLayers) =>
        BudgetBytes > 0 && depth > 0 && depth < numLayers && depth <= IdentityPrefix(order);

    /// <summary>
    /// Offers the stream <paramref name="h"/> after the first <paramref name="depth"/> layers of <paramref name="order"/>
    /// (see the other overload).
    /// </summary>
    internal void Offer(Tensor ids, Tensor? mask, IReadOnlyList<int> order, int depth, int numLayers, Tensor h) =>
        Offer([ids, mask], order, depth, numLayers, [h]);

    /// <summary>
    /// Offers the streams <paramref name="streams"/> of input <paramref name="key"/> after the first <paramref name="depth"/>
    /// layers of <paramref name="order"/>: stored together (copied) when <see cref="Stores"/> allows, they are not stored yet
    /// and the budget allows, shallower streams giving way.
    /// </summary>
    internal void Offer(Tensor?[] key, IReadOnlyList<int> order, int depth, int numLayers, Tensor[] streams)
    {
        if (!Stores(order, depth, numLayers)) return;
        long bytes = streams.Sum(t => t.NumberOfElements * t.ElementSize);
        var e = Find(key);
        if (e?.Streams.ContainsKey(depth) == true) return;
        while (Bytes + bytes > BudgetBytes && _byDepth.Count > 0 && _byDepth.Min.Depth < depth) Evict(_byDepth.Min);
        if (Bytes + bytes > BudgetBytes) return;
        if (e is null)
        {
            e = new Entry(_nextId++, key.Select(t => t?.clone().DetachFromDisposeScope()).ToArray());
            long hash = Hash(key);
            if (!_entries.TryGetValue(hash, out var list)) _entries[hash] = list = [];
            list.Add(e);
        }
        // Copies outlive the forward's dispose scope.
        e.Streams[depth] = streams.Select(t => t.detach().clone().DetachFromDisposeScope()).ToArray();
        _byDepth.Add((depth, e.Id));
        Bytes += bytes;
        PeakBytes = Math.Max(PeakBytes, Bytes);
    }

    void Evict((int Depth, long Id) which)
    {
        _byDepth.Remove(which);
        foreach (var list in _entries.Values)
            foreach (var e in list)
                if (e.Id == which.Id && e.Streams.Remove(which.Depth, out var streams))
                {
                    foreach (var t in streams)
                    {
                        Bytes -= t.NumberOfElements * t.ElementSize;
                        t.Dispose();
                    }
                    return;
                }
    }

    Entry? Find(Tensor?[] key)
    {
        if (!_entries.TryGetValue(Hash(key), out var list)) return null;
        foreach (var e in list)
            if (e.Key.Length == key.Length && e.Key.Zip(key).All(p => p.First is null ? p.Second is null : p.Second is not null
                && Same(p.First, p.Second)))
                return e;
        return null;
    }

    static bool Same(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.device_type == b.device_type && a.device_index == b.device_index
        && a.equal(b).all().item<bool>();

    /// <summary>A hash of the key's shapes and contents (collisions are resolved by comparing the tensors).</summary>
    static long Hash(Tensor?[] key)
    {
        var h = new HashCode();
        h.Add(key.Length);
        foreach (var t in key)
        {
            if (t is null)
            {
                h.Add(-1L);
                continue;
            }
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
                foreach (var t in e.Key) t?.Dispose();
                foreach (var t in e.Streams.Values.SelectMany(x => x)) t.Dispose();
            }
        _entries.Clear();
        _byDepth.Clear();
        Bytes = 0;
    }

    /// <inheritdoc/>
    public void Dispose() => Clear();
}
