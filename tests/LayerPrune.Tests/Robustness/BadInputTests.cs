using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// Every row builds one bad input in a temp folder (a corrupted copy of tests/fixtures/golden/llama, a bad dataset or
/// bad flags), runs the CLI as a child process and asserts: the exit code (2 usage, 1 failure), that stderr is exactly
/// one line "error: …" containing the expected fragments, and that no stack frame ("   at ") is printed.
/// docs/robustness.md is generated from these rows: set LAYERPRUNE_ROBUSTNESS_DOC=FOLDER to write one table row per case.
/// </summary>
public class BadInputTests
{
    /// <summary>A case: what is wrong, how to build it (returns the CLI args), expected exit code and message fragments.</summary>
    public sealed record Case(string Input, Func<TempDir, string[]> Build, int Exit, params string[] Fragments);

    static string Golden => Path.Combine(TestPaths.Fixtures, "golden", "llama");
    static string Kjv => Path.Combine(TestPaths.Samples, "kjv-llama-16l");
    const string Layer3Down = "model.layers.3.mlp.down_proj.weight";

    /// <summary>A copy of the golden 8-layer llama (optionally with the KJV SentencePiece tokenizer files).</summary>
    static string Model(TempDir t, bool tokenizer = false)
    {
        string d = t["model"];
        if (!Directory.Exists(d))
        {
            Directory.CreateDirectory(d);
            foreach (var f in Directory.EnumerateFiles(Golden).Where(f => !f.EndsWith("reference.safetensors")))
                File.Copy(f, Path.Combine(d, Path.GetFileName(f)));
        }
        if (tokenizer)
            foreach (var f in new[] { "tokenizer.model", "tokenizer_config.json" }) File.Copy(Path.Combine(Kjv, f), Path.Combine(d, f), true);
        return d;
    }

    static string[] Info(string dir) => ["info", "-m", dir];
    static string[] Prune(string dir, TempDir t, params string[] more) => ["prune", "-m", dir, "-o", t["out"], .. more];
    static string[] Generate(string dir) => ["generate", "-m", dir, "-p", "In the beginning", "-n", "2"];

    static string EditConfig(TempDir t, Action<JsonObject> edit)
    {
        string d = Model(t), p = Path.Combine(d, "config.json");
        var c = JsonNode.Parse(File.ReadAllText(p))!.AsObject();
        edit(c);
        File.WriteAllText(p, c.ToJsonString());
        return d;
    }

    /// <summary>Rewrites model.safetensors with an edited header (data bytes unchanged, header padded to 8 bytes).</summary>
    static string EditHeader(TempDir t, Action<JsonObject> edit)
    {
        string d = Model(t), p = Path.Combine(d, "model.safetensors");
        var bytes = File.ReadAllBytes(p);
        long n = BitConverter.ToInt64(bytes, 0);
        var header = JsonNode.Parse(bytes.AsSpan(8, (int)n))!.AsObject();
        edit(header);
        var hb = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (hb.Length + 7) / 8 * 8;
        using var fs = File.Create(p);
        fs.Write(BitConverter.GetBytes((long)padded));
        fs.Write(hb);
        for (int i = hb.Length; i < padded; i++) fs.WriteByte((byte)' ');
        fs.Write(bytes.AsSpan(8 + (int)n));
        return d;
    }

    static string WriteSafetensorsBytes(TempDir t, byte[] content)
    {
        string d = Model(t);
        File.WriteAllBytes(Path.Combine(d, "model.safetensors"), content);
        return d;
    }

    /// <summary>Renames model.safetensors to one shard and writes an index; <paramref name="edit"/> changes its weight_map.</summary>
    static string Sharded(TempDir t, Action<JsonObject> edit)
    {
        string d = Model(t), shard = "model-00001-of-00001.safetensors";
        File.Move(Path.Combine(d, "model.safetensors"), Path.Combine(d, shard));
        var names = JsonNode.Parse(File.ReadAllBytes(Path.Combine(d, shard)).AsSpan(8, (int)BitConverter.ToInt64(File.ReadAllBytes(Path.Combine(d, shard)), 0)))!
            .AsObject().Select(kv => kv.Key).Where(k => k != "__metadata__");
        var map = new JsonObject(names.Select(k => KeyValuePair.Create(k, (JsonNode?)shard)));
        edit(map);
        File.WriteAllText(Path.Combine(d, "model.safetensors.index.json"), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
        return d;
    }

    static string Data(TempDir t, string name, string content) { File.WriteAllText(t[name], content); return t[name]; }

    public static readonly Case[] Cases =
    [
        // ---- model folder and config.json ----
        new("model folder does not exist", t => Info(t["missing"]), 2, "missing: model folder not found"),
        new("config.json missing", t => { var d = Model(t); File.Delete(Path.Combine(d, "config.json")); return Info(d); }, 1, "config.json: missing"),
        new("config.json truncated", t => { var d = Model(t); var p = Path.Combine(d, "config.json"); File.WriteAllText(p, File.ReadAllText(p)[..100]); return Info(d); }, 1, "config.json: is not valid JSON"),
        new("config.json empty", t => { var d = Model(t); File.WriteAllText(Path.Combine(d, "config.json"), ""); return Info(d); }, 1, "config.json: is not valid JSON"),
        new("config.json is a JSON array", t => { var d = Model(t); File.WriteAllText(Path.Combine(d, "config.json"), "[1, 2]"); return Info(d); }, 1, "config.json: is not a JSON object"),
        new("config.json has a duplicate key", t => { var d = Model(t); File.WriteAllText(Path.Combine(d, "config.json"), """{"model_type": "llama", "model_type": "phi"}"""); return Info(d); }, 1, "config.json: is not valid JSON"),
        new("unknown architecture (model_type gpt_neox)", t => Info(EditConfig(t, c => c["model_type"] = "gpt_neox")), 1, "config.json: unsupported model_type 'gpt_neox' (supported: llama, mistral, qwen2, phi, nemotron-nas)"),
        new("config.json lacks num_hidden_layers", t => Info(EditConfig(t, c => c.Remove("num_hidden_layers"))), 1, "config.json: required key 'num_hidden_layers' is missing"),
        new("num_hidden_layers is a string", t => Info(EditConfig(t, c => c["num_hidden_layers"] = "eight")), 1, "config.json: 'num_hidden_layers' must be an integer (got \"eight\")"),
        new("num_hidden_layers = 2000000000", t => Info(EditConfig(t, c => c["num_hidden_layers"] = 2_000_000_000)), 1, "config.json: num_hidden_layers 2000000000 is implausibly large (limit 4096)"),
        new("num_hidden_layers larger than the checkpoint", t => Info(EditConfig(t, c => c["num_hidden_layers"] = 9)), 1, "model.safetensors: tensor 'model.layers.8.input_layernorm.weight' required by llama (config.json) is missing"),
        new("num_hidden_layers smaller than the checkpoint", t => Info(EditConfig(t, c => c["num_hidden_layers"] = 7)), 1, "model.safetensors: tensor 'model.layers.7.", "belongs to a layer beyond num_hidden_layers = 7"),
        new("eos_token_id is not an integer", t => Info(EditConfig(t, c => c["eos_token_id"] = new JsonArray("x"))), 1, "config.json: 'eos_token_id' must be an integer or a list of integers"),
        new("hidden_size disagrees with the tensors", t => Info(EditConfig(t, c => { c["hidden_size"] = 128; c["head_dim"] = 32; })), 1, "model.safetensors: tensor 'model.embed_tokens.weight' has shape [512, 64] but config.json implies [512, 128]"),

        // ---- safetensors ----
        new("safetensors body truncated", t => { var d = Model(t); var p = Path.Combine(d, "model.safetensors"); var b = File.ReadAllBytes(p); File.WriteAllBytes(p, b[..^1000]); return Info(d); }, 1, "model.safetensors: tensor 'model.layers.7.self_attn.v_proj.weight' data_offsets", "outside the data section", "truncated file?"),
        new("safetensors file of 5 bytes", t => Info(WriteSafetensorsBytes(t, [1, 2, 3, 4, 5])), 1, "model.safetensors: truncated safetensors file (5 bytes, no header)"),
        new("safetensors header length > file", t => Info(WriteSafetensorsBytes(t, [.. BitConverter.GetBytes(5000L), .. "{}"u8])), 1, "model.safetensors: safetensors header length 5000 is larger than the file (10 bytes)"),
        new("safetensors header length > 100 MB", t => Info(WriteSafetensorsBytes(t, [.. BitConverter.GetBytes(200L << 20), .. "{}"u8])), 1, "model.safetensors: safetensors header length 209715200 exceeds the 100 MB limit"),
        new("safetensors header is not JSON", t => Info(WriteSafetensorsBytes(t, [.. BitConverter.GetBytes(8L), .. "{not js}"u8])), 1, "model.safetensors: safetensors header is not valid JSON"),
        new("data_offsets beyond the file", t => Info(EditHeader(t, h => h["lm_head.weight"]!["data_offsets"]![1] = 1_000_131_072L)), 1, "model.safetensors: tensor 'lm_head.weight' data_offsets [0, 1000131072) are outside the data section"),
        new("negative data_offsets", t => Info(EditHeader(t, h => h["lm_head.weight"]!["data_offsets"]![0] = -8)), 1, "model.safetensors: tensor 'lm_head.weight' data_offsets [-8, 131072) are outside the data section"),
        new("data_offsets = 2^63 (not an int64)", t => Info(EditHeader(t, h => h["lm_head.weight"]!["data_offsets"]![1] = 9223372036854775808UL)), 1, "model.safetensors: tensor 'lm_head.weight' has invalid data_offsets"),
        new("two tensors overlap", t => Info(EditHeader(t, h => { h["model.norm.weight"]!["data_offsets"] = h["model.layers.0.input_layernorm.weight"]!["data_offsets"]!.DeepClone(); })), 1, "model.safetensors: tensors '", "overlap in the data section"),
        new("unknown dtype F8_E4M3", t => Info(EditHeader(t, h => h["lm_head.weight"]!["dtype"] = "F8_E4M3")), 1, "model.safetensors: tensor 'lm_head.weight' has unsupported dtype 'F8_E4M3' (supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)"),
        new("shape disagrees with data_offsets", t => Info(EditHeader(t, h => h["lm_head.weight"]!["shape"]![0] = 513)), 1, "model.safetensors: tensor 'lm_head.weight' shape [513, 64] × F32 needs 131328 bytes but data_offsets span 131072"),
        new("huge shape [2^62, 4] (size overflows int64)", t => Info(EditHeader(t, h => h["lm_head.weight"]!["shape"] = new JsonArray(1L << 62, 4))), 1, "model.safetensors: tensor 'lm_head.weight' shape [4611686018427387904,4] is too large"),
        new("tensor the architecture needs is missing", t => Info(EditHeader(t, h => h.Remove(Layer3Down))), 1, $"model.safetensors: tensor '{Layer3Down}' required by llama (config.json) is missing"),
        new("tensor stored transposed", t => Info(EditHeader(t, h => h[Layer3Down]!["shape"] = new JsonArray(176, 64))), 1, $"model.safetensors: tensor '{Layer3Down}' has shape [176, 64] but config.json implies [64, 176]"),
        new("prune of a checkpoint missing a tensor", t => Prune(EditHeader(t, h => h.Remove(Layer3Down)), t, "--layers", "5"), 1, $"model.safetensors: tensor '{Layer3Down}' required by llama (config.json) is missing"),
        new("no weights at all", t => { var d = Model(t); File.Delete(Path.Combine(d, "model.safetensors")); return Info(d); }, 1, "model: no model.safetensors or model.safetensors.index.json found"),
        new("only pytorch_model.bin (pickle)", t => { var d = Model(t); File.Move(Path.Combine(d, "model.safetensors"), Path.Combine(d, "pytorch_model.bin")); return Info(d); }, 1, "model: only pickle checkpoints (pytorch_model.bin) found; LayerPrune never unpickles", "Convert to safetensors first"),

        // ---- sharded index ----
        new("index names ../x.safetensors", t => Info(Sharded(t, m => m["lm_head.weight"] = "../x.safetensors")), 1, "model.safetensors.index.json: shard '../x.safetensors' (for 'lm_head.weight') is not a file inside the model folder"),
        new("index names an absolute path", t => Info(Sharded(t, m => m["lm_head.weight"] = "/etc/passwd")), 1, "model.safetensors.index.json: shard '/etc/passwd' (for 'lm_head.weight') is not a file inside the model folder"),
        new("index names a missing shard", t => Info(Sharded(t, m => m["lm_head.weight"] = "model-00002-of-00002.safetensors")), 1, "model-00002-of-00002.safetensors: shard named by model.safetensors.index.json is missing"),
        new("index maps a tensor the shard lacks", t => Info(Sharded(t, m => m["extra.weight"] = "model-00001-of-00001.safetensors")), 1, "model-00001-of-00001.safetensors: has no tensor 'extra.weight' although model.safetensors.index.json says so"),
        new("index is truncated JSON", t => { var d = Sharded(t, _ => { }); File.WriteAllText(Path.Combine(d, "model.safetensors.index.json"), "{\"weight_map\": {"); return Info(d); }, 1, "model.safetensors.index.json: is not valid JSON"),
        new("index lacks weight_map", t => { var d = Sharded(t, _ => { }); File.WriteAllText(Path.Combine(d, "model.safetensors.index.json"), "{}"); return Info(d); }, 1, "model.safetensors.index.json: 'weight_map' is missing or empty"),

        // ---- tokenizer ----
        new("no tokenizer files", t => Generate(Model(t)), 1, "model: no tokenizer found (looked for tokenizer.json, tokenizer.model, vocab.json + merges.txt)"),
        new("tokenizer_config.json truncated", t => { var d = Model(t, tokenizer: true); File.WriteAllText(Path.Combine(d, "tokenizer_config.json"), "{\"add_bos_token\": "); return Generate(d); }, 1, "tokenizer_config.json: invalid JSON at line 1"),
        new("tokenizer_config.json add_bos_token not a bool", t => { var d = Model(t, tokenizer: true); File.WriteAllText(Path.Combine(d, "tokenizer_config.json"), "{\"add_bos_token\": \"yes\"}"); return Generate(d); }, 1, "tokenizer_config.json: add_bos_token must be true or false"),
        new("tokenizer.model is garbage", t => { var d = Model(t, tokenizer: true); File.WriteAllBytes(Path.Combine(d, "tokenizer.model"), [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x20]); return Generate(d); }, 1, "tokenizer.model: not a valid SentencePiece model"),
        new("tokenizer.json vocab id not a number", t => { var d = Model(t); File.WriteAllText(Path.Combine(d, "tokenizer.json"), """{"model": {"type": "BPE", "vocab": {"a": "x"}}}"""); return Generate(d); }, 1, "tokenizer.json: vocabulary entry 'a' has no valid id"),

        // ---- flags ----
        new("--layers out of range", t => Prune(Model(t), t, "--layers", "3-9"), 2, "--layers '3-9': layer 8 is out of range (the model has layers 0-7)"),
        new("--layers duplicated", t => Prune(Model(t), t, "--layers", "3,3"), 2, "--layers '3,3': layer 3 is listed twice"),
        new("--layers removes every layer", t => Prune(Model(t), t, "--layers", "0-7"), 2, "--layers '0-7': removes all 8 layers; at least one must stay"),
        new("--layers not a range", t => Prune(Model(t), t, "--layers", "a-b"), 2, "--layers 'a-b': 'a-b' is not a layer index or an inclusive range like 6-9"),
        new("--n = layer count", t => Prune(Model(t), t, "--n", "8", "--strategy", "deepest"), 2, "--n 8: must be between 1 and 7 (the model has 8 layers)"),
        new("--n not an integer", t => Prune(Model(t), t, "--n", "abc"), 2, "--n: cannot parse 'abc' as an integer"),
        new("--fraction 1", t => Prune(Model(t), t, "--fraction", "1", "--strategy", "deepest"), 2, "--fraction 1: must be strictly between 0 and 1"),
        new("--out exists (no --force)", t => { Directory.CreateDirectory(t["out"]); return Prune(Model(t), t, "--n", "2", "--strategy", "deepest"); }, 2, "out: already exists (use --force to replace it)"),
        new("--out is the input via '..' (--force)", t => { var d = Model(t); return ["prune", "-m", d, "-o", Path.Combine(d, "..", "model"), "--n", "2", "--strategy", "deepest", "--force"]; }, 2, "must not be, contain or lie inside the input"),
        new("--out is a symlink to the input (--force)", t => { var d = Model(t); Directory.CreateSymbolicLink(t["link"], d); return ["prune", "-m", d, "-o", t["link"], "--n", "2", "--strategy", "deepest", "--force"]; }, 2, "link: must not be, contain or lie inside the input"),
        new("--out contains the input (--force)", t => { var d = Model(t); return ["prune", "-m", d, "-o", t.Path, "--n", "2", "--strategy", "deepest", "--force"]; }, 2, "must not be, contain or lie inside the input"),
        new("--model missing", _ => ["info"], 2, "--model: required option is missing"),
        new("unknown option", t => ["info", "-m", Golden, "--bogus"], 2, "Unrecognized command or argument '--bogus'"),
        new("unknown command", _ => ["frobnicate"], 2, "Unrecognized command or argument 'frobnicate'"),
        new("--token-ids overflow", t => ["generate", "-m", Model(t, tokenizer: true), "--token-ids", "1,99999999999"], 2, "--token-ids '1,99999999999': expected comma-separated integers"),

        // ---- datasets ----
        new("--data missing", t => ["similarity", "-m", Model(t, tokenizer: true), "--data", t["none.txt"], "-o", t["sim"]], 2, "none.txt: file not found"),
        new("--data empty .txt", t => ["similarity", "-m", Model(t, tokenizer: true), "--data", Data(t, "empty.txt", ""), "-o", t["sim"]], 1, "empty.txt: no documents (file is empty or has only empty lines/rows)"),
        new("--data .jsonl with a malformed row", t => ["similarity", "-m", Model(t, tokenizer: true), "--data", Data(t, "bad.jsonl", "{\"text\": \"a b\"}\n{\"text\": \n"), "-o", t["sim"]], 1, "bad.jsonl:2: invalid JSON"),
        new("--data .jsonl row without text", t => ["similarity", "-m", Model(t, tokenizer: true), "--data", Data(t, "notext.jsonl", "{\"text\": \"a b\"}\n{\"txt\": \"x\"}\n"), "-o", t["sim"]], 1, "notext.jsonl:2: missing string field \"text\""),
        new("eval mc: row is not an object", t => ["eval", "-m", Model(t, tokenizer: true), "-t", "mc:" + Data(t, "mc.jsonl", "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"label\": 0}\n[1]\n")], 1, "mc.jsonl:2: expected a JSON object"),
        new("eval mc: label not an integer", t => ["eval", "-m", Model(t, tokenizer: true), "-t", "mc:" + Data(t, "mc2.jsonl", "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"label\": \"b\"}\n")], 1, "mc2.jsonl:1: field \"label\" must be an integer, got \"b\""),
        new("eval mc: empty file", t => ["eval", "-m", Model(t, tokenizer: true), "-t", "mc:" + Data(t, "empty.jsonl", "")], 1, "empty.jsonl: no items"),
        new("eval loss: empty file", t => ["eval", "-m", Model(t, tokenizer: true), "-t", "loss:" + Data(t, "empty.txt", "\n\n")], 1, "empty.txt: no documents"),

        // ---- output files: refused before the slow part ----
        new("eval --out in a missing folder", t => ["eval", "-m", Model(t, tokenizer: true), "-t", "loss:" + Data(t, "v.txt", "a b c\n"), "--out", t["no/r.json"]], 2, "--out", "does not exist"),
        new("eval --out is a folder", t => ["eval", "-m", Model(t, tokenizer: true), "-t", "loss:" + Data(t, "v.txt", "a b c\n"), "--out", t.Path], 2, "--out", "is a folder; give a file name"),
        new("generate --logits in a missing folder", t => [.. Generate(Model(t, tokenizer: true)), "--logits", t["no/l.safetensors"]], 2, "--logits", "does not exist"),
        new("sweep --bootstrap without the similarity strategy", t => ["sweep", "-m", Model(t, tokenizer: true), "-d", Data(t, "c.txt", "a b c\n"), "-t", "loss:" + t["c.txt"], "--strategies", "deepest", "--bootstrap", "5", "-o", t["sw"]], 2, "--bootstrap", "needs the similarity strategy"),
    ];

    public static TheoryData<string> CaseNames => new(Cases.Select(c => c.Input));

    [Theory, MemberData(nameof(CaseNames))]
    public void BadInputFailsWithOneLineAndExitCode(string input)
    {
        var c = Cases.Single(x => x.Input == input);
        using var t = new TempDir();
        var args = c.Build(t);
        var modelFiles = Directory.Exists(t["model"]) ? Directory.EnumerateFiles(t["model"]).Select(f => (Path.GetFileName(f), new FileInfo(f).Length)).Order().ToList() : null;
        var (exit, _, stderr) = CliProcess.Run(args);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.False(stderr.Contains("   at "), $"stack trace printed:\n{stderr}");
        Assert.True(lines.Length == 1, $"expected one stderr line, got {lines.Length}:\n{stderr}");
        Assert.StartsWith("error: ", lines[0]);
        foreach (var f in c.Fragments) Assert.Contains(f, lines[0]);
        Assert.Equal(c.Exit, exit);
        Assert.DoesNotContain("Exception", lines[0]); // an exception type name means an unhandled (non-LayerPrune) error
        if (modelFiles is not null) // the input model is never deleted or modified, whatever --out and --force say
            Assert.Equal(modelFiles, Directory.EnumerateFiles(t["model"]).Select(f => (Path.GetFileName(f), new FileInfo(f).Length)).Order());
        if (Environment.GetEnvironmentVariable("LAYERPRUNE_ROBUSTNESS_DOC") is { Length: > 0 } docDir)
        {
            Directory.CreateDirectory(docDir);
            string shown = string.Join(' ', args.Select(a => a.Replace(t.Path, "$T").Replace(TestPaths.RepoRoot + "/", "")));
            string message = lines[0].Replace(t.Path, "$T").Replace(TestPaths.RepoRoot + "/", "");
            string row = $"| {input} | `layerprune {shown.Replace("|", "\\|")}` | {exit} | `{message.Replace("|", "\\|")}` |";
            File.WriteAllText(Path.Combine(docDir, $"{Array.FindIndex(Cases, x => x.Input == input):D3}.md"), row + "\n");
        }
    }
}
