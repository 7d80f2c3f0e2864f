using System.Text.RegularExpressions;
using LayerPrune.Pruning;

namespace LayerPrune.Gguf;

/// <summary>What a GGUF prune wrote.</summary>
public sealed record GgufPruneResult(string Path, int OriginalLayers, int KeptLayers, int Tensors, long Bytes);

/// <summary>
/// Removes decoder blocks from a GGUF file of any tensor type: blk.N tensors of removed layers are dropped, kept ones
/// renumbered 0… in order with their bytes copied verbatim; {arch}.block_count and every per-layer metadata array
/// ({arch}.* arrays of block_count entries, e.g. per-layer head counts) are cut to the kept layers.
/// </summary>
public static partial class GgufPruner
{
    [GeneratedRegex(@"^blk\.(\d+)\.(.+)$")]
    private static partial Regex BlockTensor();

    /// <summary>Writes <paramref name="outPath"/> from <paramref name="inPath"/> without the layers of <paramref name="plan"/>.</summary>
    public static GgufPruneResult Prune(string inPath, PrunePlan plan, string outPath, bool force)
    {
        var src = GgufFile.Open(inPath);
        string arch = src.Architecture;
        int layers = src.BlockCount;
        if (plan.OriginalLayers != layers)
            throw LayerPruneException.Usage($"{inPath}: the plan is for {plan.OriginalLayers} layers but {arch}.block_count is {layers}");
        if (OutputFolder.Canonical(outPath) == OutputFolder.Canonical(inPath))
            throw LayerPruneException.Invalid(nameof(outPath), outPath, "must not be the input file");
        var kept = plan.Kept;
        var newIndex = new Dictionary<int, int>();
        for (int i = 0; i < kept.Length; i++) newIndex[kept[i]] = i;

        var metadata = new List<KeyValuePair<string, GgufValue>>();
        foreach (var (key, value) in src.Metadata)
        {
            if (key == $"{arch}.block_count")
                metadata.Add(new(key, new GgufValue(value.Type, Convert.ChangeType(kept.Length, value.Value.GetType()))));
            else if (key.StartsWith(arch + ".", StringComparison.Ordinal) && value.Type == GgufValueType.Array && value.Count == layers)
            {
                var items = (Array)value.Value;
                var cut = Array.CreateInstance(items.GetType().GetElementType()!, kept.Length);
                for (int i = 0; i < kept.Length; i++) cut.SetValue(items.GetValue(kept[i]), i);
                metadata.Add(new(key, GgufValue.Array(value.ElementType, cut)));
            }
            else metadata.Add(new(key, value));
        }

        var tensors = new List<GgufTensorToWrite>();
        foreach (var t in src.Tensors)
        {
            string name = t.Name;
            if (BlockTensor().Match(t.Name) is { Success: true } m)
            {
                int layer = int.Parse(m.Groups[1].Value);
                if (layer >= layers)
                    throw new LayerPruneException(
                        $"{inPath}: tensor '{GgufFile.Quote(t.Name)}' belongs to a block beyond {arch}.block_count = {layers}");
                if (!newIndex.TryGetValue(layer, out int n)) continue;
                name = $"blk.{n}.{m.Groups[2].Value}";
            }
            var info = t;
            tensors.Add(new GgufTensorToWrite(name, t.Dims, t.Type, s => src.CopyTensor(info, s)));
        }
        GgufWriter.Write(outPath, metadata, tensors, force, src.Alignment);
        return new GgufPruneResult(Path.GetFullPath(outPath), layers, kept.Length, tensors.Count, new FileInfo(outPath).Length);
    }
}
