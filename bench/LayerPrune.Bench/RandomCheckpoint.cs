using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// Writes a random-init checkpoint of a real model shape as HF <c>save_pretrained</c> lays it out: config.json,
/// bf16 safetensors sharded at <c>max_shard_size</c> (names model-0000i-of-0000n.safetensors, tensors in state-dict
/// order, a shard closed before the tensor that would overflow it) with model.safetensors.index.json, and the real
/// tokenizer of the same vocabulary from tests/fixtures/tokenizers where we have one. The shapes are in bench/shapes/.
/// Usage: <c>dotnet run -c Release --project bench/LayerPrune.Bench -- shape NAME --out DIR [--max-shard-gb 5]</c>.
/// </summary>
public static class RandomCheckpoint
{
    /// <summary>The shape names checked in under bench/shapes/ (file names without .json).</summary>
    public static IReadOnlyList<string> Shapes => Directory.GetFiles(ShapesDir(), "*.json")
        .Select(Path.GetFileNameWithoutExtension).Order().ToList()!;

    /// <summary>Writes shape <paramref name="name"/> into the new folder <paramref name="outDir"/>; returns the weight bytes.</summary>
    public static long Write(string name, string outDir, long maxShardBytes = 5_000_000_000, int seed = 0)
    {
        string shapePath = Path.Combine(ShapesDir(), name + ".json");
        if (!File.Exists(shapePath))
            throw new ArgumentException($"unknown shape '{name}' (known: {string.Join(", ", Shapes)})", nameof(name));
        var raw = JsonNode.Parse(File.ReadAllText(shapePath))!.AsObject();
        string? tokenizer = raw["_tokenizer"]?.GetValue<string>();
        foreach (var key in raw.Select(kv => kv.Key).Where(k => k.StartsWith('_')).ToList())
            raw.Remove(key);
        var config = ModelConfig.Parse(raw.ToJsonString(), shapePath);
        if (Directory.Exists(outDir))
            throw new IOException($"{outDir}: already exists");
        string temp = outDir + $".tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temp);
        File.WriteAllText(Path.Combine(temp, "config.json"), raw.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        long total = WriteWeights(config, temp, maxShardBytes, seed);
        if (tokenizer is not null)
            foreach (var f in Directory.GetFiles(Path.Combine(RepoRoot(), "tests", "fixtures", "tokenizers", tokenizer)))
                if (Path.GetFileName(f) != "reference.json")
                    File.Copy(f, Path.Combine(temp, Path.GetFileName(f)));
        Directory.Move(temp, outDir);
        return total;
    }

    /// <summary>
    /// The tensors save_pretrained writes for this config (every required one, lm_head unless tied) in state-dict
    /// order: embeddings, the layers in order, then the final norm and the head.
    /// </summary>
    static List<ExpectedTensor> StateDict(ModelConfig c) => ArchitectureTensors.Expected(c)
        .Where(t => t.Required || (t.Name == "lm_head.weight" && !c.TieWordEmbeddings))
        .OrderBy(t => t.Name.StartsWith("model.embed_tokens.", StringComparison.Ordinal) ? 0
            : t.Name.StartsWith("model.layers.", StringComparison.Ordinal) ? 1 : 2)
        .ToList();

    static long WriteWeights(ModelConfig c, string dir, long maxShardBytes, int seed)
    {
        var tensors = StateDict(c);
        // Shard plan first (bf16: 2 bytes per element), like transformers' shard_checkpoint.
        var shards = new List<List<ExpectedTensor>> { new() };
        long current = 0;
        foreach (var t in tensors)
        {
            long bytes = 2 * t.Shape.Aggregate(1L, (a, b) => a * b);
            if (current + bytes > maxShardBytes && shards[^1].Count > 0)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(t);
            current += bytes;
        }
        var generator = new TorchSharp.torch.Generator((ulong)seed);
        long total = 0;
        var weightMap = new JsonObject();
        for (int s = 0; s < shards.Count; s++)
        {
            string file = shards.Count == 1 ? "model.safetensors" : $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            var toWrite = shards[s].Select(t => new TensorToWrite(t.Name, "BF16", t.Shape, 2 * t.Shape.Aggregate(1L, (a, b) => a * b),
                stream => WriteRandom(stream, t, generator))).ToList();
            SafeTensorsWriter.Write(Path.Combine(dir, file), toWrite, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var t in toWrite)
            {
                weightMap[t.Name] = file;
                total += t.ByteLength;
            }
        }
        if (shards.Count > 1)
        {
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = total },
                ["weight_map"] = weightMap,
            };
            File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"),
                index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        }
        return total;
    }

    /// <summary>HF _init_weights: normal(0, 0.02) for matrices, ones for norm weights, zeros for biases.</summary>
    static void WriteRandom(Stream stream, ExpectedTensor t, TorchSharp.torch.Generator generator)
    {
        using var scope = NewDisposeScope();
        bool isNormOrBias = t.Shape.Length == 1;
        bool isBias = t.Name.EndsWith(".bias", StringComparison.Ordinal);
        Tensor x = !isNormOrBias ? normal(0, 0.02, t.Shape, generator: generator)
            : isBias ? zeros(t.Shape) : ones(t.Shape);
        stream.Write(x.to(ScalarType.BFloat16).contiguous().bytes);
    }

    static string ShapesDir() => Path.Combine(RepoRoot(), "bench", "shapes");

    static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LayerPrune.sln")))
                return d.FullName;
        throw new DirectoryNotFoundException("LayerPrune checkout not found above " + AppContext.BaseDirectory);
    }
}
