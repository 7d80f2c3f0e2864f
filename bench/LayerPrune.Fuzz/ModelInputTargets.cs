using System.Net;
using System.Text;
using LayerPrune.Checkpoints;
using LayerPrune.Gguf;
using LayerPrune.Hub;
using LayerPrune.Tokenization;

namespace LayerPrune.Fuzz;

/// <summary>
/// Issue 27's untrusted inputs: GGUF files (header parse and full conversion to a checkpoint), the hub's response headers
/// (status, X-Repo-Commit, ETag, X-Linked-Etag/-Size, Location, X-Error-Code through a fake HTTP handler) and the
/// tokenizer.json / tokenizer.model readers. GGUF seeds are tiny llama and qwen2 models exported as f32, f16 and q8_0.
/// </summary>
public static partial class Fuzzer
{
    static readonly ulong[] EdgeU64 =
    [
        0, 1, 2, 3, 4, 7, 8, 9, 31, 32, 33, 255, 256, 65535, 65536, int.MaxValue, (ulong)int.MaxValue + 1, uint.MaxValue,
        (ulong)uint.MaxValue + 1, long.MaxValue, (ulong)long.MaxValue + 1, ulong.MaxValue, ulong.MaxValue - 7, 1UL << 40,
    ];

    /// <summary>Binary mutations: flips, truncation, edge integers written over 1/2/4/8 bytes, region copies, splices.</summary>
    static byte[] MutateBinary(Random rng, byte[] seed, int focus)
    {
        var b = (byte[])seed.Clone();
        for (int r = 0, rounds = 1 + rng.Next(3); r < rounds; r++)
        {
            int limit = Math.Max(1, rng.Next(4) == 0 ? b.Length : Math.Min(b.Length, focus)); // mostly the header
            switch (rng.Next(6))
            {
                case 0:
                    for (int k = 0, n = 1 + rng.Next(4); k < n && b.Length > 0; k++) b[rng.Next(limit)] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1: if (b.Length > 0) b = b[..rng.Next(b.Length)]; break;
                case 2:
                {
                    ulong v = EdgeU64[rng.Next(EdgeU64.Length)];
                    int width = new[] { 1, 2, 4, 8 }[rng.Next(4)];
                    int at = rng.Next(limit);
                    for (int k = 0; k < width && at + k < b.Length; k++) b[at + k] = (byte)(v >> (8 * k));
                    break;
                }
                case 3:
                {
                    if (b.Length < 2) break;
                    int from = rng.Next(limit), len = 1 + rng.Next(Math.Min(64, b.Length - from)), to = rng.Next(limit);
                    b = [.. b[..to], .. b.AsSpan(from, len), .. b[to..]];
                    break;
                }
                case 4:
                {
                    int at = rng.Next(limit), len = Math.Min(b.Length - at, 1 + rng.Next(64));
                    b = [.. b[..at], .. b[(at + len)..]];
                    break;
                }
                default:
                {
                    int at = rng.Next(limit);
                    if (at + 4 <= b.Length) BitConverter.TryWriteBytes(b.AsSpan(at), (uint)rng.Next(0, 40)); // a type id
                    break;
                }
            }
        }
        return b;
    }

    /// <summary>A tiny random checkpoint of <paramref name="modelType"/> (vocab 300, 2 layers, hidden 32).</summary>
    static string TinyCheckpoint(string work, string modelType, Random rng)
    {
        string dir = Path.Combine(work, "tiny-" + modelType);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["{{(modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM")}}"], "model_type": "{{modelType}}",
             "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 300, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
             "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false, "bos_token_id": 3, "eos_token_id": 4}
            """);
        var c = ModelConfig.Load(dir);
        var tensors = ArchitectureTensors.Expected(c).Where(t => t.Required || modelType == "qwen2").Select(t =>
        {
            long n = t.Shape.Aggregate(1L, (a, x) => a * x);
            var bytes = new byte[n * 4];
            for (long i = 0; i < n; i++) BitConverter.TryWriteBytes(bytes.AsSpan((int)(i * 4)), (float)(rng.NextDouble() - 0.5));
            return new TensorToWrite(t.Name, "F32", t.Shape, bytes.Length, s => s.Write(bytes));
        }).ToList();
        SafeTensorsWriter.Write(Path.Combine(dir, Checkpoint.SingleFile), tensors);
        if (modelType == "qwen2")
        {
            File.WriteAllText(Path.Combine(dir, "vocab.json"), """{"a": 0, "b": 1, "ab": 2, "<s>": 3, "</s>": 4, "Ġ": 5, "Ġa": 6}""");
            File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\na b\nĠ a\n");
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
                """{"tokenizer_class": "Qwen2Tokenizer", "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false}""");
        }
        return dir;
    }

    static readonly byte[][] TokenizerJsonSeeds =
    [
        """
        {"version": "1.0", "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
         "normalizer": {"type": "NFC"},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{L}+|\\s+|\\p{N}"},
           "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
         "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}],
           "special_tokens": {"<s>": {"id": "<s>", "ids": [3]}}},
         "decoder": {"type": "ByteLevel"},
         "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3, "Ġ": 4, "Ġa": 5}, "merges": ["a b", ["Ġ", "a"]]}}
        """u8.ToArray(),
        """
        {"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
           {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
         "pre_tokenizer": null,
         "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
           "vocab": {"<unk>": 0, "<0x41>": 1, "▁": 2, "a": 3, "▁a": 4},
           "merges": ["▁ a"]}}
        """u8.ToArray(),
        """
        {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
         "model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "▁a": 2, "b": 3}, "merges": ["▁ a"], "ignore_merges": true}}
        """u8.ToArray(),
    ];

    /// <summary>Seeds: the headers FakeHub sends (tests/LayerPrune.Tests/Hub), first line the status.</summary>
    static readonly byte[][] HubHeaderSeeds =
    [
        ("302\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\nETag: \"1b2c\"\n"u8 +
         "X-Linked-Etag: \"6f1f6d7bd2e3b7a8b0a3fbc1a1b5b0b0e4c1d1e3f5a7b9c1d3e5f7a9b1c3d5e7\"\n"u8 +
         "X-Linked-Size: 26\nLocation: /cdn/x\n"u8).ToArray(),
        "200\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\nETag: \"a94a8fe5ccb19ba61c4c0873d391e987982fbbd3\"\n"u8.ToArray(),
        "404\nX-Error-Code: EntryNotFound\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\n"u8.ToArray(),
        "401\nX-Error-Code: GatedRepo\n"u8.ToArray(),
        "206\nContent-Range: bytes 3-25/26\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\nETag: W/\"x\"\n"u8.ToArray(),
    ];

    sealed class FakeHubHandler(byte[] script) : HttpMessageHandler
    {
        public int Requests;
        static readonly byte[] Config = Encoding.UTF8.GetBytes("""{"model_type": "llama"}""");

        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (++Requests > 64) throw new HttpRequestException("too many requests"); // a redirect loop would be a bug
            var lines = Encoding.UTF8.GetString(script).Split('\n');
            int code = int.TryParse(lines[0], out int c) && c is >= 100 and < 600 ? c : 200;
            var res = new HttpResponseMessage((HttpStatusCode)code) { Content = new ByteArrayContent(Config), RequestMessage = request };
            foreach (var l in lines.Skip(1))
            {
                int colon = l.IndexOf(':');
                if (colon <= 0) continue;
                string name = l[..colon].Trim(), value = l[(colon + 1)..].Trim();
                if (!res.Headers.TryAddWithoutValidation(name, value)) res.Content.Headers.TryAddWithoutValidation(name, value);
            }
            return res;
        }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage r, CancellationToken ct) => Task.FromResult(Send(r, ct));
    }

    /// <summary>GGUF seeds: <see cref="Convert"/> for both GGUF targets, <see cref="OpenOnly"/> (large files) for gguf-open.</summary>
    sealed record GgufSeedSet(List<byte[]> Convert, List<byte[]> OpenOnly);

    /// <summary>
    /// Tiny random llama and qwen2 models (2 layers, hidden 32, vocab 300) exported by us as f32, f16, bf16 and q8_0; the
    /// same f32 exports quantized by llama.cpp's own code to q8_0 and f16 (<see cref="FuzzOptions.LlamaCppSeeds"/>);
    /// samples/kjv-llama-16l quantized by llama.cpp (q8_0, ffn_down f16; <see cref="FuzzOptions.KjvSeed"/>); the files in
    /// LAYERPRUNE_FUZZ_GGUF=a.gguf:b.gguf.
    /// </summary>
    static GgufSeedSet GgufSeeds(string root, string dir, FuzzOptions o, TextWriter log)
    {
        Directory.CreateDirectory(dir);
        var rng = new Random(27);
        var set = new GgufSeedSet([], []);
        void Add(List<byte[]> list, string path, string what)
        {
            var bytes = File.ReadAllBytes(path);
            list.Add(bytes);
            log.WriteLine($"  seed {what}: {bytes.Length} bytes, sha256 " +
                          $"{System.Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes))[..16]}");
        }
        foreach (var type in new[] { "llama", "qwen2" })
        {
            string ckpt = TinyCheckpoint(dir, type, rng);
            string f32 = "";
            foreach (var t in new[] { GgufOutputType.F32, GgufOutputType.F16, GgufOutputType.Q8_0, GgufOutputType.BF16 })
            {
                string path = Path.Combine(dir, $"{type}-{t}.gguf");
                GgufExporter.Export(ckpt, path, new GgufExportOptions { Type = t });
                Add(set.Convert, path, $"{type} {t} (LayerPrune's exporter)");
                if (t == GgufOutputType.F32) f32 = path;
            }
            if (!o.LlamaCppSeeds) continue;
            foreach (var (ftype, label) in
                     new[] { (LLama.Native.LLamaFtype.MOSTLY_Q8_0, "q8_0"), (LLama.Native.LLamaFtype.MOSTLY_F16, "f16") })
            {
                string path = Path.Combine(dir, $"{type}-{label}-llamacpp.gguf");
                LlamaCppSeeds.Quantize(f32, path, ftype, []);
                Add(set.Convert, path, $"{type} {label} (llama.cpp's llama_model_quantize)");
            }
        }
        if (o.LlamaCppSeeds && o.KjvSeed)
        {
            string f32 = Path.Combine(dir, "kjv-f32.gguf"), q8 = Path.Combine(dir, "kjv-q8_0-llamacpp.gguf");
            GgufExporter.Export(Path.Combine(root, "samples", "kjv-llama-16l"), f32, new GgufExportOptions { Type = GgufOutputType.F32 });
            var partial = GgufFile.Open(f32).Tensors.Where(t => t.Dims.Length >= 2 && t.Dims[0] % GgufExporter.Q8Block != 0)
                .Select(t => t.Name).ToList();
            LlamaCppSeeds.Quantize(f32, q8, LLama.Native.LLamaFtype.MOSTLY_Q8_0, partial);
            File.Delete(f32);
            Add(set.OpenOnly, q8, "kjv-llama-16l q8_0, ffn_down f16 (llama.cpp's llama_model_quantize)");
        }
        string extras = Environment.GetEnvironmentVariable("LAYERPRUNE_FUZZ_GGUF") ?? "";
        foreach (var extra in extras.Split(':', StringSplitOptions.RemoveEmptyEntries))
            Add(new FileInfo(extra).Length > 1 << 20 ? set.OpenOnly : set.Convert, extra, extra);
        return set;
    }

    /// <summary>The name GGUF inputs go by: parsed from memory, written to a tmpfs file only for conversion.</summary>
    const string GgufInputName = "fuzz-input.gguf";

    static void ParseGguf(byte[] input)
    {
        var g = GgufFile.Parse(GgufInputName, input);
        _ = g.Architecture;
        _ = g.BlockCount;
    }

    static List<(Target t, int weight)> ModelInputTargets(string root, string work, GgufSeedSet gguf)
    {
        string convertDir = Path.Combine(work, "converted");
        int headerFocus = 4096;

        string hubCache = Path.Combine(work, "hubcache");
        string tokJsonDir = Path.Combine(work, "tokjson"), spmDir = Path.Combine(work, "spm");
        Directory.CreateDirectory(tokJsonDir);
        Directory.CreateDirectory(spmDir);
        var spmSeeds = new List<byte[]> { File.ReadAllBytes(Path.Combine(root, "samples", "kjv-llama-16l", "tokenizer.model")) };

        return
        [
            (new Target("gguf-open", "GgufFile.Open", gguf.Convert, ParseGguf, (r, s) => MutateBinary(r, s, headerFocus),
                inputName: GgufInputName), 40),
            // Large seeds (the 16 MB llama.cpp-written kjv file) on their own: copying one per input costs as much as a
            // thousand small parses, so they get their own, smaller, weight.
            (new Target("gguf-large", "GgufFile.Open(large)", gguf.OpenOnly, ParseGguf, (r, s) => MutateBinary(r, s, headerFocus),
                inputName: GgufInputName), gguf.OpenOnly.Count > 0 ? 2 : 0),
            (new Target("gguf-convert", "GgufImporter.Convert", gguf.Convert, input =>
            {
                if (Directory.Exists(convertDir)) Directory.Delete(convertDir, true);
                GgufImporter.Convert(GgufFile.Parse(GgufInputName, input), convertDir);
                var tok = TokenizerLoader.Load(convertDir);
                tok.Decode(tok.Encode("ab a b"));
                Checkpoint.Open(convertDir).Dispose();
            }, (r, s) => MutateBinary(r, s, s.Length), maxMillis: 10_000, inputName: GgufInputName), 10), // writes a checkpoint, loads it
            (new Target("hub-headers", "HubCache.Resolve(headers)", [.. HubHeaderSeeds], input =>
            {
                if (Directory.Exists(hubCache)) Directory.Delete(hubCache, true);
                var handler = new FakeHubHandler(input);
                var o = new HubOptions
                    { Endpoint = "http://127.0.0.1:9", CacheDir = hubCache, HfToken = null, Offline = false, Handler = handler };
                HubCache.Resolve(new HubId("fuzz-org/model", "main"), o);
            }, inputName: "fuzz-org/model"), 15),
            (new Target("tokenizer-json", "TokenizerLoader(tokenizer.json)", [.. TokenizerJsonSeeds], input =>
            {
                File.WriteAllBytes(Path.Combine(tokJsonDir, "tokenizer.json"), input);
                var tok = TokenizerLoader.Load(tokJsonDir);
                tok.Decode(tok.Encode("ab a\u00e9 b <s>12"));
            }), 15),
            (new Target("tokenizer-model", "TokenizerLoader(tokenizer.model)", spmSeeds, input =>
            {
                File.WriteAllBytes(Path.Combine(spmDir, "tokenizer.model"), input);
                var tok = TokenizerLoader.Load(spmDir);
                tok.Decode(tok.Encode("In the  beginning \u00e9 12"));
            }, (r, s) => MutateBinary(r, s, s.Length)), 15),
        ];
    }
}
