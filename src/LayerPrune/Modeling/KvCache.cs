using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>Keys and values of past positions, one slot per executed layer: [B, kvHeads, S, headDim].</summary>
public sealed class KvCache : IDisposable
{
    // Each slot holds buffers [B, kvHeads, capacity, headDim] of which the first _lengths[i] positions are filled: appending
    // a decode step writes one position in place instead of concatenating the whole history (llama.cpp's KV cache is
    // preallocated too). The capacity doubles when full, so a T-step decode copies the history O(log T) times.
    readonly Tensor?[] _keys, _values;
    readonly long[] _lengths;
    /// <summary>An empty cache for <paramref name="layers"/> layers.</summary>
    public KvCache(int layers) { _keys = new Tensor?[layers]; _values = new Tensor?[layers]; _lengths = new long[layers]; }

    /// <summary>Number of layers cached.</summary>
    public int Layers => _keys.Length;
    long _positions;

    /// <summary>Number of cached positions (also counted for slots of layers without attention, which cache nothing).</summary>
    public long Length
    {
        get
        {
            for (int i = 0; i < _keys.Length; i++)
                if (_keys[i] is not null) return Math.Max(_positions, _lengths[i]);
            return _positions;
        }
    }

    /// <summary>Records that the positions up to <paramref name="positions"/> have been run (a model may have no attention).</summary>
    public void Advance(long positions) => _positions = Math.Max(_positions, positions);
    /// <summary>Bytes held by the cached keys and values of every slot (filled positions; the spare capacity is not counted).</summary>
    public long Bytes
    {
        get
        {
            long bytes = 0;
            for (int i = 0; i < _keys.Length; i++)
                if (_keys[i] is { } k) bytes += 2 * k.shape[0] * k.shape[1] * _lengths[i] * k.shape[3] * k.ElementSize;
            return bytes;
        }
    }

    /// <summary>Appends this step's k, v [B, kvH, T, D] for layer slot <paramref name="i"/> and returns the full k, v
    /// (views of the slot's buffers, valid until the next append; the caller disposes them).</summary>
    public (Tensor k, Tensor v) Append(int i, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (_keys[i] is null)
        {
            // The first append (a prompt) is kept as it is: no copy; decode steps grow it.
            _keys[i] = Own(k);
            _values[i] = Own(v);
            _lengths[i] = t;
        }
        else
        {
            Reserve(i, t, k.shape[0], k.shape[1], k.shape[3], k.dtype);
            using (var kd = _keys[i]!.narrow(2, _lengths[i], t)) kd.copy_(k);
            using (var vd = _values[i]!.narrow(2, _lengths[i], t)) vd.copy_(v);
            _lengths[i] += t;
        }
        return (_keys[i]!.narrow(2, 0, _lengths[i]), _values[i]!.narrow(2, 0, _lengths[i]));
    }

    static Tensor Own(Tensor t)
    {
        var c = t.contiguous();
        return (ReferenceEquals(c, t) ? t.alias() : c).DetachFromDisposeScope();
    }

    /// <summary>
    /// Makes room for <paramref name="t"/> more positions in slot <paramref name="i"/> (allocated [b, kvHeads, ·, headDim] in
    /// <paramref name="dtype"/> on the CPU when empty) and returns its contiguous buffers and the filled length; the caller
    /// writes positions length … length + t − 1 and then calls <see cref="Commit"/> (the batch-1 decode path, DecodeLayer).
    /// </summary>
    internal (Tensor Keys, Tensor Values, long Length) Reserve(int i, long t, long b, long kvHeads, long headDim, ScalarType dtype)
    {
        long need = _lengths[i] + t;
        if (_keys[i] is null || _keys[i]!.shape[2] < need || !_keys[i]!.is_contiguous() || !_values[i]!.is_contiguous())
        {
            long capacity = Math.Max(need, Math.Max(2 * _lengths[i], 64));
            var device = _keys[i]?.device ?? CPU;
            var nk = zeros([b, kvHeads, capacity, headDim], dtype, device);
            var nv = zeros([b, kvHeads, capacity, headDim], dtype, device);
            if (_keys[i] is { } ok)
            {
                using (var d = nk.narrow(2, 0, _lengths[i])) using (var s = ok.narrow(2, 0, _lengths[i])) d.copy_(s);
                using (var d = nv.narrow(2, 0, _lengths[i])) using (var s = _values[i]!.narrow(2, 0, _lengths[i])) d.copy_(s);
                ok.Dispose();
                _values[i]!.Dispose();
            }
            _keys[i] = nk.DetachFromDisposeScope();
            _values[i] = nv.DetachFromDisposeScope();
        }
        return (_keys[i]!, _values[i]!, _lengths[i]);
    }

    /// <summary>Counts <paramref name="t"/> positions written into slot <paramref name="i"/> after <see cref="Reserve"/>.</summary>
    internal void Commit(int i, long t) => _lengths[i] += t;

    /// <summary>A new cache whose batch rows are rows <paramref name="index"/> of this one (e.g. one shared context repeated per
    /// choice).</summary>
    public KvCache Select(Tensor index)
    {
        var c = new KvCache(Layers) { _positions = _positions };
        for (int i = 0; i < Layers; i++)
        {
            if (_keys[i] is null) continue;
            using var k = _keys[i]!.narrow(2, 0, _lengths[i]);
            using var v = _values[i]!.narrow(2, 0, _lengths[i]);
            c._keys[i] = k.index_select(0, index).DetachFromDisposeScope();
            c._values[i] = v.index_select(0, index).DetachFromDisposeScope();
            c._lengths[i] = _lengths[i];
        }
        return c;
    }

    /// <summary>Sets slot <paramref name="i"/> to rows <paramref name="index"/> of the same slot of <paramref name="source"/>
    /// (layer-major passes fill a cache one layer at a time).</summary>
    public void SelectSlot(int i, KvCache source, Tensor index)
    {
        ArgumentNullException.ThrowIfNull(source);
        ReleaseSlot(i);
        if (source._keys[i] is null) return;
        using var k = source._keys[i]!.narrow(2, 0, source._lengths[i]);
        using var v = source._values[i]!.narrow(2, 0, source._lengths[i]);
        _keys[i] = k.index_select(0, index).DetachFromDisposeScope();
        _values[i] = v.index_select(0, index).DetachFromDisposeScope();
        _lengths[i] = source._lengths[i];
    }

    /// <summary>Frees slot <paramref name="i"/> (a layer-major pass is done with that layer).</summary>
    public void ReleaseSlot(int i)
    {
        _keys[i]?.Dispose();
        _values[i]?.Dispose();
        _keys[i] = null;
        _values[i] = null;
        _lengths[i] = 0;
    }

    /// <summary>Releases the cached keys and values.</summary>
    public void Dispose()
    {
        for (int i = 0; i < Layers; i++) { _keys[i]?.Dispose(); _values[i]?.Dispose(); _keys[i] = _values[i] = null; }
    }
}
