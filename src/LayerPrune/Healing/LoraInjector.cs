using LayerPrune.Modeling;
using LayerPrune.Modeling.Families;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>How the frozen base weights are stored while healing.</summary>
public enum BaseQuantization
{
    /// <summary>Plain weights in the compute dtype.</summary>
    None,
    /// <summary>4-bit NormalFloat (QLoRA).</summary>
    Nf4,
}

/// <summary>A LoRA setup (the fields of PEFT's LoraConfig that matter here).</summary>
/// <param name="TargetModules">Module-name suffixes to adapt (PEFT target_modules).</param>
/// <param name="R">Rank.</param>
/// <param name="Alpha">lora_alpha (scaling α/r, or α/√r with rsLoRA).</param>
/// <param name="Dropout">lora_dropout on the adapter's input.</param>
/// <param name="UseRsLora">Rank-stabilised scaling α/√r.</param>
public sealed record LoraSettings(
    IReadOnlyList<string> TargetModules,
    int R = 8,
    double Alpha = 16,
    double Dropout = 0.05,
    bool UseRsLora = false)
{
    /// <summary>PEFT's default Llama-style target list: all attention and MLP projections.</summary>
    public static readonly IReadOnlyList<string> AllLinear = LlamaFamily.AllLinear;

    /// <summary>
    /// PEFT check_target_module_exists for a list: the module name equals a target or ends with "." + target.
    /// </summary>
    public bool Matches(string moduleName) => MatchesAny(moduleName, TargetModules);

    /// <summary>Whether <paramref name="moduleName"/> equals a target or ends with "." + target.</summary>
    public static bool MatchesAny(string moduleName, IEnumerable<string> targets) =>
        targets.Any(t => moduleName == t || moduleName.EndsWith("." + t, StringComparison.Ordinal));
}

/// <summary>Attaches LoRA adapters to a model's linear layers (QLoRA when the base is quantized to NF4).</summary>
public static class LoraInjector
{
    /// <summary>
    /// Freezes every given layer's weight and bias (requires_grad false), optionally replaces the weight by its NF4
    /// form (every given layer except an output head named "lm_head", like transformers' load_in_4bit), and attaches
    /// a fresh adapter to each layer whose name matches a target suffix. Adapters are initialised in the given order
    /// from one generator seeded with <paramref name="seed"/>, in fp32 on the layer's device.
    /// </summary>
    public static IReadOnlyList<(string Name, LoraAdapter Adapter)> Inject(
        IEnumerable<(string Name, Linear Linear)> modules, LoraSettings settings, long seed,
        BaseQuantization quantize = BaseQuantization.None, bool doubleQuant = false)
    {
        if (settings.R < 1) throw new LayerPruneException($"LoRA: r must be at least 1, got {settings.R}");
        if (settings.TargetModules.Count == 0) throw new LayerPruneException("LoRA: target_modules is empty");
        using var generator = new Generator((ulong)seed);
        var result = new List<(string, LoraAdapter)>();
        foreach (var (name, linear) in modules)
        {
            if (linear.Adapter is not null) throw new LayerPruneException($"LoRA: module {name} already has an adapter");
            Freeze(linear);
            if (quantize == BaseQuantization.Nf4 && linear.Weight is not null && !IsOutputHead(name))
            {
                linear.Quantized = Nf4Weight.Quantize(linear.Weight, doubleQuant);
                // A view of the checkpoint mapping: its pages would stay resident as long as any weight maps the file.
                ResidentPages.Release(linear.Weight);
                linear.Weight.Dispose();
                linear.Weight = null;
            }
            if (!settings.Matches(name)) continue;
            var device = linear.Weight?.device ?? (linear.Quantized as Nf4Weight)?.Packed.device;
            var adapter = new LoraAdapter(linear.InFeatures, linear.OutFeatures, settings.R, settings.Alpha,
                settings.Dropout, settings.UseRsLora, generator, ScalarType.Float32, device);
            linear.Adapter = adapter;
            result.Add((name, adapter));
        }
        if (result.Count == 0)
            throw new LayerPruneException($"LoRA: no module matches target_modules [{string.Join(", ", settings.TargetModules)}]");
        return result;
    }

    /// <summary>
    /// Overload matching the brief: target suffixes, r, alpha, dropout, seed, quantization.
    /// </summary>
    public static IReadOnlyList<(string Name, LoraAdapter Adapter)> Inject(
        IEnumerable<(string Name, Linear Linear)> modules, IReadOnlyList<string> targetModules, int r, double alpha,
        double dropout, long seed, BaseQuantization quantize, bool useRsLora = false, bool doubleQuant = false) =>
        Inject(modules, new LoraSettings(targetModules, r, alpha, dropout, useRsLora), seed, quantize, doubleQuant);

    static bool IsOutputHead(string name) =>
        name == Architecture.LmHeadName || name.EndsWith("." + Architecture.LmHeadName, StringComparison.Ordinal);

    static void Freeze(Linear linear)
    {
        linear.Weight?.requires_grad_(false);
        linear.Bias?.requires_grad_(false);
    }

    /// <summary>
    /// Merges every adapter into its layer's weight and removes it (PEFT merge_and_unload). An NF4 base is first
    /// dequantized to fp32 and stays a plain fp32 weight afterwards.
    /// </summary>
    public static void MergeAndUnload(IEnumerable<(string Name, Linear Linear)> modules)
    {
        foreach (var (_, linear) in modules)
        {
            if (linear.Adapter is not LoraAdapter adapter) continue;
            using var baseWeight = linear.Weight is not null ? linear.Weight.alias() : linear.Quantized!.Dequantize(ScalarType.Float32);
            var merged = adapter.MergeInto(baseWeight);
            linear.Weight?.Dispose();
            linear.Quantized?.Dispose();
            linear.Quantized = null;
            linear.Weight = merged;
            linear.Adapter = null;
            adapter.Dispose();
        }
    }
}
