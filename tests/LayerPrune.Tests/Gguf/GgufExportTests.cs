using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Modeling;
using LayerPrune.Tokenization;
using LLama.Native;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Gguf;

/// <summary>The kjv sample exported once (f32) for the tests of this class, in a temp folder.</summary>
public sealed class KjvGguf : IDisposable
{
    public string Tmp { get; } = Directory.CreateTempSubdirectory("lp-gguf-kjv-").FullName;
    public string F32 => Path.Combine(Tmp, "kjv-f32.gguf");
    public KjvGguf() => GgufExporter.Export(KjvModel.Dir, F32, new GgufExportOptions { Type = GgufOutputType.F32 });
    public void Dispose() => Directory.Delete(Tmp, recursive: true);
}

/// <summary>
/// Exported GGUF files run in llama.cpp (LLamaSharp 0.30.0) like LayerPrune's engine runs the HF checkpoint:
/// same greedy continuation and last-position logits within <see cref="LogitTolerance"/> (f32 export).
/// </summary>
public class GgufExportTests(KjvGguf kjv) : IClassFixture<KjvGguf>, IDisposable
{
    /// <summary>Max |llama.cpp − LayerPrune| over the prompt's last-position logits for an f32 export (issue 16).</summary>
    const double LogitTolerance = 1e-3;
    /// <summary>Greedy tokens compared (issue 16: at least 32).</summary>
    const int NewTokens = 32;
    const string KjvPrompt = "In the beginning God created";

    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    internal static (int[] Tokens, float[] PromptLogits) Ours(string dir, IReadOnlyList<int> prompt, int newTokens)
    {
        using var model = CausalLM.Load(dir);
        float[] logits;
        using (no_grad())
        using (var ids = tensor(prompt.Select(x => (long)x).ToArray(), [1, prompt.Count]))
        using (var l = model.Forward(ids, options: new ForwardOptions { LastPositionOnly = true }))
            logits = l[0, -1].to(ScalarType.Float32).data<float>().ToArray();
        var r = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = newTokens, Greedy = true, StopAtEos = false });
        return (r.TokenIds[r.PromptLength..], logits);
    }

    static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (int i = 0; i < a.Length; i++) m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    /// <summary>Runs both engines and asserts equal greedy tokens and logits within tolerance.</summary>
    internal static void AssertSameAsLlamaCpp(string hfDir, string gguf, IReadOnlyList<int> prompt, int newTokens, string label)
    {
        var (ours, ourLogits) = Ours(hfDir, prompt, newTokens);
        var (theirs, theirLogits) = LlamaCpp.Greedy(gguf, prompt, newTokens);
        double diff = MaxAbsDiff(ourLogits, theirLogits);
        Console.WriteLine($"{label}: max |Δlogit| = {diff:E2} (logit range ±{ourLogits.Max(Math.Abs):F2}); greedy {newTokens} tokens equal: {ours.SequenceEqual(theirs)}");
        Assert.Equal(ours, theirs);
        Assert.True(diff <= LogitTolerance, $"{label}: max |Δlogit| {diff:E3} > {LogitTolerance}");
    }

    [Fact]
    public void Kjv_F32_Export_Matches_LlamaCpp()
    {
        var tok = TokenizerLoader.Load(KjvModel.Dir);
        var prompt = tok.Encode(KjvPrompt);
        // llama.cpp's own SentencePiece tokenizer, from the exported vocabulary, gives the same ids.
        Assert.Equal(prompt, LlamaCpp.Tokenize(kjv.F32, KjvPrompt, addBos: true));
        AssertSameAsLlamaCpp(KjvModel.Dir, kjv.F32, prompt, NewTokens, "kjv f32");
    }

    [Fact]
    public void Kjv_Pruned_6_13_Export_Equals_Gguf_Prune_And_Matches_LlamaCpp()
    {
        string prunedDir = Path.Combine(_tmp, "kjv-pruned");
        var plan = PrunePlan.FromLayerSpec("6-13", 16);
        using (var ckpt = Checkpoint.Open(KjvModel.Dir)) CheckpointPruner.Write(ckpt, plan, prunedDir);
        string exported = Path.Combine(_tmp, "pruned-export.gguf"), pruned = Path.Combine(_tmp, "pruned-gguf.gguf");
        GgufExporter.Export(prunedDir, exported, new GgufExportOptions { Type = GgufOutputType.F32 });
        GgufPruner.Prune(kjv.F32, PrunePlan.FromJsonFile(Path.Combine(prunedDir, "prune_plan.json"), 16), pruned, force: false);

        var a = GgufFile.Open(exported);
        var b = GgufFile.Open(pruned);
        Assert.Equal(8, (int)b.Get("llama.block_count")!.AsLong());
        Assert.Equal(a.Tensors.Select(t => (t.Name, t.Type, string.Join(",", t.Dims))), b.Tensors.Select(t => (t.Name, t.Type, string.Join(",", t.Dims))));
        foreach (var (ta, tb) in a.Tensors.Zip(b.Tensors)) Assert.True(a.ReadTensorBytes(ta).AsSpan().SequenceEqual(b.ReadTensorBytes(tb)), ta.Name);
        // Metadata equal except the name (the pruned folder's).
        Assert.Equal(a.Metadata.Where(kv => kv.Key != "general.name").Select(kv => (kv.Key, Show(kv.Value))),
                     b.Metadata.Where(kv => kv.Key != "general.name").Select(kv => (kv.Key, Show(kv.Value))));

        var prompt = TokenizerLoader.Load(KjvModel.Dir).Encode(KjvPrompt);
        AssertSameAsLlamaCpp(prunedDir, pruned, prompt, NewTokens, "kjv pruned 6-13 (GGUF prune)");
    }

    static string Show(GgufValue v) => v.Value is Array arr ? $"{v.ElementType}:{string.Join("\u0001", arr.Cast<object>())}" : $"{v.Type}:{v}";

    [Theory]
    [InlineData("llama")]
    [InlineData("llama_pruned_3_6")]
    [InlineData("llama3rope")]
    [InlineData("qwen2")]
    [InlineData("qwen2_pruned_3_6")]
    [InlineData("phi")]
    [InlineData("phi_pruned_3_6")]
    public void Golden_F32_Export_Matches_LlamaCpp(string fixture)
    {
        string dir = Path.Combine(TestPaths.Fixtures, "golden", fixture), gguf = Path.Combine(_tmp, fixture + ".gguf");
        var r = GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        Assert.NotNull(r.Note); // no tokenizer: minimal vocabulary
        using var golden = new GoldenFixture(fixture.Replace("_pruned_3_6", ""));
        AssertSameAsLlamaCpp(dir, gguf, golden.TwoSamples()[0], NewTokens, $"golden {fixture} f32");
    }

    [Fact]
    public void Golden_Mistral_Export_Needs_Flag_And_Matches_LlamaCpp_Within_Its_Window()
    {
        string dir = Path.Combine(TestPaths.Fixtures, "golden", "mistral"), gguf = Path.Combine(_tmp, "mistral.gguf");
        var e = Assert.Throws<LayerPruneException>(() => GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32 }));
        Assert.Contains("sliding_window 8", e.Message);
        Assert.Contains("`IgnoreSlidingWindow`", e.Message); // the CLI shows it as --ignore-sliding-window (GgufCliTests)
        Assert.False(File.Exists(gguf));
        GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32, IgnoreSlidingWindow = true });
        using var golden = new GoldenFixture("mistral");
        // The fixture's window is 8 positions: prompt 4 + 4 new tokens stay inside it.
        AssertSameAsLlamaCpp(dir, gguf, golden.TwoSamples()[0][..4], 4, "golden mistral f32 (within the window)");
    }

    /// <summary>
    /// The golden Mistral export (f32, llama tensor set and q/k order) relabelled as llama.cpp architecture
    /// <paramref name="arch"/>: every "llama." key renamed, plus {arch}.attention.sliding_window = 8 and
    /// sliding_window_pattern = 0 (llama_hparams::set_swa_pattern(0): every layer slides) — what a Mistral export
    /// would write if that architecture honoured the window.
    /// </summary>
    string RelabelledMistral(string arch, params (string Key, float Value)[] extra)
    {
        string dir = Path.Combine(TestPaths.Fixtures, "golden", "mistral"), llama = Path.Combine(_tmp, "mistral-llama.gguf");
        if (!File.Exists(llama))
            GgufExporter.Export(dir, llama, new GgufExportOptions { Type = GgufOutputType.F32, IgnoreSlidingWindow = true });
        var src = GgufFile.Open(llama);
        var md = new List<KeyValuePair<string, GgufValue>>();
        foreach (var (key, value) in src.Metadata)
        {
            if (key == "general.architecture") md.Add(new(key, GgufValue.Str(arch)));
            else if (key.StartsWith("llama.", StringComparison.Ordinal)) md.Add(new(arch + key["llama".Length..], value));
            else md.Add(new(key, value));
        }
        md.Add(new($"{arch}.attention.sliding_window", GgufValue.U32(8)));
        md.Add(new($"{arch}.attention.sliding_window_pattern", GgufValue.U32(0)));
        foreach (var (key, value) in extra) md.Add(new($"{arch}.{key}", GgufValue.F32(value)));
        string path = Path.Combine(_tmp, $"mistral-as-{arch}.gguf");
        var tensors = src.Tensors.Select(t => new GgufTensorToWrite(t.Name, t.Dims, t.Type, s => src.CopyTensor(t, s))).ToList();
        GgufWriter.Write(path, md, tensors, force: true, src.Alignment);
        return path;
    }

    /// <summary>
    /// Why a Mistral export cannot carry its window: every architecture of the bundled llama.cpp that loads the Llama
    /// block's tensors (RMSNorm, q/k/v/o, SwiGLU gate/up/down) reads no sliding window (llama_model_n_swa = 0) even
    /// with {arch}.attention.sliding_window and sliding_window_pattern set. If one starts honouring it, this fails:
    /// export Mistral with that architecture then.
    /// </summary>
    [Theory]
    [InlineData("llama")]
    [InlineData("mistral3")]
    [InlineData("smollm3")]
    [InlineData("ernie4_5")]
    [InlineData("exaone")]
    [InlineData("nanbeige")]
    [InlineData("deci")]
    [InlineData("qwen2")]
    [InlineData("granite")]
    public void LlamaCpp_Architectures_That_Run_A_Llama_Block_Ignore_The_Sliding_Window(string arch)
    {
        // granite needs its scales: 1 for all but attention.scale, which replaces 1/sqrt(head_dim) (= 1/4).
        (string, float)[] extra = arch == "granite"
            ? [("logit_scale", 1), ("residual_scale", 1), ("embedding_scale", 1), ("attention.scale", 0.25f)]
            : [];
        Assert.Equal(0, LlamaCpp.SlidingWindow(RelabelledMistral(arch, extra), out _));
    }

    /// <summary>
    /// The architectures of the bundled llama.cpp that do read the window (its loader logs n_swa = 8 for the same file)
    /// run other blocks: loading the Llama tensor set fails on a tensor the Llama block does not have (post-norms, q/k
    /// norms, fused qkv). phi3 would run it (with gate/up fused), but its loader switches the window off.
    /// </summary>
    [Theory]
    [InlineData("gemma3", 8, "missing tensor 'blk.0.post_attention_norm.weight'")]
    [InlineData("exaone4", 8, "missing tensor 'blk.0.post_attention_norm.weight'")]
    [InlineData("olmo2", 8, "missing tensor 'blk.0.attn_q_norm.weight'")]
    [InlineData("plamo3", 8, "missing tensor 'blk.0.attn_qkv.weight'")]
    [InlineData("phi3", 0, "Phi SWA is currently disabled")]
    public void LlamaCpp_Architectures_That_Read_The_Window_Do_Not_Run_This_Llama_Block(string arch, int window, string reason)
    {
        string log = "";
        Assert.ThrowsAny<Exception>(() => LlamaCpp.SlidingWindow(RelabelledMistral(arch), out log));
        Assert.Matches($@"print_info: n_swa\s+= {window}\n", log); // printed after the hyper-parameters, before the tensors
        Assert.Contains(reason, log);
    }

    /// <summary>
    /// A window of the whole context never masks: such a Mistral exports without the flag and matches llama.cpp for
    /// 32 tokens after a prompt longer than the golden fixture's own window.
    /// </summary>
    [Fact]
    public void Mistral_With_A_Window_Of_The_Whole_Context_Exports_And_Matches_LlamaCpp()
    {
        string dir = Path.Combine(_tmp, "mistral-window-512");
        Directory.CreateDirectory(dir);
        string golden = Path.Combine(TestPaths.Fixtures, "golden", "mistral");
        File.Copy(Path.Combine(golden, "model.safetensors"), Path.Combine(dir, "model.safetensors"));
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(golden, "config.json")))!;
        config["sliding_window"] = config["max_position_embeddings"]!.GetValue<int>(); // 512
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        string gguf = Path.Combine(_tmp, "mistral-window-512.gguf");
        GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        using var fixture = new GoldenFixture("mistral");
        var prompt = fixture.TwoSamples()[0];
        Assert.True(prompt.Length > 8, "the prompt alone must be longer than the golden fixture's window of 8");
        AssertSameAsLlamaCpp(dir, gguf, prompt, NewTokens, "mistral, window = context (512) f32");
    }

    /// <summary>
    /// A random 2-layer Llama whose every matrix row is whole Q8_0 blocks (llama.cpp's quantizer refuses rows of
    /// 688 or 176 columns, as in kjv-llama-16l and the golden fixtures: "no tensor type fallback is defined for type q8_0").
    /// </summary>
    static string RandomLlama(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
             "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
             "tie_word_embeddings": false, "hidden_act": "silu"}
            """);
        using var gen = new TorchSharp.torch.Generator(1234);
        var tensors = new List<TensorToWrite>();
        void Add(string name, params long[] shape) => tensors.Add(TensorToWrite.FromTensor(name, randn(shape, generator: gen) * 0.1));
        Add("model.embed_tokens.weight", 320, 64);
        Add("lm_head.weight", 320, 64);
        Add("model.norm.weight", 64);
        for (int i = 0; i < 2; i++)
        {
            string p = $"model.layers.{i}.";
            Add(p + "input_layernorm.weight", 64);
            Add(p + "post_attention_layernorm.weight", 64);
            Add(p + "self_attn.q_proj.weight", 64, 64);
            Add(p + "self_attn.k_proj.weight", 32, 64);
            Add(p + "self_attn.v_proj.weight", 32, 64);
            Add(p + "self_attn.o_proj.weight", 64, 64);
            Add(p + "mlp.gate_proj.weight", 128, 64);
            Add(p + "mlp.up_proj.weight", 128, 64);
            Add(p + "mlp.down_proj.weight", 64, 128);
        }
        SafeTensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        return dir;
    }

    [Fact]
    public void Q8_0_Export_Is_Byte_Identical_To_LlamaCpp_Quantization()
    {
        string dir = RandomLlama(Path.Combine(_tmp, "random-llama"));
        string f32 = Path.Combine(_tmp, "f32.gguf"), ours = Path.Combine(_tmp, "q8_0.gguf"), theirs = Path.Combine(_tmp, "q8_0-llamacpp.gguf");
        GgufExporter.Export(dir, f32, new GgufExportOptions { Type = GgufOutputType.F32 });
        GgufExporter.Export(dir, ours, new GgufExportOptions { Type = GgufOutputType.Q8_0 });
        LlamaCpp.Quantize(f32, theirs, LLamaFtype.MOSTLY_Q8_0);
        var a = GgufFile.Open(ours);
        var b = GgufFile.Open(theirs);
        var bt = b.Tensors.ToDictionary(t => t.Name);
        Assert.Equal(a.Tensors.Select(t => t.Name).Order(), bt.Keys.Order());
        Assert.Equal(16, a.Tensors.Count(t => t.Type == GgmlType.Q8_0)); // every matrix
        foreach (var t in a.Tensors)
        {
            Assert.True(t.Type == bt[t.Name].Type, $"{t.Name}: ours {t.Type}, llama.cpp {bt[t.Name].Type}");
            Assert.True(a.ReadTensorBytes(t).AsSpan().SequenceEqual(b.ReadTensorBytes(bt[t.Name])), $"{t.Name} ({t.Type}) bytes differ");
        }
        Assert.Equal(7, b.Get("general.file_type")!.AsLong());
        Assert.Equal(7, a.Get("general.file_type")!.AsLong());
        int[] prompt = [1, 17, 42, 99, 5, 260];
        var (mine, _) = LlamaCpp.Greedy(ours, prompt, NewTokens);
        var (reference, _) = LlamaCpp.Greedy(theirs, prompt, NewTokens);
        Assert.Equal(reference, mine);
    }

    [Fact]
    public void Kjv_Q8_0_Export_Falls_Back_To_F16_For_Partial_Blocks_And_Runs_In_LlamaCpp()
    {
        string gguf = Path.Combine(_tmp, "kjv-q8_0.gguf");
        var r = GgufExporter.Export(KjvModel.Dir, gguf, new GgufExportOptions { Type = GgufOutputType.Q8_0 });
        var f = GgufFile.Open(gguf);
        Assert.All(f.Tensors.Where(t => t.Name.EndsWith("ffn_down.weight")), t => Assert.Equal(GgmlType.F16, t.Type)); // 688 columns
        Assert.All(f.Tensors.Where(t => t.Name.EndsWith("attn_q.weight")), t => Assert.Equal(GgmlType.Q8_0, t.Type));
        var prompt = TokenizerLoader.Load(KjvModel.Dir).Encode(KjvPrompt);
        var (q8, _) = LlamaCpp.Greedy(gguf, prompt, NewTokens);
        var (full, _) = LlamaCpp.Greedy(kjv.F32, prompt, NewTokens);
        int same = q8.Zip(full).TakeWhile(p => p.First == p.Second).Count();
        Console.WriteLine($"kjv q8_0 ({InfoCommandSize(r.Bytes)}): greedy agrees with f32 for the first {same} of {NewTokens} tokens");
        Assert.True(same >= 8, $"q8_0 greedy diverges from f32 after {same} tokens");
    }

    /// <summary>
    /// kjv's ffn_down rows have 688 columns (not whole Q8_0 blocks of 32): llama.cpp's quantizer refuses q8_0 for them
    /// ("no tensor type fallback is defined for type q8_0"; its fallbacks exist for k- and i-quants only). Our q8_0
    /// export stores them as F16, which is exactly llama.cpp's own quantization of our f32 export with
    /// `llama-quantize --tensor-type` overrides to f16 for those matrices: every tensor byte-identical.
    /// </summary>
    [Fact]
    public void Kjv_Q8_0_Export_Is_Byte_Identical_To_LlamaCpp_Quantization_With_F16_For_Partial_Blocks()
    {
        var prompt = TokenizerLoader.Load(KjvModel.Dir).Encode(KjvPrompt);
        var (f16, q8) = AssertQ8_0IsLlamaCppQuantization(KjvModel.Dir, kjv.F32, prompt, ignoreSlidingWindow: false);
        Assert.Equal(16, f16); // blk.0..15.ffn_down.weight
        Assert.Equal(16 * 6 + 2, q8); // q, k, v, o, gate, up per layer, token_embd, output
    }

    /// <summary>The same for the golden fixtures (176-column down projections; Qwen2 biases, Phi, llama3 rope_freqs).</summary>
    [Theory]
    [InlineData("llama")]
    [InlineData("llama3rope")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    [InlineData("phi")]
    public void Golden_Q8_0_Export_Is_Byte_Identical_To_LlamaCpp_Quantization_With_F16_For_Partial_Blocks(string fixture)
    {
        string dir = Path.Combine(TestPaths.Fixtures, "golden", fixture), f32 = Path.Combine(_tmp, fixture + "-f32.gguf");
        GgufExporter.Export(dir, f32, new GgufExportOptions { Type = GgufOutputType.F32, IgnoreSlidingWindow = fixture == "mistral" });
        using var golden = new GoldenFixture(fixture);
        var (f16, _) = AssertQ8_0IsLlamaCppQuantization(dir, f32, golden.TwoSamples()[0][..4], ignoreSlidingWindow: fixture == "mistral");
        Assert.Equal(8, f16); // one down projection (ffn_down / fc2: 176 columns) per layer
    }

    /// <summary>
    /// Our q8_0 export of <paramref name="dir"/> against llama.cpp's quantization of our f32 export
    /// <paramref name="f32"/>: llama.cpp refuses plain q8_0 (partial blocks), and with f16 overrides for exactly the
    /// matrices whose rows are not whole blocks (read from its input, not from our output) every tensor is
    /// byte-identical and llama.cpp's greedy continuation on both files is the same. Returns the F16 and Q8_0 counts.
    /// </summary>
    (int F16, int Q8) AssertQ8_0IsLlamaCppQuantization(string dir, string f32, IReadOnlyList<int> prompt, bool ignoreSlidingWindow)
    {
        string name = Path.GetFileName(dir);
        string ours = Path.Combine(_tmp, $"{name}-q8_0.gguf"), theirs = Path.Combine(_tmp, $"{name}-q8_0-llamacpp.gguf");
        GgufExporter.Export(dir, ours, new GgufExportOptions { Type = GgufOutputType.Q8_0, IgnoreSlidingWindow = ignoreSlidingWindow });
        Assert.False(LlamaCpp.Quantize(f32, Path.Combine(_tmp, $"{name}-refused.gguf"), LLamaFtype.MOSTLY_Q8_0, []));
        var partial = GgufFile.Open(f32).Tensors.Where(t => t.Dims.Length >= 2 && t.Dims[0] % GgufExporter.Q8Block != 0)
            .Select(t => ($"^{System.Text.RegularExpressions.Regex.Escape(t.Name)}$", GGMLType.GGML_TYPE_F16)).ToList();
        Assert.NotEmpty(partial);
        Assert.True(LlamaCpp.Quantize(f32, theirs, LLamaFtype.MOSTLY_Q8_0, partial));
        var a = GgufFile.Open(ours);
        var b = GgufFile.Open(theirs);
        var bt = b.Tensors.ToDictionary(t => t.Name);
        Assert.Equal(a.Tensors.Select(t => t.Name).Order(), bt.Keys.Order());
        Assert.Equal(partial.Count, a.Tensors.Count(t => t.Type == GgmlType.F16));
        foreach (var t in a.Tensors)
        {
            Assert.True(t.Type == bt[t.Name].Type, $"{t.Name}: ours {t.Type}, llama.cpp {bt[t.Name].Type}");
            Assert.True(a.ReadTensorBytes(t).AsSpan().SequenceEqual(b.ReadTensorBytes(bt[t.Name])), $"{t.Name} ({t.Type}) bytes differ");
        }
        Assert.Equal(7, a.Get("general.file_type")!.AsLong());
        Assert.Equal(7, b.Get("general.file_type")!.AsLong());
        var (mine, _) = LlamaCpp.Greedy(ours, prompt, NewTokens);
        var (reference, _) = LlamaCpp.Greedy(theirs, prompt, NewTokens);
        Assert.Equal(reference, mine);
        return (partial.Count, a.Tensors.Count(t => t.Type == GgmlType.Q8_0));
    }

    static string InfoCommandSize(long bytes) => $"{bytes / 1048576.0:F1} MiB";

    /// <summary>16-bit exports: llama.cpp's logits stay within these bounds of LayerPrune's f32 logits (measured, golden llama).</summary>
    [Theory]
    [InlineData(GgufOutputType.F16, 2e-3)]
    [InlineData(GgufOutputType.BF16, 2e-2)]
    public void Golden_16bit_Export_Runs_In_LlamaCpp(GgufOutputType type, double tolerance)
    {
        string dir = Path.Combine(TestPaths.Fixtures, "golden", "llama"), gguf = Path.Combine(_tmp, $"llama-{type}.gguf");
        GgufExporter.Export(dir, gguf, new GgufExportOptions { Type = type });
        var f = GgufFile.Open(gguf);
        var expected = type == GgufOutputType.F16 ? GgmlType.F16 : GgmlType.BF16;
        Assert.All(f.Tensors, t => Assert.Equal(t.Dims.Length == 1 ? GgmlType.F32 : expected, t.Type));
        using var golden = new GoldenFixture("llama");
        var prompt = golden.TwoSamples()[0];
        var (_, ourLogits) = Ours(dir, prompt, 1);
        var (_, theirLogits) = LlamaCpp.Greedy(gguf, prompt, 1);
        double diff = MaxAbsDiff(ourLogits, theirLogits);
        Console.WriteLine($"golden llama {type}: max |Δlogit| vs f32 engine = {diff:E2}");
        Assert.True(diff <= tolerance, $"{type}: max |Δlogit| {diff:E3} > {tolerance}");
    }

    /// <summary>The README's LLamaSharp snippet (StatelessExecutor, greedy) continues the prompt with LayerPrune's greedy text.</summary>
    [Fact]
    public async Task Readme_LLamaSharp_Snippet_Generates_Our_Greedy_Text()
    {
        LlamaCpp.Init();
        var p = new LLama.Common.ModelParams(kjv.F32) { ContextSize = 512, Threads = 1, BatchThreads = 1 };
        using var weights = LLama.LLamaWeights.LoadFromFile(p);
        var executor = new LLama.StatelessExecutor(weights, p);
        var greedy = new LLama.Common.InferenceParams { MaxTokens = 32, SamplingPipeline = new LLama.Sampling.GreedySamplingPipeline() };
        var text = new System.Text.StringBuilder();
        await foreach (var piece in executor.InferAsync(KjvPrompt, greedy)) text.Append(piece);

        var tok = TokenizerLoader.Load(KjvModel.Dir);
        var (ours, _) = Ours(KjvModel.Dir, tok.Encode(KjvPrompt), 32);
        Console.WriteLine($"LLamaSharp: '{text}'; ours: '{tok.Decode(ours)}'");
        Assert.Equal(tok.Decode(ours), text.ToString());
    }
}
