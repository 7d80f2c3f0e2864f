using System.Text.Json.Nodes;

namespace LayerPrune.Pruning.Strategies;

/// <summary>
/// What choosing the layers cost: <paramref name="ForwardPasses"/> sequences run through the model (a calibration loss
/// over C chunks costs C), <paramref name="LayerForwards"/> decoder-layer applications to a sequence (a pass with k layers
/// costs k), <paramref name="Tokens"/> tokens fed, and the wall-clock seconds of the selection.
/// </summary>
public sealed record SelectionCost(long ForwardPasses, long LayerForwards, long Tokens, double Seconds)
{
    /// <summary>Free rules (deepest, shallowest, random, explicit layers).</summary>
    public static readonly SelectionCost None = new(0, 0, 0, 0);

    /// <summary>One similarity pass over <paramref name="samples"/> of the full model.</summary>
    public static SelectionCost SimilarityPass(int samples, long tokens, int layers, double seconds) =>
        new(samples, (long)samples * layers, tokens, seconds);

    /// <summary>{"forward_passes", "layer_forwards", "tokens", "seconds"}.</summary>
    public JsonObject ToJson() => new()
    {
        ["forward_passes"] = ForwardPasses,
        ["layer_forwards"] = LayerForwards,
        ["tokens"] = Tokens,
        ["seconds"] = Math.Round(Seconds, 3),
    };
}
