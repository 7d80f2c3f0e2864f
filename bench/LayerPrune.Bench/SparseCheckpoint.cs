using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// A checkpoint of a model shape whose weight bytes are file holes (sparse files: no disk space, no write time), and the
/// random init that replaces them on the compute device once loaded. The GPU race builds a 7B (13.5 GB) or 70B (138 GB of
/// bf16, more than that machine's 64 GiB disk) shape this way: the real loaders read it (resident, offloaded or quantized
/// layer by layer) and <see cref="Randomize"/> fills what they built with HF's init, drawn on the device.
/// </summary>
public static class SparseCheckpoint
{
    /// <summary>
    /// Writes config.json (keys starting with '_' dropped) and bf16 safetensors shards of at most
    /// <paramref name="maxShardBytes"/> (with model.safetensors.index.json when there are several) into the new folder
    /// <paramref name="dir"/>; returns the config.
    /// </summary>
    public static ModelConfig Write(string shapeJson, string dir, long maxShardBytes = 5_000_000_000)
    {
        var raw = JsonNode.Parse(File.ReadAllText(shapeJson))!.AsObject();
        foreach (var key in raw.Select(kv => kv.Key).Where(k => k.StartsWith('_')).ToList())
            raw.Remove(key);
        var config = ModelConfig.Parse(raw.ToJsonString(), shapeJson);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), raw.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        var tensors = ArchitectureTensors.Expected(config)
            .Where(t => t.Required || (t.Name == "lm_head.weight" && !config.TieWordEmbeddings)).ToList();
        var shards = new List<List<ExpectedTensor>> { new() };
        long current = 0;
        foreach (var t in tensors)
        {
            long bytes = Bytes(t);
            if (current + bytes > maxShardBytes && shards[^1].Count > 0)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(t);
            current += bytes;
        }
        var weightMap = new JsonObject();
        long total = 0;
        for (int s = 0; s < shards.Count; s++)
        {
            string file = shards.Count == 1 ? Checkpoint.SingleFile : $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
            long offset = 0;
            foreach (var t in shards[s])
            {
                header[t.Name] = new JsonObject
                {
                    ["dtype"] = "BF16",
                    ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode?)d).ToArray()),
                    ["data_offsets"] = new JsonArray(offset, offset + Bytes(t)),
                };
                offset += Bytes(t);
                weightMap[t.Name] = file;
            }
            total += offset;
            var json = Encoding.UTF8.GetBytes(header.ToJsonString());
            int padded = (json.Length + 7) / 8 * 8;
            using var f = new FileStream(Path.Combine(dir, file), FileMode.CreateNew);
            f.Write(BitConverter.GetBytes((ulong)padded));
            f.Write(json);
            for (int i = json.Length; i < padded; i++) f.WriteByte((byte)' ');
            f.SetLength(8 + padded + offset);   // the data section is a hole: reads as zeros, occupies no blocks
        }
        if (shards.Count > 1)
            File.WriteAllText(Path.Combine(dir, Checkpoint.IndexFile), new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = total },
                ["weight_map"] = weightMap,
            }.ToJsonString());
        return config;
    }

    static long Bytes(ExpectedTensor t) => 2 * t.Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>
    /// HF _init_weights in place, on the tensors' own device: normal(0, 0.02) for matrices, ones for norm weights, zeros for
    /// biases. The tensors must be copies (another dtype or device than the checkpoint's), not views of its mapping.
    /// </summary>
    public static void Randomize(IEnumerable<(string Name, Tensor Tensor)> tensors, Generator generator)
    {
        using var _ = no_grad();
        foreach (var (name, t) in tensors)
        {
            if (t.dim() >= 2) t.normal_(0, 0.02, generator);
            else if (name.EndsWith(".bias", StringComparison.Ordinal)) t.zero_();
            else t.fill_(1);
        }
    }

    /// <summary>Randomizes every layer an offloaded <paramref name="model"/> builds, as it is built (before any use).</summary>
    public static void RandomizeEachLoadedLayer(CausalLM model, Generator generator) =>
        model.LayerLoaded = (i, layer) => Randomize(layer.StateDict(), generator);
}
