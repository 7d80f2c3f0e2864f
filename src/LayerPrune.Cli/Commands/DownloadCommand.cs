using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Hub;

namespace LayerPrune.Cli.Commands;

/// <summary>`download`: fills the Hugging Face cache with a hub model (config, tokenizer, safetensors) and prints its snapshot.</summary>
public static class DownloadCommand
{
    /// <summary>Builds the command.</summary>
    public static Command Create()
    {
        var id = new Argument<string>("model")
        {
            Description = "Hub model id ORG/NAME[@REVISION] (revision: branch, tag or commit; default main)",
        };
        var json = Cli.JsonOption();
        var cmd = new Command("download", "Download a Hugging Face Hub model into the HF cache (HF_HUB_CACHE, HF_HOME/hub or " +
            "~/.cache/huggingface/hub; shared with huggingface_hub) without running anything; resumes interrupted downloads and " +
            "verifies each LFS file's sha256. Every --model flag accepts the same id.") { id, json };
        return cmd.WithAction(p =>
        {
            string model = p.GetValue(id)!;
            var parsed = HubCache.Parse(model)
                ?? throw LayerPruneException.Usage($"{model}: not a hub model id (expected ORG/NAME or ORG/NAME@REVISION)");
            string snapshot = HubCache.Resolve(parsed, Cli.HubOptionsOf(p));
            if (p.GetValue(json)) Cli.PrintJson(new JsonObject { ["model"] = model, ["path"] = snapshot });
            else Console.Out.WriteLine(snapshot);
            return 0;
        });
    }
}
