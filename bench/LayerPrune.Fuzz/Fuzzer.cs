using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Tokenization;

namespace LayerPrune.Fuzz;

/// <summary>What to fuzz and how (bench/LayerPrune.Fuzz's command line).</summary>
public sealed record FuzzOptions
{
    public long Inputs { get; init; } = 100_000;
    public int Seed { get; init; } = 1;
    /// <summary>Worker threads; worker w draws from Random(Seed + w) in a folder of its own.</summary>
    public int Jobs { get; init; } = 1;
    /// <summary>Target ids (or prefixes such as "gguf") to run; empty: all.</summary>
    public IReadOnlyList<string> Targets { get; init; } = [];
    /// <summary>Weight overrides by target id (the share of inputs a target gets is its weight over the sum).</summary>
    public IReadOnlyDictionary<string, int> Weights { get; init; } = new Dictionary<string, int>();
    /// <summary>Adds GGUF seeds written by llama.cpp's own quantizer (llama_model_quantize through LLamaSharp).</summary>
    public bool LlamaCppSeeds { get; init; } = true;
    /// <summary>With <see cref="LlamaCppSeeds"/>: samples/kjv-llama-16l quantized by llama.cpp (16 MB; the gguf-large target).</summary>
    public bool KjvSeed { get; init; } = true;
    /// <summary>Where the work folder goes; null: /dev/shm when present, else the temp folder.</summary>
    public string? WorkDir { get; init; }
    public double ProgressSeconds { get; init; }
    public double WatchdogSeconds { get; init; } = 600;
}

public sealed record FuzzResult(long Inputs, double Seconds, int Failures, IReadOnlyDictionary<string, int> PerTarget, IReadOnlyList<string> Reports);

/// <summary>
/// Mutation fuzzer for LayerPrune's parsers of untrusted files. Seeds are the valid golden fixtures (safetensors headers,
/// config.json, a sharded index, tokenizer_config.json); each input is a seed mutated by byte flips, truncation,
/// insertion, splicing, numeric edge values (huge / negative / 2^63 / NaN / 1e400), deep nesting, huge shapes,
/// duplicate keys or JSON-tree edits. A parser may succeed or throw LayerPruneException; any other exception is a
/// crash, more than <see cref="MaxMillis"/> ms of the thread's CPU time a hang, more than <see cref="MaxAllocBytes"/>
/// (plus <see cref="AllocPerInputByte"/> per input byte) allocated a blow-up; a rejection's message must be one line
/// naming the input.
/// </summary>
public static partial class Fuzzer
{
    public const int MaxMillis = 1000;
    public const long MaxAllocBytes = 64L << 20;
    /// <summary>Allocation allowed per byte of input on top of <see cref="MaxAllocBytes"/>.</summary>
    public const long AllocPerInputByte = 16;

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

    /// <summary>
    /// One fuzz target. <paramref name="inputName"/>: the name a rejection's message must contain (the file or repo the
    /// input stands for); null where the reader names no input.
    /// </summary>
    sealed class Target(string id, string name, List<byte[]> seeds, Action<byte[]> run, Func<Random, byte[], byte[]>? mutate = null,
        int maxMillis = MaxMillis, string? inputName = null)
    {
        /// <summary>The short id that --targets and --weights use (gguf-open, gguf-convert, …).</summary>
        public string Id => id;
        /// <summary>The hang limit in CPU milliseconds of the fuzzing thread: <see cref="MaxMillis"/> for parsers, more for a
        /// target that writes and reloads a model.</summary>
        public int HangMillis => maxMillis;
        public string Name => name; public List<byte[]> Seeds => seeds; public Action<byte[]> Run => run;
        /// <summary>A format-aware mutator (binary formats); null: <see cref="Mutate"/>.</summary>
        public Func<Random, byte[], byte[]>? Mutator => mutate;
        public string? InputName => inputName;
    }

    /// <summary>The targets' ids in their default order.</summary>
    public static readonly string[] TargetIds =
    [
        "safetensors-parse", "safetensors-open", "config", "index", "tokenizer-config",
        "gguf-open", "gguf-large", "gguf-convert", "hub-headers", "tokenizer-json", "tokenizer-model",
    ];

    /// <summary>All targets on one thread. Without llama.cpp seeds: a test host loads llama.cpp's native library its own way.</summary>
    public static FuzzResult Run(int count, int seed, TextWriter log) =>
        Run(new FuzzOptions { Inputs = count, Seed = seed, LlamaCppSeeds = false }, log);

    public static FuzzResult Run(FuzzOptions o, TextWriter log)
    {
        string root = RepoRoot();
        string parent = o.WorkDir ?? (Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath()); // tmpfs: no disk in the loop
        string work = Path.Combine(parent, "layerprune-fuzz-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(work);
        try { return RunIn(root, work, o, log); }
        finally { try { Directory.Delete(work, true); } catch (IOException) { } }
    }

    /// <summary>Per-target counters of one worker.</summary>
    sealed class Tally
    {
        public long Inputs, Rejected, CpuTicks; public double MaxCpuMs, MaxWallMs, WallMs;
        public void Add(Tally t)
        {
            Inputs += t.Inputs; Rejected += t.Rejected; CpuTicks += t.CpuTicks; WallMs += t.WallMs;
            MaxCpuMs = Math.Max(MaxCpuMs, t.MaxCpuMs); MaxWallMs = Math.Max(MaxWallMs, t.MaxWallMs);
        }
    }

    static FuzzResult RunIn(string root, string work, FuzzOptions o, TextWriter log)
    {
        var ggufSeeds = GgufSeeds(root, Path.Combine(work, "seeds"), o, log);
        // Each worker: its own folder, targets and Random(seed + worker).
        var workers = Enumerable.Range(0, Math.Max(1, o.Jobs)).Select(w =>
        {
            string dir = Path.Combine(work, $"w{w}");
            Directory.CreateDirectory(dir);
            var all = CoreTargets(root, dir).Concat(ModelInputTargets(root, dir, ggufSeeds)).ToList();
            if (o.Targets is { Count: > 0 } filter)
            {
                foreach (var f in filter)
                    if (!all.Any(x => Matches(x.t.Id, f)))
                        throw new ArgumentException($"--targets: '{f}' is no target (targets: {string.Join(", ", TargetIds)})");
                all = all.Where(x => filter.Any(f => Matches(x.t.Id, f))).ToList();
            }
            foreach (var (id, weight) in o.Weights)
            {
                int i = all.FindIndex(x => x.t.Id == id);
                if (i < 0) throw new ArgumentException($"--weights: '{id}' is not a selected target");
                all[i] = (all[i].t, weight);
            }
            return all.Where(x => x.weight > 0).ToList();
        }).ToList();
        var targets = workers[0];
        var labels = targets.Select(x => $"{x.t.Id} {x.weight}");
        log.WriteLine($"fuzz: {o.Inputs} inputs, seed {o.Seed}, {workers.Count} worker(s) " +
                      $"(seeds {o.Seed}..{o.Seed + workers.Count - 1}), " +
                      $"targets (weight): {string.Join(", ", labels)}");

        var tallies = workers.Select(t => t.ToDictionary(x => x.t.Id, _ => new Tally())).ToList();
        var reports = new List<string>();
        var examples = new Dictionary<string, List<string>>();
        int failures = 0;
        long done = 0;
        var busySince = new long[workers.Count]; // Stopwatch timestamp of the input in flight, 0: none
        var inFlight = new (string Target, byte[] Input)?[workers.Count];
        var sw = Stopwatch.StartNew();
        void Report(string target, string problem, byte[] input)
        {
            lock (reports)
            {
                failures++;
                if (reports.Count >= 20) return;
                string report = $"[{target}] {problem}\n  input (base64): " +
                                Convert.ToBase64String(input.Length > 4096 ? input[..4096] : input);
                reports.Add(report);
                log.WriteLine(report);
            }
        }
        void Work(int w)
        {
            var rng = new Random(o.Seed + w);
            var ts = workers[w];
            int totalWeight = ts.Sum(x => x.weight);
            long mine = o.Inputs / workers.Count + (w < o.Inputs % workers.Count ? 1 : 0);
            for (long i = 0; i < mine; i++)
            {
                int pick = rng.Next(totalWeight);
                var target = ts.First(x => (pick -= x.weight) < 0).t;
                var seedInput = target.Seeds[rng.Next(target.Seeds.Count)];
                var input = target.Mutator is { } mutator ? mutator(rng, seedInput) : Mutate(rng, seedInput, target.Seeds);
                var tally = tallies[w][target.Id];
                long alloc0 = GC.GetAllocatedBytesForCurrentThread();
                long cpu0 = ThreadCpu.Ticks();
                long t0 = Stopwatch.GetTimestamp();
                inFlight[w] = (target.Name, input);
                Volatile.Write(ref busySince[w], t0);
                string? problem = null;
                try { target.Run(input); }
                catch (LayerPruneException e)
                {
                    tally.Rejected++;
                    // A rejection is what the user reads: one line, naming the input.
                    if (e.Message.Contains('\n') || e.Message.Contains('\r'))
                        problem = $"multi-line message: {e.Message.Replace("\n", "\\n").Replace("\r", "\\r")}";
                    else if (target.InputName is { } n && !e.Message.Contains(n, StringComparison.Ordinal))
                        problem = $"message does not name {n}: {e.Message}";
                    // Readers that name their input also keep it short (GGUF quotes at most 80 characters of a read string);
                    // the JSON readers still echo a 100,000-character value whole (one line, but long).
                    else if (target.InputName is not null && e.Message.Length > 600)
                        problem = $"message of {e.Message.Length} characters: {e.Message[..200]}…";
                    else lock (examples)
                    {
                        var list = examples.TryGetValue(target.Id, out var l) ? l : examples[target.Id] = [];
                        if (list.Count < 3) list.Add(e.Message);
                    }
                }
                catch (Exception e) { problem = $"crash {e.GetType().FullName}: {e.Message.Split('\n')[0]}"; }
                Volatile.Write(ref busySince[w], 0);
                double wallMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                long cpu = ThreadCpu.Ticks() - cpu0;
                double cpuMs = cpu / 1e6;
                long alloc = GC.GetAllocatedBytesForCurrentThread() - alloc0;
                tally.Inputs++; tally.CpuTicks += cpu; tally.WallMs += wallMs;
                tally.MaxCpuMs = Math.Max(tally.MaxCpuMs, cpuMs); tally.MaxWallMs = Math.Max(tally.MaxWallMs, wallMs);
                // Hangs are judged by this thread's CPU time, which other processes on a loaded machine do not inflate.
                if (problem is null && cpuMs > target.HangMillis) problem = $"hang: {cpuMs:F0} ms CPU ({wallMs:F0} ms wall)";
                // A reader may allocate in proportion to its input (a 16 MB GGUF holds 16 MB of strings); beyond that, a blow-up.
                if (problem is null && alloc > MaxAllocBytes + AllocPerInputByte * input.Length)
                    problem = $"allocation: {alloc >> 20} MB for {input.Length} bytes of input";
                if (problem is not null) Report(target.Name, problem, input);
                Interlocked.Increment(ref done);
            }
        }
        var threads = Enumerable.Range(0, workers.Count).Select(w => new Thread(() => Work(w), 16 << 20) { IsBackground = true }).ToList();
        foreach (var t in threads) t.Start();
        var nextProgress = o.ProgressSeconds > 0 ? o.ProgressSeconds : double.MaxValue;
        while (threads.Any(t => t.IsAlive))
        {
            threads.First(t => t.IsAlive).Join(1000);
            // Watchdog: an input still running after WatchdogSeconds of wall time is an endless loop (or a dead machine).
            for (int w = 0; w < workers.Count; w++)
            {
                long since = Volatile.Read(ref busySince[w]);
                if (since != 0 && Stopwatch.GetElapsedTime(since).TotalSeconds > o.WatchdogSeconds && inFlight[w] is var (name, input))
                {
                    Report(name, $"no return after {o.WatchdogSeconds} s wall", input);
                    log.WriteLine($"fuzz: stopped by the watchdog after {Interlocked.Read(ref done)} inputs");
                    log.Flush();
                    Environment.Exit(3);
                }
            }
            if (sw.Elapsed.TotalSeconds >= nextProgress)
            {
                long n = Interlocked.Read(ref done);
                log.WriteLine($"progress: {n} inputs in {sw.Elapsed.TotalSeconds:F0} s ({n / sw.Elapsed.TotalSeconds:F0}/s), " +
                              $"failures {failures}, load {LoadAverage()}");
                log.Flush();
                nextProgress += o.ProgressSeconds;
            }
        }
        double seconds = sw.Elapsed.TotalSeconds;
        var total = targets.ToDictionary(x => x.t.Id, _ => new Tally());
        foreach (var t in tallies) foreach (var (id, tally) in t) total[id].Add(tally);
        log.WriteLine($"fuzz: {o.Inputs} inputs in {seconds:F1} s ({o.Inputs / seconds:F0} inputs/s), seed {o.Seed}, " +
                      $"jobs {workers.Count}, " +
                      $"failures {failures}, load {LoadAverage()}");
        foreach (var (id, t) in total)
            log.WriteLine($"  {id}: {t.Inputs} inputs, {t.Rejected} rejected, CPU {t.CpuTicks / 1e9:F1} s " +
                          $"({(t.Inputs == 0 ? 0 : t.CpuTicks / 1e3 / t.Inputs):F0} µs/input, max {t.MaxCpuMs:F0} ms), " +
                          $"wall {t.WallMs / 1e3:F1} s (max {t.MaxWallMs:F0} ms)");
        foreach (var (id, list) in examples)
            foreach (var m in list) log.WriteLine($"  e.g. {id}: {m}");
        var perTarget = total.ToDictionary(kv => targets.First(x => x.t.Id == kv.Key).t.Name, kv => (int)kv.Value.Inputs);
        return new FuzzResult(o.Inputs, seconds, failures, perTarget, reports);
    }

    /// <summary>A --targets item selects a target by its id or an id prefix before '-' ("gguf": gguf-open and gguf-convert).</summary>
    static bool Matches(string id, string item) => id == item || id.StartsWith(item + "-", StringComparison.Ordinal);

    static string LoadAverage()
    {
        try { return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); } catch (IOException) { return "?"; }
    }

    static List<(Target t, int weight)> CoreTargets(string root, string work)
    {
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

        return
        [
            (new Target("safetensors-parse", "SafeTensorsFile.Parse", headers, input =>
            {
                // The fake file length: usually consistent with the data section, sometimes hostile.
                long length = (input.Length % 7) switch { 0 => 0, 1 => long.MaxValue, 2 => 8 + input.Length, _ => 8 + input.Length + 1_740_800 };
                SafeTensorsFile.Parse("fuzz.safetensors", input, length).Dispose();
            }), 40),
            (new Target("safetensors-open", "SafeTensorsFile.Open", smallSeeds, input =>
            {
                File.WriteAllBytes(stFile, input);
                using var f = SafeTensorsFile.Open(stFile);
                foreach (var name in f.Tensors.Keys.Take(3)) { using var ms = new MemoryStream(); f.CopyBytes(name, ms); }
            }), 10),
            (new Target("config", "ModelConfig.Parse", configs, input => ModelConfig.Parse(Encoding.UTF8.GetString(input), "config.json")), 20),
            (new Target("index", "Checkpoint.Open(index)", [Encoding.UTF8.GetBytes(index.ToJsonString())], input =>
            {
                File.WriteAllBytes(Path.Combine(shardDir, Checkpoint.IndexFile), input);
                Checkpoint.Open(shardDir).Dispose();
            }), 15),
            (new Target("tokenizer-config", "TokenizerLoader(tokenizer_config.json)", tokConfigs, input =>
            {
                File.WriteAllBytes(Path.Combine(tokDir, "tokenizer_config.json"), input);
                var tok = TokenizerLoader.Load(tokDir);
                tok.Decode(tok.Encode("ab <s> a"));
            }), 15),
        ];
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
