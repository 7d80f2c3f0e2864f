using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Gguf;

namespace LayerPrune.Cli.Commands;

/// <summary>`layerprune export`: a Hugging Face checkpoint (pruned or not) → GGUF for llama.cpp, LLamaSharp, Ollama.</summary>
public static class ExportCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var format = new Option<string>("--format") { Description = "Output format (gguf)", DefaultValueFactory = _ => "gguf" };
        var output = new Option<string>("--out", "-o")
            { Description = "Output file, e.g. model.gguf (written atomically)", Required = true };
        var type = new Option<string>("--type")
            { Description = "Weight type: f32 | f16 | bf16 | q8_0 (norms and biases stay f32)", DefaultValueFactory = _ => "f16" };
        var force = new Option<bool>("--force") { Description = "Replace an existing --out file" };
        var ignoreWindow = new Option<bool>("--ignore-sliding-window")
            { Description = "Export a sliding-window model although llama.cpp will attend over the full context" };
        var name = new Option<string?>("--name") { Description = "general.name (default: the model folder's name)" };
        var json = Cli.JsonOption();
        var cmd = new Command("export", "Write a GGUF file llama.cpp, LLamaSharp and Ollama can run (Llama, Mistral, Qwen2, Phi-2)")
            { model, format, output, type, force, ignoreWindow, name, json };
        return cmd.WithAction(p =>
        {
            string fmt = p.GetValue(format)!;
            Cli.Require(fmt == "gguf", $"--format {fmt}: only gguf is supported");
            string t = p.GetValue(type)!;
            var outputType = t.ToLowerInvariant() switch
            {
                "f32" => GgufOutputType.F32, "f16" => GgufOutputType.F16, "bf16" => GgufOutputType.BF16, "q8_0" => GgufOutputType.Q8_0,
                _ => throw LayerPruneException.Usage($"--type {t}: expected f32, f16, bf16 or q8_0"),
            };
            var options = new GgufExportOptions
            {
                Type = outputType, Force = p.GetValue(force), IgnoreSlidingWindow = p.GetValue(ignoreWindow), Name = p.GetValue(name),
            };
            var r = GgufExporter.Export(Cli.ResolveModel(p, p.GetValue(model)!), p.GetValue(output)!, options);
            if (r.Note is not null) Console.Error.WriteLine($"note: {r.Note}");
            if (p.GetValue(json))
            {
                Cli.PrintJson(new JsonObject
                {
                    ["out"] = r.Path, ["architecture"] = r.Architecture, ["layers"] = r.Layers, ["tensors"] = r.Tensors,
                    ["type"] = t.ToLowerInvariant(), ["bytes"] = r.Bytes,
                });
            }
            else
            {
                string size = InfoCommand.Human(r.Bytes);
                Console.Out.WriteLine($"wrote {r.Path} ({r.Architecture}, {r.Layers} layers, {r.Tensors} tensors, {size})");
            }
            return 0;
        });
    }
}
