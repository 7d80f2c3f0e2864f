using System.Text.Json.Nodes;
using LayerPrune.Data;
using LayerPrune.Modeling;
using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Integration;

/// <summary>The embedded real model (samples/kjv-llama-16l) loaded once per test class, with its HF reference numbers.</summary>
public sealed class KjvModel : IDisposable
{
    public static string Dir => Path.Combine(TestPaths.Samples, "kjv-llama-16l");
    public static string Validation => Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt");
    public static string Train => Path.Combine(TestPaths.Samples, "data", "kjv", "train.txt");
    public static string Cloze => Path.Combine(TestPaths.Samples, "data", "kjv-cloze", "test.jsonl");

    public CausalLM Model { get; } = CausalLM.Load(Dir);
    public ITextTokenizer Tokenizer { get; } = TokenizerLoader.Load(Dir);
    public JsonObject Reference { get; } = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "reference", "kjv-llama-16l.json")))!.AsObject();

    /// <summary>The validation-loss protocol's chunks (256 tokens).</summary>
    public List<int[]> ValidationChunks(int count) => TokenChunks.FromLines(TextCorpus.Read(Validation), Tokenizer, 256, count);

    public void Dispose() => Model.Dispose();
}
