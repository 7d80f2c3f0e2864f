using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace LayerPrune.Checkpoints;

/// <summary>A Hugging Face model folder: config.json plus model.safetensors or a sharded set with model.safetensors.index.json.</summary>
public sealed class Checkpoint : IDisposable
{
    /// <summary>The weights file of an unsharded checkpoint.</summary>
    public const string SingleFile = "model.safetensors";
    /// <summary>The shard index of a sharded checkpoint.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>The checkpoint folder.</summary>
    public string Directory { get; }
    /// <summary>The parsed config.json.</summary>
    public ModelConfig Config { get; }
    /// <summary>Shard file name (relative to the folder) → opened file; one entry when not sharded.</summary>
    public IReadOnlyDictionary<string, SafeTensorsFile> Files { get; }
    /// <summary>Tensor name → shard file name.</summary>
    public IReadOnlyDictionary<string, string> WeightMap { get; }
    /// <summary>Whether the weights come from a shard index.</summary>
    public bool IsSharded { get; }
    /// <summary>The shard index's "metadata" object; null when not sharded or absent.</summary>
    public JsonObject? IndexMetadata { get; }

    Checkpoint(string dir, ModelConfig config, Dictionary<string, SafeTensorsFile> files, Dictionary<string, string> map, bool sharded,
        JsonObject? indexMeta)
    { Directory = dir; Config = config; Files = files; WeightMap = map; IsSharded = sharded; IndexMetadata = indexMeta; }

    /// <summary>Opens and validates the Hugging Face checkpoint folder <paramref name="dir"/> (config.json + safetensors).</summary>
    public static Checkpoint Open(string dir)
    {
        var config = ModelConfig.Load(dir);
        string single = Path.Combine(dir, SingleFile), index = Path.Combine(dir, IndexFile);
        var files = new Dictionary<string, SafeTensorsFile>();
        var map = new Dictionary<string, string>();
        try
        {
            if (File.Exists(index))
            {
                var root = JsonInput.ReadObject(index);
                if (root["weight_map"] is not JsonObject wm || wm.Count == 0)
                    throw new LayerPruneException($"{index}: 'weight_map' is missing or empty");
                foreach (var (name, node) in wm)
                {
                    string shard = node is JsonValue v && v.TryGetValue<string>(out var s) ? s
                        : throw new LayerPruneException($"{index}: weight_map['{name}'] is not a file name");
                    // A shard must be a plain file name inside the model folder: no '..', no absolute path, no sub-folders.
                    if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or ".." || Path.IsPathRooted(shard))
                        throw new LayerPruneException($"{index}: shard '{shard}' (for '{name}') is not a file inside the model folder");
                    if (!files.ContainsKey(shard))
                    {
                        string shardPath = Path.Combine(dir, shard);
                        if (!File.Exists(shardPath)) throw new LayerPruneException($"{shardPath}: shard named by {IndexFile} is missing");
                        files[shard] = SafeTensorsFile.Open(shardPath);
                    }
                    if (!files[shard].Tensors.ContainsKey(name))
                        throw new LayerPruneException($"{Path.Combine(dir, shard)}: has no tensor '{name}' although {IndexFile} says so");
                    map[name] = shard;
                }
                return Validated(new Checkpoint(dir, config, files, map, true, root["metadata"] as JsonObject));
            }
            if (File.Exists(single))
            {
                var f = SafeTensorsFile.Open(single);
                files[SingleFile] = f;
                foreach (var name in f.Tensors.Keys) map[name] = SingleFile;
                return Validated(new Checkpoint(dir, config, files, map, false, null));
            }
        }
        catch { foreach (var f in files.Values) f.Dispose(); throw; }
        if (File.Exists(Path.Combine(dir, "pytorch_model.bin")) || File.Exists(Path.Combine(dir, "pytorch_model.bin.index.json")))
            throw new LayerPruneException(
                $"{dir}: only pickle checkpoints (pytorch_model.bin) found; LayerPrune never unpickles (it can run arbitrary code). " +
                "Convert to safetensors first, e.g. `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, " +
                "safe_serialization=True)`");
        throw new LayerPruneException($"{dir}: no {SingleFile} or {IndexFile} found");
    }

    /// <summary>Every tensor the architecture reads exists with the shape config.json implies (see
    /// <see cref="ArchitectureTensors"/>).</summary>
    static Checkpoint Validated(Checkpoint c)
    {
        ArchitectureTensors.Validate(c.Config, n => c.WeightMap.ContainsKey(n) ? c.Info(n) : null,
            n => n is null ? Path.Combine(c.Directory, c.IsSharded ? IndexFile : SingleFile) : c.FileOf(n).Path, c.WeightMap.Keys);
        return c;
    }

    /// <summary>Whether the checkpoint holds tensor <paramref name="name"/>.</summary>
    public bool Contains(string name) => WeightMap.ContainsKey(name);
    /// <summary>The header entry of tensor <paramref name="name"/>.</summary>
    public TensorInfo Info(string name) => Files[WeightMap[name]].Tensors[name];
    /// <summary>The file holding tensor <paramref name="name"/>.</summary>
    public SafeTensorsFile FileOf(string name) => Files[WeightMap[name]];

    /// <summary>The stored tensor (storage dtype, CPU, memory-mapped). Throws a clear error if the architecture needs a tensor the files
    /// lack.</summary>
    public Tensor Load(string name) =>
        WeightMap.TryGetValue(name, out var shard) ? Files[shard].Load(name)
        : throw new LayerPruneException(
            $"{Path.Combine(Directory, IsSharded ? IndexFile : SingleFile)}: tensor '{name}' required by {Config.ModelType} is missing");

    /// <summary>Bytes of all tensors as stored.</summary>
    public long StorageBytes => WeightMap.Keys.Sum(n => Info(n).ByteLength);
    /// <summary>Total number of elements over all tensors.</summary>
    public long ParameterCount => WeightMap.Keys.Sum(n => Info(n).NumElements);

    /// <summary>Unmaps every file region no loaded tensor views (e.g. after converting bf16 weights to fp32); see
    /// <see cref="SafeTensorsFile.ReleaseMappings"/>.</summary>
    public void ReleaseMappings() { foreach (var f in Files.Values) f.ReleaseMappings(); }

    /// <summary>Releases every opened file.</summary>
    public void Dispose() { foreach (var f in Files.Values) f.Dispose(); }
}
