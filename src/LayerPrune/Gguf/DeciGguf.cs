using LayerPrune.Checkpoints;
using LayerPrune.Modeling.Families;

namespace LayerPrune.Gguf;

/// <summary>
/// llama.cpp's "deci" architecture (Nemotron-NAS, src/models/deci.cpp; convert_hf_to_gguf.py DeciModel) for a
/// sublayer-pruned model: <c>attention.head_count</c>, <c>attention.head_count_kv</c> and <c>feed_forward_length</c> are
/// per-layer INT32 arrays (as the converter writes Python int lists), 0 heads where the attention is removed (the graph then
/// passes the residual stream through and the KV cache holds nothing for that layer).
/// </summary>
/// <remarks>
/// The graph handles n_ff = 0 with <c>continue</c> before the attention output is added to the residual stream (built for
/// Nemotron-Ultra's dummy blocks, which have no attention either), so a layer that keeps its attention but lost its MLP
/// would lose its attention too. Such a layer is written with feed_forward_length 1 and a zero FFN (ffn_norm ones,
/// ffn_gate/ffn_up/ffn_down zeros): its output is exactly h = x + attn(norm(x)) at 3·H + H values of cost. A layer with
/// neither sublayer is not written at all (the checkpoint drops it).
/// </remarks>
public static class DeciGguf
{
    /// <summary>Per-layer FFN width in the file: the MLP's width, 1 for a kept attention without MLP, 0 for neither.</summary>
    public static int FeedForwardLength(ModelConfig c, int layer) =>
        c.HasMlp(layer) ? c.IntermediateSize : c.HasAttention(layer) ? 1 : 0;

    /// <summary>Replaces the scalar head counts and FFN width of <paramref name="kv"/> by the per-layer arrays.</summary>
    public static void PerLayerCounts(ModelConfig c, List<KeyValuePair<string, GgufValue>> kv)
    {
        string arch = Architecture.For(c).GgufArchitecture;
        int[] Per(Func<int, int> f) => Enumerable.Range(0, c.NumLayers).Select(f).ToArray();
        var arrays = new Dictionary<string, int[]>
        {
            [$"{arch}.feed_forward_length"] = Per(i => FeedForwardLength(c, i)),
            [$"{arch}.attention.head_count"] = Per(i => c.HasAttention(i) ? c.NumHeads : 0),
            [$"{arch}.attention.head_count_kv"] = Per(i => c.HasAttention(i) ? c.NumKvHeads : 0),
        };
        for (int k = 0; k < kv.Count; k++)
            if (arrays.TryGetValue(kv[k].Key, out var values))
                kv[k] = new(kv[k].Key, GgufValue.Array(GgufValueType.Int32, values));
    }

    /// <summary>The zero FFN tensors of layers that keep their attention without an MLP (see remarks), as F32.</summary>
    public static IEnumerable<GgufTensorToWrite> ZeroFfns(ModelConfig c)
    {
        for (int i = 0; i < c.NumLayers; i++)
        {
            if (FeedForwardLength(c, i) != 1 || c.HasMlp(i)) continue;
            foreach (var t in ZeroFfn(i, c.HiddenSize)) yield return t;
        }
    }

    /// <summary>The zero FFN of block <paramref name="layer"/> (feed_forward_length 1, see remarks) for hidden size
    /// <paramref name="h"/>, as F32.</summary>
    public static IEnumerable<GgufTensorToWrite> ZeroFfn(int layer, long h)
    {
        string p = Architecture.GgufBlockPrefix(layer);
        yield return new GgufTensorToWrite(p + "ffn_norm.weight", [h], GgmlType.F32, s => Fill(s, h, 1f));
        yield return new GgufTensorToWrite(p + "ffn_gate.weight", [h, 1], GgmlType.F32, s => Fill(s, h, 0f));
        yield return new GgufTensorToWrite(p + "ffn_up.weight", [h, 1], GgmlType.F32, s => Fill(s, h, 0f));
        yield return new GgufTensorToWrite(p + "ffn_down.weight", [1, h], GgmlType.F32, s => Fill(s, h, 0f));
    }

    static void Fill(Stream s, long count, float value)
    {
        var bytes = new byte[count * 4];
        for (long i = 0; i < count; i++) BitConverter.TryWriteBytes(bytes.AsSpan((int)(i * 4)), value);
        s.Write(bytes);
    }
}
