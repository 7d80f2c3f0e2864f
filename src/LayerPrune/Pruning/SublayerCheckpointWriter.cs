using System.Text.Json;
using System.Text.RegularExpressions;
using LayerPrune.Checkpoints;
using LayerPrune.Modeling.Families;
using static TorchSharp.torch;

namespace LayerPrune.Pruning;

/// <summary>What <see cref="SublayerCheckpointWriter.Write(Checkpoint, SublayerPlan, OutputFolder, long?)"/> wrote.</summary>
/// <param name="Layers">Layers of the written model.</param>
/// <param name="Note">One line on what had to be written differently (e.g. the FFN width as intermediate_size), or null.</param>
public sealed record SublayerWriteResult(int Layers, string? Note);

/// <summary>
/// Writes a sublayer-pruned checkpoint in the Nemotron-NAS layout (DeciLMForCausalLM, <see cref="NemotronNasConfig"/>):
/// layers keeping a sublayer renumbered 0…, a removed attention's tensors (input_layernorm included) and a removed MLP's
/// (post_attention_layernorm included) left out, other bytes copied verbatim. Llama, Mistral, Qwen2 and Nemotron-NAS inputs;
/// Qwen2's q/k/v biases need attention_bias, which in DeciLM also gives o_proj a bias: written as zeros (exact).
/// </summary>
public static partial class SublayerCheckpointWriter
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.([a-z_]+)\.(.+)$")]
    private static partial Regex LayerTensor();

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>Throws a one-line error when <paramref name="c"/>'s family has no Nemotron-NAS form.</summary>
    public static void CheckWritable(ModelConfig c)
    {
        if (c.Family == ArchitectureFamily.Phi)
            throw new LayerPruneException($"{c.Path}: a sublayer-pruned Phi-2 has no Nemotron-NAS (DeciLMForCausalLM) form, so " +
                "nothing is written: DeciLM blocks are sequential RMSNorm + SwiGLU without biases, Phi-2's are parallel (one " +
                "LayerNorm with bias feeds attention and a GELU MLP with biases) with partial RoPE, also with a branch removed; " +
                "evaluate its sublayer variants in memory (a sweep over units) or remove whole layers");
    }

    /// <summary>Writes <paramref name="source"/> without the plan's sublayers into <paramref name="outDir"/>.</summary>
    public static SublayerWriteResult Write(Checkpoint source, SublayerPlan plan, string outDir, bool force = false,
        long? maxShardBytes = null)
    {
        CheckWritable(source.Config);
        using var output = OutputFolder.Begin(outDir, force, nameof(outDir), source.Directory);
        return Write(source, plan, output, maxShardBytes);
    }

    /// <summary>Writes into <paramref name="output"/> (begun by the caller) and commits it.</summary>
    public static SublayerWriteResult Write(Checkpoint source, SublayerPlan plan, OutputFolder output, long? maxShardBytes = null)
    {
        var c = source.Config;
        CheckWritable(c);
        if (plan.OriginalLayers != c.NumLayers)
            throw new LayerPruneException($"plan is for {plan.OriginalLayers} layers but {source.Directory} has {c.NumLayers}");
        var kept = plan.KeptLayers(c);
        var newIndex = kept.Select((k, n) => (k, n)).ToDictionary(p => p.k.Layer, p => (p.n, p.k.Attention, p.k.Mlp));
        bool zeroOutputBias = c.AttentionBias;
        var tensors = new List<TensorToWrite>();
        var extra = new List<Tensor>();
        try
        {
            foreach (var name in source.WeightMap.Keys)
            {
                var m = LayerTensor().Match(name);
                if (!m.Success) { tensors.Add(TensorToWrite.FromFile(name, source.FileOf(name), name)); continue; }
                if (!newIndex.TryGetValue(int.Parse(m.Groups[1].Value), out var k)) continue;
                bool keep = m.Groups[2].Value switch
                {
                    "input_layernorm" or "self_attn" => k.Attention,
                    "post_attention_layernorm" or "mlp" => k.Mlp,
                    _ => true,
                };
                if (!keep) continue;
                string renamed = $"{Architecture.LayerPrefix(k.n)}{m.Groups[2].Value}.{m.Groups[3].Value}";
                tensors.Add(TensorToWrite.FromFile(renamed, source.FileOf(name), name));
                if (zeroOutputBias && m.Groups[2].Value == "self_attn" && m.Groups[3].Value == "o_proj.weight"
                    && !source.Contains(name.Replace(".weight", ".bias", StringComparison.Ordinal)))
                {
                    var info = source.Info(name);
                    using var w = source.Load(name);
                    var bias = zeros([info.Shape[0]], dtype: w.dtype);
                    extra.Add(bias);
                    tensors.Add(TensorToWrite.FromTensor(renamed.Replace(".weight", ".bias", StringComparison.Ordinal), bias));
                }
            }
            long shardLimit = maxShardBytes ?? (source.IsSharded ? source.Files.Values.Max(f => f.FileLength) : long.MaxValue);
            CheckpointPruner.WriteTensors(output, tensors, shardLimit, source.IsSharded || maxShardBytes is not null, null);
        }
        finally { foreach (var t in extra) t.Dispose(); }
        var (config, note) = NemotronNasConfig.Write(c, kept);
        File.WriteAllText(output.File("config.json"), config.ToJsonString(Indented));
        CheckpointPruner.CopySideFiles(source, output);
        var planJson = plan.ToJson(c);
        planJson["source_model"] = Path.GetFullPath(source.Directory);
        planJson["format"] = $"{NemotronNasConfig.ArchitectureName} (model_type {NemotronNasConfig.ModelType}, block_configs)";
        if (note is not null) planJson["note"] = note;
        File.WriteAllText(output.File("prune_plan.json"), planJson.ToJsonString(Indented));
        output.Commit();
        return new SublayerWriteResult(kept.Count, note);
    }
}
