using static TorchSharp.torch;

namespace LayerPrune.Modeling;

/// <summary>Keys and values of past positions, one slot per executed layer: [B, kvHeads, S, headDim].</summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _keys, _values;
    /// <summary>An empty cache for <paramref name="layers"/> layers.</summary>
    public KvCache(int layers) { _keys = new Tensor?[layers]; _values = new Tensor?[layers]; }

    /// <summary>Number of layers cached.</summary>
    public int Layers => _keys.Length;
    long _positions;

    /// <summary>Number of cached positions (also counted for slots of layers without attention, which cache nothing).</summary>
    public long Length => Math.Max(_positions, _keys.FirstOrDefault(k => k is not null)?.shape[2] ?? 0);

    /// <summary>Records that the positions up to <paramref name="positions"/> have been run (a model may have no attention).</summary>
    public void Advance(long positions) => _positions = Math.Max(_positions, positions);
    /// <summary>Bytes held by the cached keys and values of every slot.</summary>
    public long Bytes => _keys.Concat(_values).Sum(t => t is null ? 0 : t.NumberOfElements * t.ElementSize);

    /// <summary>Appends this step's k, v [B, kvH, T, D] for layer slot <paramref name="i"/> and returns the full k, v.</summary>
    public (Tensor k, Tensor v) Append(int i, Tensor k, Tensor v)
    {
        Tensor newK = _keys[i] is null ? k.alias() : cat([_keys[i]!, k], 2);
        Tensor newV = _values[i] is null ? v.alias() : cat([_values[i]!, v], 2);
        _keys[i]?.Dispose(); _values[i]?.Dispose();
        _keys[i] = newK.DetachFromDisposeScope(); _values[i] = newV.DetachFromDisposeScope();
        return (_keys[i]!, _values[i]!);
    }

    /// <summary>A new cache whose batch rows are rows <paramref name="index"/> of this one (e.g. one shared context repeated per
    /// choice).</summary>
    public KvCache Select(Tensor index)
    {
        var c = new KvCache(Layers) { _positions = _positions };
        for (int i = 0; i < Layers; i++)
        {
            if (_keys[i] is null) continue;
            c._keys[i] = _keys[i]!.index_select(0, index).DetachFromDisposeScope();
            c._values[i] = _values[i]!.index_select(0, index).DetachFromDisposeScope();
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
        _keys[i] = source._keys[i]!.index_select(0, index).DetachFromDisposeScope();
        _values[i] = source._values[i]!.index_select(0, index).DetachFromDisposeScope();
    }

    /// <summary>Frees slot <paramref name="i"/> (a layer-major pass is done with that layer).</summary>
    public void ReleaseSlot(int i)
    {
        _keys[i]?.Dispose();
        _values[i]?.Dispose();
        _keys[i] = null;
        _values[i] = null;
    }

    /// <summary>Releases the cached keys and values.</summary>
    public void Dispose()
    {
        for (int i = 0; i < Layers; i++) { _keys[i]?.Dispose(); _values[i]?.Dispose(); _keys[i] = _values[i] = null; }
    }
}
