using System.Text.RegularExpressions;
using LayerPrune.Modeling.Families;

namespace LayerPrune.Checkpoints;

/// <summary>A tensor the model code reads: its HF name, the shape config.json implies, and whether it must exist.</summary>
public sealed record ExpectedTensor(string Name, long[] Shape, bool Required);

/// <summary>
/// The tensors each supported architecture loads (names as in HF modeling_llama.py / modeling_phi.py state dicts; listed
/// by <see cref="Architecture.ExpectedTensors"/>).
/// <see cref="Checkpoint.Open"/> checks them up front, so a checkpoint that lacks a tensor or stores one with the wrong
/// shape fails with a message naming the tensor and the file, before any command does work.
/// </summary>
public static partial class ArchitectureTensors
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.")]
    private static partial Regex LayerPrefix();

    /// <summary>The tensors the model code reads for <paramref name="c"/> (from its family descriptor's module tree).</summary>
    public static IEnumerable<ExpectedTensor> Expected(ModelConfig c) => Architecture.For(c).ExpectedTensors(c);

    /// <summary>
    /// Throws for the first required tensor that is missing, any expected tensor stored with another shape, or a
    /// layer tensor beyond num_hidden_layers. <paramref name="fileOf"/> names the file a tensor is (or should be) in.
    /// </summary>
    public static void Validate(ModelConfig c, Func<string, TensorInfo?> lookup, Func<string?, string> fileOf, IEnumerable<string> names)
    {
        foreach (var e in Expected(c))
        {
            var info = lookup(e.Name);
            if (info is null)
            {
                if (e.Required)
                    throw new LayerPruneException($"{fileOf(null)}: tensor '{e.Name}' required by {c.ModelType} (config.json) is missing");
                continue;
            }
            if (!info.Shape.SequenceEqual(e.Shape))
                throw new LayerPruneException($"{fileOf(e.Name)}: tensor '{e.Name}' has shape [{string.Join(", ", info.Shape)}] " +
                                              $"but config.json implies [{string.Join(", ", e.Shape)}]");
            if (info.Dtype is not ("F32" or "F16" or "BF16" or "F64"))
                throw new LayerPruneException($"{fileOf(e.Name)}: tensor '{e.Name}' is stored as {info.Dtype}; " +
                                              "only floating-point weights (F32, F16, BF16, F64) are supported");
        }
        foreach (var name in names)
        {
            if (LayerPrefix().Match(name) is not { Success: true } m) continue;
            if (!int.TryParse(m.Groups[1].Value, out int layer) || layer >= c.NumLayers)
                throw new LayerPruneException(
                    $"{fileOf(name)}: tensor '{name}' belongs to a layer beyond num_hidden_layers = {c.NumLayers} (config.json)");
        }
    }
}
