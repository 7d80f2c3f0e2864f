using LayerPrune.Gguf;

namespace LayerPrune.Hub;

/// <summary>
/// The one place where a model string becomes a Hugging Face checkpoint folder: an existing folder is used as is; a GGUF
/// file (by its magic, whatever its name: Ollama's blobs are GGUF files named sha256-…) is converted once into a cached
/// folder (<see cref="GgufImporter"/>); ORG/NAME[@REVISION] that is not a local path is looked up in the Hugging Face cache
/// and downloaded when missing (<see cref="HubCache"/>).
/// </summary>
public static class ModelSource
{
    /// <summary>Where GGUF inputs are converted: LAYERPRUNE_CACHE/gguf, else ~/.cache/layerprune/gguf.</summary>
    public static string DefaultConvertedCache() => Path.Combine(
        Environment.GetEnvironmentVariable("LAYERPRUNE_CACHE") is { Length: > 0 } c ? c
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "layerprune"), "gguf");

    /// <summary>True when <paramref name="path"/> is an existing file that starts with the GGUF magic.</summary>
    public static bool IsGguf(string path)
    {
        if (!File.Exists(path)) return false;
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            Span<byte> magic = stackalloc byte[4];
            return fs.ReadAtLeast(magic, 4, throwOnEndOfStream: false) == 4 && BitConverter.ToUInt32(magic) == GgufFile.Magic;
        }
        catch (IOException) { return false; }
        catch (UnauthorizedAccessException) { return false; }
    }

    /// <summary>
    /// The checkpoint folder for <paramref name="model"/>: a folder, a GGUF file (converted under
    /// <paramref name="convertedCache"/>, default <see cref="DefaultConvertedCache"/>) or a hub id (<paramref name="hub"/>).
    /// </summary>
    public static string Resolve(string model, HubOptions? hub = null, string? convertedCache = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (Directory.Exists(model)) return model;
        if (IsGguf(model)) return GgufImporter.Import(model, convertedCache ?? DefaultConvertedCache());
        if (File.Exists(model) && model.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            throw new LayerPruneException($"{model}: not a GGUF file (no GGUF magic at its start)");
        if (File.Exists(model))
            throw LayerPruneException.Usage($"{model}: not a model folder or a GGUF file");
        if (HubCache.Parse(model) is { } id) return HubCache.Resolve(id, hub);
        return model; // a missing folder: the checkpoint reader says so in its own words
    }
}
