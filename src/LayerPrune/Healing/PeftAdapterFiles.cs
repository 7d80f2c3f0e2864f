using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Healing;

/// <summary>
/// The PEFT adapter format (adapter_model.safetensors + adapter_config.json), as written by
/// PeftModel.save_pretrained: tensors "base_model.model.{module}.lora_A.weight" [r, in] and ".lora_B.weight" [out, r]
/// (the adapter name "default" is stripped on save). Writing the safetensors file itself is done elsewhere.
/// </summary>
public static class PeftAdapterFiles
{
    const string Prefix = "base_model.model.";

    /// <summary>The PEFT key of lora_A of <paramref name="moduleName"/>.</summary>
    public static string KeyA(string moduleName) => $"{Prefix}{moduleName}.lora_A.weight";
    /// <summary>The PEFT key of lora_B of <paramref name="moduleName"/>.</summary>
    public static string KeyB(string moduleName) => $"{Prefix}{moduleName}.lora_B.weight";

    /// <summary>name → tensor for every adapter: detached fp32 CPU copies, owned by the caller.</summary>
    public static Dictionary<string, Tensor> ToTensors(IEnumerable<(string Name, LoraAdapter Adapter)> adapters)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, adapter) in adapters)
        {
            if (!result.TryAdd(KeyA(name), adapter.A.detach().to(ScalarType.Float32, CPU).clone()))
                throw new LayerPruneException($"PEFT adapter: module {name} appears twice");
            result.Add(KeyB(name), adapter.B.detach().to(ScalarType.Float32, CPU).clone());
        }
        return result;
    }

    /// <summary>adapter_config.json content (PEFT LoraConfig fields).</summary>
    public static JsonObject Config(LoraSettings settings, string baseModelNameOrPath)
    {
        var targets = new JsonArray();
        foreach (var t in settings.TargetModules) targets.Add(t);
        return new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModelNameOrPath,
            ["r"] = settings.R,
            ["lora_alpha"] = settings.Alpha == Math.Floor(settings.Alpha) && Math.Abs(settings.Alpha) < int.MaxValue
                ? JsonValue.Create((int)settings.Alpha) : JsonValue.Create(settings.Alpha),
            ["lora_dropout"] = settings.Dropout,
            ["target_modules"] = targets,
            ["bias"] = "none",
            ["fan_in_fan_out"] = false,
            ["use_rslora"] = settings.UseRsLora,
            ["inference_mode"] = true,
        };
    }

    /// <summary>Reads the LoraSettings back from adapter_config.json content.</summary>
    public static LoraSettings ReadConfig(JsonObject config)
    {
        string peftType = config["peft_type"]?.GetValue<string>() ?? "";
        if (peftType != "LORA") throw new LayerPruneException($"adapter_config.json: peft_type is \"{peftType}\", expected \"LORA\"");
        if (config["fan_in_fan_out"] is JsonValue f && f.GetValue<bool>())
            throw new LayerPruneException("adapter_config.json: fan_in_fan_out=true is not supported");
        if (config["bias"] is JsonValue b && b.GetValue<string>() != "none")
            throw new LayerPruneException($"adapter_config.json: bias \"{b.GetValue<string>()}\" is not supported (only \"none\")");
        int r = Number(config, "r") is double rv && rv == Math.Floor(rv) && rv >= 1 ? (int)rv
            : throw new LayerPruneException("adapter_config.json: r must be a positive integer");
        double alpha = Number(config, "lora_alpha") ?? 8; // PEFT default lora_alpha
        double dropout = Number(config, "lora_dropout") ?? 0;
        bool rs = config["use_rslora"] is JsonValue u && u.GetValue<bool>();
        var targets = config["target_modules"] switch
        {
            JsonArray arr => arr.Select(n => n!.GetValue<string>()).ToList(),
            // A string is a regular expression matched against the full module name (PEFT).
            JsonValue v => ["regex:" + v.GetValue<string>()],
            _ => throw new LayerPruneException("adapter_config.json: target_modules is missing"),
        };
        return new LoraSettings(targets, r, alpha, dropout, rs);
    }

    static double? Number(JsonObject config, string key) => config[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<double>(out var d) => d,
        JsonValue v when v.TryGetValue<string>(out var s)
            && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var d2) => d2,
        _ => throw new LayerPruneException($"adapter_config.json: \"{key}\" is not a number"),
    };

    static bool Targets(LoraSettings settings, string moduleName) =>
        settings.TargetModules is [var only] && only.StartsWith("regex:", StringComparison.Ordinal)
            ? Regex.IsMatch(moduleName, "^(?:" + only["regex:".Length..] + ")$")
            : settings.Matches(moduleName);

    /// <summary>
    /// Re-attaches saved adapters: for every targeted module, takes lora_A/lora_B from <paramref name="tensors"/>
    /// (copied; the dictionary is not consumed) with the config's alpha/dropout/rsLoRA, and freezes the base.
    /// Every targeted module must have both tensors, with matching shapes, and every lora tensor must be used.
    /// The adapters start with Training = false (no dropout).
    /// </summary>
    public static IReadOnlyList<(string Name, LoraAdapter Adapter)> Attach(
        IEnumerable<(string Name, Linear Linear)> modules, IReadOnlyDictionary<string, Tensor> tensors, JsonObject config)
    {
        var settings = ReadConfig(config);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var result = new List<(string, LoraAdapter)>();
        foreach (var (name, linear) in modules)
        {
            if (!Targets(settings, name)) continue;
            string ka = KeyA(name), kb = KeyB(name);
            if (!tensors.TryGetValue(ka, out var a) || !tensors.TryGetValue(kb, out var b))
                throw new LayerPruneException($"PEFT adapter: missing {ka} or {kb}");
            if (a.dim() != 2 || b.dim() != 2 || a.shape[0] != settings.R || b.shape[1] != settings.R
                || a.shape[1] != linear.InFeatures || b.shape[0] != linear.OutFeatures)
                throw new LayerPruneException(
                    $"PEFT adapter: {name}: lora_A [{string.Join(", ", a.shape)}] / lora_B [{string.Join(", ", b.shape)}] do not fit " +
                        $"r={settings.R} and layer [{linear.OutFeatures}, {linear.InFeatures}]");
            if (linear.Adapter is not null) throw new LayerPruneException($"PEFT adapter: module {name} already has an adapter");
            var device = linear.Weight?.device ?? (linear.Quantized as Nf4Weight)?.Packed.device ?? CPU;
            var adapter = new LoraAdapter(a.detach().to(ScalarType.Float32, device).clone(),
                b.detach().to(ScalarType.Float32, device).clone(),
                settings.Alpha, settings.Dropout, settings.UseRsLora) { Training = false }; // inference until told otherwise
            linear.Weight?.requires_grad_(false);
            linear.Bias?.requires_grad_(false);
            linear.Adapter = adapter;
            used.Add(ka);
            used.Add(kb);
            result.Add((name, adapter));
        }
        var unused = tensors.Keys.Where(k => k.Contains(".lora_", StringComparison.Ordinal) && !used.Contains(k)).ToList();
        if (unused.Count > 0)
            throw new LayerPruneException($"PEFT adapter: {unused.Count} tensors match no targeted module, e.g. {unused[0]}");
        if (result.Count == 0) throw new LayerPruneException("PEFT adapter: no module matches target_modules");
        return result;
    }
}
