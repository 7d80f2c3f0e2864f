using System.Text.RegularExpressions;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;

namespace LayerPrune.Pruning;

/// <summary>
/// The common axis of a sweep over units (issue 25): removed parameters / decoder parameters, counted from the checkpoint's
/// tensor shapes. Decoder parameters are those of model.layers.* (embedding, final norm and lm_head are not pruned). A removed
/// attention takes its self_attn.* tensors and input_layernorm, a removed MLP its mlp.* and post_attention_layernorm (as
/// <see cref="SublayerCheckpointWriter"/> leaves them out); Phi-2's shared input_layernorm goes only with its layer. A layer
/// whose every sublayer is removed is a removed layer: all its tensors count.
/// </summary>
public static partial class RemovedParameters
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.([a-z_]+)\.")]
    private static partial Regex LayerTensor();

    /// <summary>Which part of layer <c>Layer</c> a tensor belongs to: attention, MLP, or the layer as a whole (null).</summary>
    static (int Layer, SublayerKind? Kind)? PartOf(string name, ModelConfig c)
    {
        var m = LayerTensor().Match(name);
        if (!m.Success) return null;
        bool phi = c.Family == ArchitectureFamily.Phi;
        SublayerKind? kind = m.Groups[2].Value switch
        {
            "self_attn" => SublayerKind.Attention,
            "input_layernorm" when !phi => SublayerKind.Attention,
            "mlp" or "post_attention_layernorm" => SublayerKind.Mlp,
            _ => null,
        };
        return (int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), kind);
    }

    /// <summary>
    /// Whether the tensor <paramref name="name"/> is gone when layers <paramref name="removedLayers"/> and the sublayers of
    /// <paramref name="skip"/> are removed (false for tensors outside the decoder layers).
    /// </summary>
    public static bool IsRemoved(string name, ModelConfig c, IReadOnlySet<int> removedLayers, SublayerMask? skip)
    {
        ArgumentNullException.ThrowIfNull(c);
        ArgumentNullException.ThrowIfNull(removedLayers);
        if (PartOf(name, c) is not var (layer, kind)) return false;
        if (removedLayers.Contains(layer)) return true;
        bool attentionGone = !c.HasAttention(layer) || skip?.SkipsAttention(layer) == true;
        bool mlpGone = !c.HasMlp(layer) || skip?.SkipsMlp(layer) == true;
        return kind switch
        {
            SublayerKind.Attention => attentionGone,
            SublayerKind.Mlp => mlpGone,
            _ => attentionGone && mlpGone,
        };
    }

    /// <summary>Parameters of the decoder layers (model.layers.*) of <paramref name="ckpt"/>.</summary>
    public static long Decoder(Checkpoint ckpt)
    {
        ArgumentNullException.ThrowIfNull(ckpt);
        return ckpt.WeightMap.Keys.Where(n => PartOf(n, ckpt.Config) is not null).Sum(n => ckpt.Info(n).NumElements);
    }

    /// <summary>Parameters removed with whole layers <paramref name="removedLayers"/> and the sublayers of
    /// <paramref name="skip"/>.</summary>
    public static long Count(Checkpoint ckpt, IEnumerable<int> removedLayers, SublayerMask? skip)
    {
        ArgumentNullException.ThrowIfNull(ckpt);
        var layers = removedLayers.ToHashSet();
        return ckpt.WeightMap.Keys.Where(n => IsRemoved(n, ckpt.Config, layers, skip)).Sum(n => ckpt.Info(n).NumElements);
    }

    /// <summary>Removed parameters / decoder parameters.</summary>
    public static double Fraction(Checkpoint ckpt, IEnumerable<int> removedLayers, SublayerMask? skip) =>
        (double)Count(ckpt, removedLayers, skip) / Decoder(ckpt);

    /// <summary>
    /// Bytes the KV cache holds per token for the layers that keep an attention sublayer: per such layer key and value,
    /// num_key_value_heads × head_dim elements of <paramref name="elementSize"/> bytes each.
    /// </summary>
    public static long KvCacheBytesPerToken(ModelConfig c, IEnumerable<int> removedLayers, SublayerMask? skip, int elementSize)
    {
        ArgumentNullException.ThrowIfNull(c);
        var layers = removedLayers.ToHashSet();
        int attention = Enumerable.Range(0, c.NumLayers)
            .Count(i => !layers.Contains(i) && c.HasAttention(i) && skip?.SkipsAttention(i) != true);
        return attention * 2L * c.NumKvHeads * c.HeadDim * elementSize;
    }
}
