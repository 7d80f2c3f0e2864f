using LayerPrune.Planning;
using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tokenization;

namespace LayerPrune.Cli.Commands;

/// <summary>`layerprune generate`: text generation from a (pruned) model.</summary>
public static class GenerateCommand
{
    /// <summary>The `generate` command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var prompt = new Option<string?>("--prompt", "-p")
            { Description = "Prompt text (tokenized with the model's tokenizer, BOS per tokenizer_config)" };
        var tokenIds = new Option<string?>("--token-ids")
        {
            Description = "Prompt as comma-separated token ids, e.g. 1,450,2 (needs no tokenizer; without one, ids are printed, not text)",
        };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Tokens to generate", DefaultValueFactory = _ => 64 };
        var greedy = new Option<bool>("--greedy") { Description = "Greedy decoding (the default unless --temperature is given)" };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature (> 0)" };
        var topP = new Option<double>("--top-p")
            { Description = "Nucleus sampling: keep the smallest set of tokens with probability ≥ P", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int>("--seed") { Description = "Sampling seed", DefaultValueFactory = _ => 0 };
        var noEos = new Option<bool>("--ignore-eos") { Description = "Keep generating after an end-of-sequence token" };
        var logitsFile = new Option<string?>("--logits")
            { Description = "Also write the prompt's logits [T, V] (fp32) and ids to this safetensors file (for comparisons, e.g. " +
            "tests/interop/compare_hf.py)" };
        var offload = new Option<bool>("--offload")
        {
            Description = "Stream layers from the checkpoint for every step (slow, same tokens); chosen automatically when the " +
                          "resident model does not fit",
        };
        var json = Cli.JsonOption();
        var cmd = new Command("generate", "Generate text with a KV cache; prints tokens/s")
            { model, prompt, tokenIds, maxNew, greedy, temperature, topP, seed, noEos, logitsFile, offload, json };
        return cmd.WithAction(p =>
        {
            string dir = Cli.ResolveModel(p, p.GetValue(model)!);
            string? text = p.GetValue(prompt), ids = p.GetValue(tokenIds);
            Cli.Require((text is null) != (ids is null), "give exactly one of --prompt TEXT or --token-ids 1,2,3");
            Cli.Require(p.GetValue(maxNew) >= 1, $"--max-new-tokens {p.GetValue(maxNew)}: must be at least 1");
            double? temp = p.GetValue(temperature);
            Cli.Require(temp is null || temp > 0, $"--temperature {temp}: must be > 0 (use --greedy for deterministic decoding)");
            Cli.Require(!(p.GetValue(greedy) && temp is not null), "--greedy and --temperature exclude each other");
            double tp = p.GetValue(topP);
            Cli.Require(tp is > 0 and <= 1, $"--top-p {tp}: must be in (0, 1]");
            // Token ids in need no tokenizer: without one, only ids are printed (text when a tokenizer exists).
            if (p.GetValue(logitsFile) is { } logitsPath) OutputFile.Check(logitsPath, "--logits");
            var tok = ids is null || TokenizerLoader.HasTokenizer(dir) ? Cli.LoadTokenizer(dir) : null;
            int[] promptIds = ids is not null ? ParseIds(ids) : tok!.Encode(text!).ToArray();
            using var m = Cli.LoadModel(p, dir, p.GetValue(offload), Workload.Generate, batchSize: 1,
                seqLen: promptIds.Length + p.GetValue(maxNew), canOffload: true);
            foreach (var id in promptIds) Cli.Require(id >= 0 && id < m.Config.VocabSize,
                $"--token-ids: id {id} is outside the vocabulary (0..{m.Config.VocabSize - 1})");
            var result = TextGenerator.Generate(m, promptIds, new GenerationOptions
            {
                MaxNewTokens = p.GetValue(maxNew), Greedy = temp is null, Temperature = temp ?? 1.0, TopP = tp, Seed = p.GetValue(seed),
                StopAtEos = !p.GetValue(noEos),
            });
            if (p.GetValue(logitsFile) is { } lf)
            {
                using var _ = TorchSharp.torch.no_grad();
                using var promptTensor = TorchSharp.torch.tensor(promptIds.Select(x => (long)x).ToArray(), [1, promptIds.Length]);
                using var logits = m.Forward(promptTensor);
                OutputFile.Write(lf, tmp => LayerPrune.Checkpoints.SafeTensorsWriter.Write(tmp, [
                    LayerPrune.Checkpoints.TensorToWrite.FromTensor("logits", logits[0].to(TorchSharp.torch.ScalarType.Float32)),
                    LayerPrune.Checkpoints.TensorToWrite.FromTensor("input_ids", promptTensor[0])]));
            }
            string? decoded = tok?.Decode(result.TokenIds);
            if (p.GetValue(json))
            {
                Cli.PrintJson(new JsonObject
                {
                    ["token_ids"] = new JsonArray(result.TokenIds.Select(i => (JsonNode?)i).ToArray()),
                    ["prompt_tokens"] = result.PromptLength, ["new_tokens"] = result.NewTokens,
                    ["text"] = decoded, ["completion"] = tok?.Decode(result.TokenIds.Skip(result.PromptLength)),
                    ["decode_tokens_per_second"] = result.DecodeTokensPerSecond, ["prefill_seconds"] = result.PrefillSeconds,
                    ["decode_cpu_seconds_per_token"] = result.DecodeCpuSecondsPerToken, ["offloaded"] = m.Offloaded,
                });
            }
            else
            {
                Console.Out.WriteLine(decoded ?? string.Join(",", result.TokenIds));
                Console.Error.WriteLine(
                    $"[{result.NewTokens} new tokens, {result.DecodeTokensPerSecond:F2} tokens/s decode " +
                    $"({result.DecodeCpuSecondsPerToken:F2} CPU s/token), prefill {result.PrefillSeconds * 1000:F0} ms, " +
                    $"{m.NumLayers} layers" +
                    $"{(m.Offloaded ? ", streamed" : "")}]");
            }
            return 0;
        });
    }

    static int[] ParseIds(string s)
    {
        try { return s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(); }
        catch (Exception e) when (e is FormatException or OverflowException)
        {
            throw LayerPruneException.Usage($"--token-ids '{s}': expected comma-separated integers");
        }
    }
}
