using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Tokenization;

namespace LayerPrune.Fuzz;

public sealed record FuzzResult(int Inputs, double Seconds, int Failures, IReadOnlyDictionary<string, int> PerTarget, IReadOnlyList<string> Reports);

/// <summary>
/// Mutation fuzzer for LayerPrune's parsers of untrusted files. Seeds are the valid golden fixtures (safetensors headers,
/// config.json, a sharded index, tokenizer_config.json); each input is a seed mutated by byte flips, truncation,
/// insertion, splicing, numeric edge values (huge / negative / 2^63 / NaN / 1e400), deep nesting, huge shapes,
/// duplicate keys or JSON-tree edits. A parser may succeed or throw LayerPruneException; any other exception is a
/// crash, more than <see cref="MaxMillis"/> ms a hang, more than <see cref="MaxAllocBytes"/> allocated a blow-up.
/// </summary>
public static partial class Fuzzer
{
    public const int MaxMillis = 1000;
    public const long MaxAllocBytes = 64L << 20;

    static readonly string[] EdgeNumbers =
    [
        "0", "-1", "1", "-0", "2147483647", "2147483648", "-2147483649", "4294967296", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "18446744073709551615", "18446744073709551616", "1e400", "-1e400", "NaN", "Infinity", "1.5", "1e-400",
        "99999999999999999999999999999999", "4611686018427387904", "0.0", "1e308", "1E2", "4096", "4097",
    ];
    static readonly string[] EdgeJson =
    [
        "null", "true", "false", "\"\"", "\"x\"", "[]", "{}", "[-1]", "[0,0]", "[1,2,3]", "[4611686018427387904,4]", "[\"a\"]", "{\"a\":1}",
        "\"F8_E4M3\"", "\"../x.safetensors\"", "\"/etc/passwd\"", "\"..\"", "\".\"", "\"model.safetensors\"", "\"config.json\"",
        "\"\\ud800\"", "\"\\u0000\"", "[[[[[[[[[[]]]]]]]]]]",
    ];

    sealed class Target(string name, List<byte[]> seeds, Action<byte[]> run, Func<Random, byte[], byte[]>? mutate = null,
        int maxMillis = MaxMillis)
    {
        /// <summary>The hang limit: <see cref="MaxMillis"/> for parsers, more for a target that writes and reloads a model.</summary>
        public int HangMillis => maxMillis;
        public string Name => name; public List<byte[]> Seeds => seeds; public Action<byte[]> Run => run;
        /// <summary>A format-aware mutator (binary formats); null: <see cref="Mutate"/>.</summary>
        public Func<Random, byte[], byte[]>? Mutator => mutate;
    }

    public static FuzzResult Run(int count, int seed, TextWriter log)
    {
        string root = RepoRoot();
        string work = Path.Combine(Path.GetTempPath(), "layerprune-fuzz-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try { return RunIn(root, work, count, seed, log); }
        finally { try { Directory.Delete(work, true); } catch (IOException) { } }
    }

    static FuzzResult RunIn(string root, string work, int count, int seed, TextWriter log)
    {
        var rng = new Random(seed);
        string golden = Path.Combine(root, "tests", "fixtures", "golden");
        var archs = Directory.GetDirectories(golden).Where(d => File.Exists(Path.Combine(d, "model.safetensors"))).Order().ToList();

        // Seeds.
        var headers = archs.Select(d => Header(Path.Combine(d, "model.safetensors"))).ToList();
        var configs = archs.Select(d => File.ReadAllBytes(Path.Combine(d, "config.json"))).ToList();
        var llamaHeader = JsonNode.Parse(Header(Path.Combine(golden, "llama", "model.safetensors")))!.AsObject();
        var shard = "model-00001-of-00001.safetensors";
        var index = new JsonObject
        {
            ["metadata"] = new JsonObject { ["total_size"] = 1740800 },
            ["weight_map"] = new JsonObject(llamaHeader.Where(kv => kv.Key != "__metadata__").Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)shard))),
        };
        var tokConfigs = Directory.EnumerateFiles(Path.Combine(root, "tests", "fixtures"), "tokenizer_config.json", SearchOption.AllDirectories)
            .Concat(Directory.EnumerateFiles(Path.Combine(root, "samples"), "tokenizer_config.json", SearchOption.AllDirectories))
            .Select(File.ReadAllBytes).ToList();
        if (tokConfigs.Count == 0) tokConfigs.Add("""{"add_bos_token": true, "bos_token": "<s>", "eos_token": {"content": "</s>"}}"""u8.ToArray());

        // A sharded model folder (golden llama) whose index is replaced per input.
        string shardDir = Path.Combine(work, "sharded");
        Directory.CreateDirectory(shardDir);
        File.Copy(Path.Combine(golden, "llama", "config.json"), Path.Combine(shardDir, "config.json"));
        File.Copy(Path.Combine(golden, "llama", "model.safetensors"), Path.Combine(shardDir, shard));
        // A tiny byte-level BPE tokenizer whose tokenizer_config.json is replaced per input.
        string tokDir = Path.Combine(work, "tok");
        Directory.CreateDirectory(tokDir);
        File.WriteAllText(Path.Combine(tokDir, "vocab.json"), """{"a": 0, "b": 1, "ab": 2, "<s>": 3, "</s>": 4, "<unk>": 5}""");
        File.WriteAllText(Path.Combine(tokDir, "merges.txt"), "#version: 0.2\na b\n");
        string stFile = Path.Combine(work, "small.safetensors");
        // Small real files for Open: a few tensors of the llama header with their data.
        var smallSeeds = archs.Take(2).Select(d => SmallFile(Path.Combine(d, "model.safetensors"))).ToList();

        var targets = new List<(Target t, int weight)>
        {
            (new Target("SafeTensorsFile.Parse", headers, input =>
            {
                // The fake file length: usually consistent with the data section, sometimes hostile.
                long length = (input.Length % 7) switch { 0 => 0, 1 => long.MaxValue, 2 => 8 + input.Length, _ => 8 + input.Length + 1_740_800 };
                SafeTensorsFile.Parse("fuzz.safetensors", input, length).Dispose();
            }), 40),
            (new Target("SafeTensorsFile.Open", smallSeeds, input =>
            {
                File.WriteAllBytes(stFile, input);
                using var f = SafeTensorsFile.Open(stFile);
                foreach (var name in f.Tensors.Keys.Take(3)) { using var ms = new MemoryStream(); f.CopyBytes(name, ms); }
            }), 10),
            (new Target("ModelConfig.Parse", configs, input => ModelConfig.Parse(Encoding.UTF8.GetString(input), "config.json")), 20),
            (new Target("Checkpoint.Open(index)", [Encoding.UTF8.GetBytes(index.ToJsonString())], input =>
            {
                File.WriteAllBytes(Path.Combine(shardDir, Checkpoint.IndexFile), input);
                Checkpoint.Open(shardDir).Dispose();
            }), 15),
            (new Target("TokenizerLoader(tokenizer_config.json)", tokConfigs, input =>
            {
                File.WriteAllBytes(Path.Combine(tokDir, "tokenizer_config.json"), input);
                var tok = TokenizerLoader.Load(tokDir);
                tok.Decode(tok.Encode("ab <s> a"));
            }), 15),
        };
        targets.AddRange(ModelInputTargets(root, work)); // issue 27: GGUF, hub response headers, tokenizer.json / tokenizer.model
        int totalWeight = targets.Sum(x => x.weight);
        var perTarget = targets.ToDictionary(x => x.t.Name, _ => 0);
        var reports = new List<string>();
        int failures = 0;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < count; i++)
        {
            int pick = rng.Next(totalWeight);
            var target = targets.First(x => (pick -= x.weight) < 0).t;
            var seedInput = target.Seeds[rng.Next(target.Seeds.Count)];
            var input = target.Mutator is { } mutator ? mutator(rng, seedInput) : Mutate(rng, seedInput, target.Seeds);
            perTarget[target.Name]++;
            long alloc0 = GC.GetAllocatedBytesForCurrentThread();
            long t0 = Stopwatch.GetTimestamp();
            string? problem = null;
            try { target.Run(input); }
            catch (LayerPruneException) { }
            catch (Exception e) { problem = $"crash {e.GetType().FullName}: {e.Message.Split('\n')[0]}"; }
            double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            long alloc = GC.GetAllocatedBytesForCurrentThread() - alloc0;
            if (problem is null && ms > target.HangMillis) problem = $"hang: {ms:F0} ms";
            if (problem is null && alloc > MaxAllocBytes) problem = $"allocation: {alloc >> 20} MB";
            if (problem is not null)
            {
                failures++;
                if (reports.Count < 20)
                {
                    string report = $"[{target.Name}] {problem}\n  input (base64): {Convert.ToBase64String(input.Length > 4096 ? input[..4096] : input)}";
                    reports.Add(report);
                    log.WriteLine(report);
                }
            }
        }
        double seconds = sw.Elapsed.TotalSeconds;
        log.WriteLine($"fuzz: {count} inputs in {seconds:F1} s ({count / seconds:F0} inputs/s), seed {seed}, failures {failures}");
        foreach (var (name, n) in perTarget) log.WriteLine($"  {name}: {n} inputs");
        return new FuzzResult(count, seconds, failures, perTarget, reports);
    }

    // ---------------- mutations ----------------

    static byte[] Mutate(Random rng, byte[] seed, List<byte[]> seeds)
    {
        var b = seed;
        int rounds = 1 + rng.Next(3);
        for (int r = 0; r < rounds; r++)
            try { b = MutateOnce(rng, b, seeds); } catch (Exception) { } // a mutation that cannot apply (e.g. unprintable JSON) is skipped
        return b;
    }

    static byte[] MutateOnce(Random rng, byte[] b, List<byte[]> seeds)
    {
        switch (rng.Next(11))
        {
            case 0: // byte flips
            {
                var c = (byte[])b.Clone();
                for (int k = 0, n = 1 + rng.Next(4); k < n && c.Length > 0; k++) c[rng.Next(c.Length)] ^= (byte)(1 << rng.Next(8));
                return c;
            }
            case 1: return b.Length == 0 ? b : b[..rng.Next(b.Length)]; // truncation
            case 2: // insertion of random bytes or structural characters
            {
                int at = rng.Next(b.Length + 1);
                byte[] ins = rng.Next(2) == 0 ? RandomBytes(rng, 1 + rng.Next(8)) : Encoding.UTF8.GetBytes(new[] { "{", "}", "[", "]", ",", ":", "\"", "\\", "\u00ff", "\ud83d\ude00" }[rng.Next(10)]);
                return [.. b[..at], .. ins, .. b[at..]];
            }
            case 3: // splice with another seed
            {
                var other = seeds[rng.Next(seeds.Count)];
                int a = rng.Next(b.Length + 1), o = rng.Next(other.Length + 1);
                return [.. b[..a], .. other[o..]];
            }
            case 4: return ReplaceNumber(rng, b); // numeric edge values in place
            case 5: // deep nesting
            {
                int depth = rng.Next(2) == 0 ? 40 : 5000;
                string deep = new string('[', depth) + new string(']', depth);
                return ReplaceValue(rng, b, deep);
            }
            case 6: return ReplaceValue(rng, b, EdgeJson[rng.Next(EdgeJson.Length)]);
            case 7: return ReplaceValue(rng, b, "[" + string.Join(",", Enumerable.Range(0, 1 + rng.Next(6)).Select(_ => EdgeNumbers[rng.Next(EdgeNumbers.Length)])) + "]"); // huge shapes / offsets
            case 8: // duplicate a key
            {
                string s = Encoding.UTF8.GetString(b);
                int brace = s.IndexOf('{');
                int q1 = brace < 0 ? -1 : s.IndexOf('"', brace), q2 = q1 < 0 ? -1 : s.IndexOf('"', q1 + 1);
                if (q2 < 0) return b;
                return Encoding.UTF8.GetBytes(s[..(brace + 1)] + s[q1..(q2 + 1)] + ": 1, " + s[(brace + 1)..]);
            }
            case 9: return JsonTreeEdit(rng, b);
            default: // long strings / keys
                return ReplaceValue(rng, b, "\"" + new string('x', rng.Next(2) == 0 ? 300 : 100_000) + "\"");
        }
    }

    static byte[] RandomBytes(Random rng, int n) { var r = new byte[n]; rng.NextBytes(r); return r; }

    /// <summary>Replaces one number token with an edge value.</summary>
    static byte[] ReplaceNumber(Random rng, byte[] b)
    {
        string s = Encoding.UTF8.GetString(b);
        var spots = new List<(int start, int end)>();
        for (int i = 0; i < s.Length; i++)
            if (char.IsDigit(s[i]) || (s[i] == '-' && i + 1 < s.Length && char.IsDigit(s[i + 1])))
            {
                int j = i + 1;
                while (j < s.Length && (char.IsDigit(s[j]) || s[j] is '.' or 'e' or 'E' or '+' or '-')) j++;
                spots.Add((i, j)); i = j;
            }
        if (spots.Count == 0) return b;
        var (st, en) = spots[rng.Next(spots.Count)];
        return Encoding.UTF8.GetBytes(s[..st] + EdgeNumbers[rng.Next(EdgeNumbers.Length)] + s[en..]);
    }

    /// <summary>Replaces the value after a random ':' (up to the next ',' or '}' at the same level, roughly) with <paramref name="value"/>.</summary>
    static byte[] ReplaceValue(Random rng, byte[] b, string value)
    {
        string s = Encoding.UTF8.GetString(b);
        var colons = Enumerable.Range(0, s.Length).Where(i => s[i] == ':').ToList();
        if (colons.Count == 0) return Encoding.UTF8.GetBytes(value);
        int c = colons[rng.Next(colons.Count)], end = c + 1, depth = 0;
        for (; end < s.Length; end++)
        {
            char ch = s[end];
            if (ch is '[' or '{') depth++;
            else if (ch is ']' or '}') { if (depth == 0) break; depth--; }
            else if (ch == ',' && depth == 0) break;
        }
        return Encoding.UTF8.GetBytes(s[..(c + 1)] + value + s[end..]);
    }

    /// <summary>Parses the seed and swaps a random node of the tree for an edge value (keeps the rest valid).</summary>
    static byte[] JsonTreeEdit(Random rng, byte[] b)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(b); } catch (Exception) { return b; }
        if (root is null) return b;
        var nodes = new List<JsonNode>();
        void Walk(JsonNode? n) { if (n is null) return; nodes.Add(n); if (n is JsonObject o) foreach (var (_, v) in o) Walk(v); else if (n is JsonArray a) foreach (var v in a) Walk(v); }
        try { Walk(root); } catch (Exception) { return b; }
        var target = nodes[rng.Next(nodes.Count)];
        if (target.Parent is null) return b;
        var replacement = JsonNode.Parse(rng.Next(2) == 0 ? EdgeJson[rng.Next(EdgeJson.Length)] : EdgeNumbers[rng.Next(EdgeNumbers.Length)] is var num && num is "NaN" or "Infinity" ? "\"" + num + "\"" : num);
        if (target.Parent is JsonObject po) { var key = target.GetPropertyName(); if (rng.Next(4) == 0) po.Remove(key); else po[key] = replacement; }
        else if (target.Parent is JsonArray pa) { int idx = target.GetElementIndex(); if (rng.Next(4) == 0) pa.RemoveAt(idx); else pa[idx] = replacement; }
        return Encoding.UTF8.GetBytes(root.ToJsonString());
    }

    // ---------------- seeds ----------------

    static byte[] Header(string path)
    {
        using var fs = File.OpenRead(path);
        var len = new byte[8]; fs.ReadExactly(len);
        var h = new byte[BitConverter.ToInt64(len)]; fs.ReadExactly(h);
        return h;
    }

    /// <summary>A small valid safetensors file: the first three 1-D tensors of a fixture with their bytes.</summary>
    static byte[] SmallFile(string path)
    {
        using var src = SafeTensorsFile.Open(path);
        var picks = src.Tensors.Values.Where(t => t.Shape.Length == 1).Take(3).ToList();
        using var ms = new MemoryStream();
        string tmp = Path.Combine(Path.GetTempPath(), "layerprune-fuzz-seed-" + Guid.NewGuid().ToString("N") + ".safetensors");
        try
        {
            SafeTensorsWriter.Write(tmp, picks.Select(t => TensorToWrite.FromFile(t.Name, src, t.Name)));
            return File.ReadAllBytes(tmp);
        }
        finally { File.Delete(tmp); }
    }

    static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LayerPrune.sln"))) return d.FullName;
        throw new InvalidOperationException("LayerPrune.sln not found above " + AppContext.BaseDirectory);
    }
}
