using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Gguf;

/// <summary>
/// Byte-level BPE tokenizers exported to tokenizer.ggml.* (tokens, types, merges, pre-tokenizer name) tokenize in
/// llama.cpp exactly as LayerPrune's tokenizer does (a vocabulary-only GGUF: metadata, no tensors).
/// </summary>
public class GgufTokenizerTests : IDisposable
{
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-tok-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    const string Text = "Hello world! 123 4567 don't  stop\n\n    indented\tÄpfel ümlaut 日本語 😀 <|endoftext|>x";

    [Theory]
    [InlineData("qwen2", "qwen2", 151646, "qwen2")]
    [InlineData("gpt2", "phi", 50257, "gpt-2")]
    public void Bpe_Vocabulary_Tokenizes_Like_LayerPrune_In_LlamaCpp(string tokenizer, string modelType, int vocab, string pre)
    {
        string dir = Path.Combine(TestPaths.Fixtures, "tokenizers", tokenizer);
        var config = ModelConfig.Parse($$"""
            {"model_type": "{{modelType}}", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
             "num_attention_heads": 4, "vocab_size": {{vocab}}, "max_position_embeddings": 128}
            """, Path.Combine(_tmp, "config.json"));
        var metadata = new List<KeyValuePair<string, GgufValue>> { new("general.architecture", GgufValue.Str(GgufTensorNames.Architecture(config.Family))) };
        metadata.AddRange(GgufTensorNames.Hyperparameters(config, ignoreSlidingWindow: false));
        metadata.AddRange(GgufTokenizer.Metadata(dir, config, out _));
        string gguf = Path.Combine(_tmp, tokenizer + ".gguf");
        GgufWriter.Write(gguf, metadata, []);

        var f = GgufFile.Open(gguf);
        Assert.Equal("gpt2", f.Get("tokenizer.ggml.model")!.Value);
        Assert.Equal(pre, f.Get("tokenizer.ggml.pre")!.Value);
        Assert.Equal(vocab, f.Get("tokenizer.ggml.tokens")!.Count);
        Assert.Equal(File.ReadLines(Path.Combine(dir, "merges.txt")).Count(l => l.Length > 0 && !l.StartsWith("#version")),
                     f.Get("tokenizer.ggml.merges")!.Count);

        var ours = TokenizerLoader.Load(dir).EncodeRaw(Text);
        // HF splits added special tokens out of the text: llama.cpp's parse_special does the same.
        var theirs = LlamaCpp.Tokenize(gguf, Text, addBos: false, special: true, vocabOnly: true);
        Assert.Equal(ours, theirs);
    }
}

/// <summary>The GGUF writer is atomic: a failure mid-write leaves neither a partial file nor a temp file, and an existing output intact.</summary>
public class GgufWriterTests : IDisposable
{
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-gguf-w-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    [Fact]
    public void Failed_Write_Leaves_Existing_Output_And_No_Temp_File()
    {
        string path = Path.Combine(_tmp, "out.gguf");
        var meta = new List<KeyValuePair<string, GgufValue>> { new("general.architecture", GgufValue.Str("llama")) };
        var ok = new GgufTensorToWrite("a", [4], GgmlType.F32, s => s.Write(new byte[16]));
        GgufWriter.Write(path, meta, [ok]);
        byte[] before = File.ReadAllBytes(path);
        var failing = new GgufTensorToWrite("b", [4], GgmlType.F32, s => { s.Write(new byte[8]); throw new IOException("disk full"); });
        Assert.Throws<IOException>(() => GgufWriter.Write(path, meta, [ok, failing], force: true));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["out.gguf"], Directory.GetFiles(_tmp).Select(Path.GetFileName));
        var f = GgufFile.Open(path);
        Assert.Equal(new byte[16], f.ReadTensorBytes(f.Tensors.Single()));
        Assert.Equal(0, f.DataStart % GgufFile.DefaultAlignment);
    }
}
