using System.Text.RegularExpressions;

namespace LayerPrune.Checkpoints;

/// <summary>A tensor the model code reads: its HF name, the shape config.json implies, and whether it must exist.</summary>
public sealed record ExpectedTensor(string Name, long[] Shape, bool Required);

/// <summary>
/// The tensors each supported architecture loads (names as in HF modeling_llama.py / modeling_phi.py state dicts).
/// <see cref="Checkpoint.Open"/> checks them up front, so a checkpoint that lacks a tensor or stores one with the wrong
/// shape fails with a message naming the tensor and the file, before any command does work.
/// </summary>
public static partial class ArchitectureTensors
{
    [GeneratedRegex(@"^model\.layers\.(\d+)\.")]
    private static partial Regex LayerPrefix();

    public static IEnumerable<ExpectedTensor> Expected(ModelConfig c)
    {
        long h = c.HiddenSize, v = c.VocabSize, inter = c.IntermediateSize;
        long q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        bool phi = c.Family == ArchitectureFamily.Phi;
        yield return new("model.embed_tokens.weight", [v, h], true);
        if (phi)
        {
            yield return new("model.final_layernorm.weight", [h], true);
            yield return new("model.final_layernorm.bias", [h], true);
            yield return new("lm_head.weight", [v, h], true);
            yield return new("lm_head.bias", [v], true);
        }
        else
        {
            yield return new("model.norm.weight", [h], true);
            // Tied or absent lm_head: CausalLM shares embed_tokens (HF tie_word_embeddings).
            yield return new("lm_head.weight", [v, h], false);
        }
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            IEnumerable<ExpectedTensor> Lin(string name, long outF, long inF, bool bias, bool biasRequired)
            {
                yield return new($"{p}{name}.weight", [outF, inF], true);
                yield return new($"{p}{name}.bias", [outF], bias && biasRequired);
            }
            yield return new($"{p}input_layernorm.weight", [h], true);
            if (phi)
            {
                yield return new($"{p}input_layernorm.bias", [h], true);
                foreach (var t in Lin("self_attn.q_proj", q, h, true, true)
                             .Concat(Lin("self_attn.k_proj", kv, h, true, true)).Concat(Lin("self_attn.v_proj", kv, h, true, true))
                             .Concat(Lin("self_attn.dense", h, q, true, true))
                             .Concat(Lin("mlp.fc1", inter, h, true, true)).Concat(Lin("mlp.fc2", h, inter, true, true)))
                    yield return t;
            }
            else
            {
                yield return new($"{p}post_attention_layernorm.weight", [h], true);
                foreach (var t in Lin("self_attn.q_proj", q, h, true, c.AttentionBias)
                             .Concat(Lin("self_attn.k_proj", kv, h, true, c.AttentionBias)).Concat(Lin("self_attn.v_proj", kv, h, true, c.AttentionBias))
                             .Concat(Lin("self_attn.o_proj", h, q, true, false))
                             .Concat(Lin("mlp.gate_proj", inter, h, true, c.MlpBias)).Concat(Lin("mlp.up_proj", inter, h, true, c.MlpBias))
                             .Concat(Lin("mlp.down_proj", h, inter, true, c.MlpBias)))
                    yield return t;
            }
        }
    }

    /// <summary>
    /// Throws for the first required tensor that is missing, any expected tensor stored with another shape, or a
    /// layer tensor beyond num_hidden_layers. <paramref name="fileOf"/> names the file a tensor is (or should be) in.
    /// </summary>
    public static void Validate(ModelConfig c, Func<string, TensorInfo?> lookup, Func<string?, string> fileOf, IEnumerable<string> names)
    {
        foreach (var e in Expected(c))
        {
            var info = lookup(e.Name);
            if (info is null)
            {
                if (e.Required) throw new LayerPruneException($"{fileOf(null)}: tensor '{e.Name}' required by {c.ModelType} (config.json) is missing");
                continue;
            }
            if (!info.Shape.SequenceEqual(e.Shape))
                throw new LayerPruneException($"{fileOf(e.Name)}: tensor '{e.Name}' has shape [{string.Join(", ", info.Shape)}] but config.json implies [{string.Join(", ", e.Shape)}]");
            if (info.Dtype is not ("F32" or "F16" or "BF16" or "F64"))
                throw new LayerPruneException($"{fileOf(e.Name)}: tensor '{e.Name}' is stored as {info.Dtype}; only floating-point weights (F32, F16, BF16, F64) are supported");
        }
        foreach (var name in names)
            if (LayerPrefix().Match(name) is { Success: true } m && (!int.TryParse(m.Groups[1].Value, out int layer) || layer >= c.NumLayers))
                throw new LayerPruneException($"{fileOf(name)}: tensor '{name}' belongs to a layer beyond num_hidden_layers = {c.NumLayers} (config.json)");
    }
}
