namespace LayerPrune.Modeling;

/// <summary>The two halves of a decoder layer (LLM-Drop, BlockPruner, FinerCut remove them on their own).</summary>
public enum SublayerKind
{
    /// <summary>Self-attention with its input norm: h = x + self_attn(input_layernorm(x)).</summary>
    Attention,
    /// <summary>The MLP with its norm: out = h + mlp(post_attention_layernorm(h)).</summary>
    Mlp,
}

/// <summary>One sublayer: the attention or the MLP of layer <paramref name="Layer"/> (0-based original index).</summary>
public readonly record struct Sublayer(int Layer, SublayerKind Kind)
{
    /// <summary>"attention 3" / "mlp 2".</summary>
    public override string ToString() => $"{KindName(Kind)} {Layer}";

    /// <summary>"attention" or "mlp".</summary>
    public static string KindName(SublayerKind k) => k == SublayerKind.Attention ? "attention" : "mlp";
}

/// <summary>
/// Sublayers skipped in memory, by original layer index: a skipped attention is the residual identity h = x, a skipped
/// MLP is out = h (LLM-Drop's "drop"). Phi-2's parallel block drops the branch: out = x + mlp(n) or x + attn(n); its
/// shared input_layernorm stays while either branch does.
/// </summary>
public sealed class SublayerMask
{
    readonly HashSet<int> _attention, _mlp;

    /// <summary>The mask removing <paramref name="attention"/> layers' attentions and <paramref name="mlp"/> layers' MLPs.</summary>
    public SublayerMask(IEnumerable<int> attention, IEnumerable<int> mlp)
    {
        _attention = attention.ToHashSet();
        _mlp = mlp.ToHashSet();
    }

    /// <summary>The mask removing <paramref name="sublayers"/>.</summary>
    public static SublayerMask Of(IEnumerable<Sublayer> sublayers)
    {
        var list = sublayers.ToList();
        return new(list.Where(s => s.Kind == SublayerKind.Attention).Select(s => s.Layer),
                   list.Where(s => s.Kind == SublayerKind.Mlp).Select(s => s.Layer));
    }

    /// <summary>Layers whose attention is skipped, ascending.</summary>
    public IReadOnlyList<int> Attention => _attention.Order().ToArray();
    /// <summary>Layers whose MLP is skipped, ascending.</summary>
    public IReadOnlyList<int> Mlp => _mlp.Order().ToArray();
    /// <summary>Whether layer <paramref name="layer"/>'s attention is skipped.</summary>
    public bool SkipsAttention(int layer) => _attention.Contains(layer);
    /// <summary>Whether layer <paramref name="layer"/>'s MLP is skipped.</summary>
    public bool SkipsMlp(int layer) => _mlp.Contains(layer);
    /// <summary>Whether <paramref name="s"/> is skipped.</summary>
    public bool Skips(Sublayer s) => s.Kind == SublayerKind.Attention ? SkipsAttention(s.Layer) : SkipsMlp(s.Layer);
    /// <summary>Every skipped sublayer, by layer then attention before MLP.</summary>
    public IEnumerable<Sublayer> All =>
        _attention.Select(l => new Sublayer(l, SublayerKind.Attention)).Concat(_mlp.Select(l => new Sublayer(l, SublayerKind.Mlp)))
            .OrderBy(s => s.Layer).ThenBy(s => s.Kind);
    /// <summary>Number of skipped sublayers.</summary>
    public int Count => _attention.Count + _mlp.Count;
    /// <summary>This mask plus <paramref name="s"/>.</summary>
    public SublayerMask With(Sublayer s) => Of(All.Append(s));
}
