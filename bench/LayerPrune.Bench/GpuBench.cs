using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Efficiency;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Similarity;
using LayerPrune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace LayerPrune.Bench;

/// <summary>
/// The steps of bench/gpu/run.sh (issue 29), one per call, each writing STEP.json into --out:
/// <c>gpu parity|loss|cloze-requests|cloze|race|qlora|stream|report --out DIR [--device cuda|cpu] [--repo DIR] ...</c>.
/// The script runs them on the GPU with the real shapes and, with --dry-run, on the CPU with tiny shapes and fp32: the same
/// code paths. A step whose acceptance check fails exits 1 (after writing its JSON); docs/gpu.md lists what each measures.
/// </summary>
public static class GpuBench
{
    /// <summary>The golden architectures (tests/fixtures/golden), as GoldenParityTests runs them on the CPU.</summary>
    static readonly string[] Architectures = ["llama", "llama3rope", "mistral", "qwen2", "phi"];

    /// <summary>
    /// LoRA on all seven projections, α 16, dropout 0.05: r 64 as the 7B peer (bench/gpu/peer_hf_llama7b.py), r 8 (heal's
    /// default) for the 70B QLoRA step.
    /// </summary>
    static LoraSettings Lora(int rank = 64) => new(LoraSettings.AllLinear, rank, 16, 0.05);

    /// <summary>Runs one step; returns the exit code.</summary>
    public static int Run(TextWriter output, string[] args)
    {
        string? Opt(string name) => args.SkipWhile(a => a != name).Skip(1).FirstOrDefault();
        string Arg(string name, string fallback) => Opt(name) ?? fallback;
        int Int(string name, int fallback) => int.Parse(Arg(name, fallback.ToString()), System.Globalization.CultureInfo.InvariantCulture);
        // Usage errors are one line and exit code 2; a failing step keeps its stack trace (the GPU log needs it).
        string[] steps = ["parity", "loss", "cloze-requests", "cloze", "race", "qlora", "stream", "report"];
        string step = args.Length > 1 ? args[1] : "";
        string? outDir = Opt("--out");
        if (!steps.Contains(step) || outDir is null)
        {
            Console.Error.WriteLine(!steps.Contains(step) ? $"gpu: unknown step '{step}' (expected {string.Join(", ", steps)})"
                : $"gpu {step}: --out DIR is required");
            return 2;
        }
        string repo = Path.GetFullPath(Arg("--repo", "."));
        Directory.CreateDirectory(outDir);
        if (step == "report")
            return GpuReport.Write(output, outDir, Opt("--dir") ?? outDir, Arg("--command", ""), Arg("--gpu", "unknown"));
        if (Opt("--threads") is string threads)
            torch.set_num_threads(int.Parse(threads, System.Globalization.CultureInfo.InvariantCulture));
        var (device, _) = ComputeTarget.Resolve(Arg("--device", "cuda"), "fp32");
        // libtorch's default already keeps fp32 matmuls in fp32 (no TF32); say so explicitly, the parity numbers depend on it.
        if (device.type == DeviceType.CUDA) torch.backends.cuda.matmul.allow_tf32 = false;
        var dtype = ComputeTarget.Resolve(device.type == DeviceType.CUDA ? "cuda" : "cpu", Arg("--dtype", "bf16")).dtype;
        var sw = Stopwatch.StartNew();
        JsonObject r = step switch
        {
            "parity" => Parity(repo, device),
            "loss" => Loss(repo, device, Int("--chunks", 128)),
            "cloze-requests" => ClozeRequests(repo, outDir, Int("--rows", 20)),
            "cloze" => Cloze(repo, device, Opt("--hf"), Int("--rows", 20)),
            "race" => Race(device, dtype, Arg("--shape", Path.Combine(repo, "bench", "shapes", "llama-2-7b.json")), Opt("--work") ?? outDir,
                Int("--batch", 8), Int("--seq-len", 1024), Int("--train-batch", 4), Int("--train-seq-len", 1024), Int("--repeats", 5),
                Int("--train-steps", 6)),
            "qlora" => QLora(device, dtype, Arg("--shape", Path.Combine(repo, "bench", "shapes", "llama-2-70b.json")),
                Opt("--work") ?? outDir,
                Int("--batch", 4), Int("--seq-len", 1024), Int("--train-steps", 3), Int("--rank", 8)),
            "stream" => Stream(device, dtype, Arg("--shape", Path.Combine(repo, "bench", "shapes", "llama-2-70b.json")),
                Opt("--work") ?? outDir,
                Int("--batch", 8), Int("--seq-len", 1024)),
            _ => throw new InvalidOperationException(step),
        };
        r["step"] = step;
        r["device"] = device.ToString();
        r["wall_s"] = Math.Round(sw.Elapsed.TotalSeconds, 2);
        r["peak_rss_gb"] = ProcessMemory.Read()?.Peak is long peak ? Math.Round(peak / 1e9, 2) : null;
        WriteJson(Path.Combine(outDir, step + ".json"), r);
        bool failed = r["pass"] is JsonValue v && v.TryGetValue(out bool ok) && !ok;
        output.WriteLine($"gpu {step}: {(failed ? "FAILED" : "ok")} ({sw.Elapsed.TotalSeconds:F1} s) {r.ToJsonString()}");
        return failed ? 1 : 0;
    }

    /// <summary>Writes <paramref name="node"/> indented, through a temporary file renamed into place.</summary>
    public static void WriteJson(string path, JsonNode node)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, node.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.Move(tmp, path, overwrite: true);
    }

    static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) torch.cuda.synchronize();
    }

    static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a.cpu().to(ScalarType.Float64) - b.cpu().to(ScalarType.Float64)).abs().max();
        return d.item<double>();
    }

    // ---- 1. golden parity: fp32 logits (row 0 and a left-padded batch) within 1e-4 of HF, identical greedy ids ----
    static JsonObject Parity(string repo, Device device)
    {
        const double tol = 1e-4;
        var rows = new JsonArray();
        bool all = true;
        foreach (var arch in Architectures)
        {
            string dir = Path.Combine(repo, "tests", "fixtures", "golden", arch);
            using var reference = SafeTensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
            using var model = CausalLM.Load(dir, device, ScalarType.Float32);
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            var ids = reference.Load("input_ids");
            var mask = reference.Load("attention_mask");
            double row0 = MaxAbsDiff(model.Forward(ids.narrow(0, 0, 1))[0], reference.Load("logits_row0"));
            var padded = model.Forward(ids, mask);
            var expected = reference.Load("logits_batch_padded");
            long T = ids.shape[1];
            long firstValid = T - mask[1].sum().item<long>();
            double pad = Math.Max(MaxAbsDiff(padded[0], expected[0]),
                MaxAbsDiff(padded[1].narrow(0, firstValid, T - firstValid), expected[1].narrow(0, firstValid, T - firstValid)));
            var prompt = ids[0].narrow(0, 0, 8).data<long>().Select(x => (int)x).ToArray();
            var greedy = TextGenerator.Generate(model, prompt,
                new GenerationOptions { MaxNewTokens = 12, Greedy = true, StopAtEos = false });
            bool same = greedy.TokenIds.SequenceEqual(
                reference.Load("greedy_generate_row0_prompt8_new12").data<long>().Select(x => (int)x));
            bool pass = row0 <= tol && pad <= tol && same;
            all &= pass;
            rows.Add(new JsonObject
            {
                ["arch"] = arch, ["logits_row0_max_abs_diff"] = row0, ["padded_batch_max_abs_diff"] = pad,
                ["greedy_ids_identical"] = same, ["pass"] = pass,
            });
        }
        return new JsonObject { ["tolerance"] = tol, ["tf32"] = false, ["architectures"] = rows, ["pass"] = all };
    }

    // ---- 2. kjv validation loss: bf16 within 0.01 of fp32; fp32 within 1e-3 of HF's 2.94131 (the 128-chunk protocol) ----
    static JsonObject Loss(string repo, Device device, int chunks)
    {
        string dir = Path.Combine(repo, "samples", "kjv-llama-16l");
        var tok = TokenizerLoader.Load(dir);
        var data = TokenChunks.FromLines(TextCorpus.Read(Path.Combine(repo, "samples", "data", "kjv", "validation.txt")), tok, 256, chunks);
        var r = new JsonObject { ["chunks"] = data.Count, ["seq_len"] = 256 };
        var loss = new Dictionary<ScalarType, double>();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
        {
            using var model = CausalLM.Load(dir, device, dtype);
            LossEvaluator.Evaluate(model, data.Take(1).ToList());   // warm-up
            var sw = Stopwatch.StartNew();
            var result = LossEvaluator.Evaluate(model, data);
            loss[dtype] = result.ValidationLoss;
            r[ComputeTarget.Name(dtype)] = new JsonObject
            {
                ["loss"] = result.ValidationLoss, ["tokens_per_s"] = Math.Round(data.Count * 256 / sw.Elapsed.TotalSeconds, 1),
            };
        }
        double hf = ReferenceValue(repo, "validation_loss").GetValue<double>();
        double bf16Diff = Math.Abs(loss[ScalarType.BFloat16] - loss[ScalarType.Float32]);
        double hfDiff = Math.Abs(loss[ScalarType.Float32] - hf);
        bool full = data.Count == 128;
        r["hf_fp32"] = hf;
        r["bf16_minus_fp32_abs"] = bf16Diff;
        r["fp32_minus_hf_abs"] = hfDiff;
        r["fp32_judged"] = full ? "within 1e-3 of HF" : $"not judged: {data.Count} chunks, HF's protocol has 128";
        r["pass"] = bf16Diff <= 0.01 && (!full || hfDiff <= 1e-3);
        return r;
    }

    static JsonNode ReferenceValue(string repo, string key) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(repo, "tests", "fixtures", "reference", "kjv-llama-16l.json")))![key]!["value"]!;

    static List<IReadOnlyList<LoglikelihoodRequest>> ClozeRequestList(string repo, int rows)
    {
        var tok = TokenizerLoader.Load(Path.Combine(repo, "samples", "kjv-llama-16l"));
        return McTask.Load(Path.Combine(repo, "samples", "data", "kjv-cloze", "test.jsonl"), rows)
            .Select(d => (IReadOnlyList<LoglikelihoodRequest>)d.Continuations
                .Select(c => LoglikelihoodRequest.Build(tok, d.Context, c, addBos: true)).ToList()).ToList();
    }

    // ---- 3a. the token ids of the first 20 kjv-cloze rows' choices, for bench/gpu/hf_cloze_reference.py ----
    static JsonObject ClozeRequests(string repo, string outDir, int rows)
    {
        var requests = ClozeRequestList(repo, rows);
        var items = new JsonArray(requests.Select(item => (JsonNode?)new JsonArray(item.Select(q => (JsonNode?)new JsonObject
        {
            ["context"] = new JsonArray(q.ContextIds.Select(x => (JsonNode?)x).ToArray()),
            ["continuation"] = new JsonArray(q.ContinuationIds.Select(x => (JsonNode?)x).ToArray()),
        }).ToArray())).ToArray());
        string path = Path.Combine(outDir, "cloze_requests.json");
        WriteJson(path, new JsonObject
        {
            ["protocol"] = $"kjv-cloze test.jsonl rows 1-{rows}; per choice: context = [BOS] + sp(context), continuation = " +
                "([BOS] + sp(context + choice))[len(context):]; score = sum of log p(continuation tokens)",
            ["items"] = items,
        });
        return new JsonObject { ["rows"] = requests.Count, ["requests"] = path };
    }

    // ---- 3b. our fp32 per-choice log-likelihoods vs the shared reference (TF32) and, given, HF's TF32-free one ----
    static JsonObject Cloze(string repo, Device device, string? hfPath, int rows)
    {
        var requests = ClozeRequestList(repo, rows);
        using var model = CausalLM.Load(Path.Combine(repo, "samples", "kjv-llama-16l"), device, ScalarType.Float32);
        var ours = new LoglikelihoodScorer(model, batchSize: 16).Score(requests);
        var shared = ReferenceValue(repo, "choice_loglikelihoods_first20").AsArray();
        static double MaxDiff(List<double[]> a, JsonArray b) =>
            a.Select((row, i) => row.Select((v, c) => Math.Abs(v - (double)b[i]![c]!)).Max()).Max();
        var r = new JsonObject
        {
            ["rows"] = rows,
            ["ours_fp32"] = new JsonArray(ours.Select(row => (JsonNode?)new JsonArray(row.Select(v => (JsonNode?)v).ToArray())).ToArray()),
            ["ours_minus_shared_tf32_max_abs"] = MaxDiff(ours, shared),
        };
        if (hfPath is null || !File.Exists(hfPath))
        {
            r["hf_tf32_free"] = "not given (bench/gpu/hf_cloze_reference.py did not run)";
            return r;
        }
        var hf = JsonNode.Parse(File.ReadAllText(hfPath))!["value"]!.AsArray();
        double diff = MaxDiff(ours, hf);
        r["ours_minus_hf_tf32_free_max_abs"] = diff;
        r["hf_tf32_free_minus_shared_max_abs"] = Enumerable.Range(0, hf.Count)
            .Max(i => Enumerable.Range(0, 4).Max(c => Math.Abs((double)hf[i]![c]! - (double)shared[i]![c]!)));
        r["pass"] = diff <= 1e-3;
        return r;
    }

    /// <summary>Builds <paramref name="shapeJson"/> as a sparse checkpoint under <paramref name="work"/> and loads it.</summary>
    static (CausalLM Model, string Dir) Build(string shapeJson, string work, Device device, ScalarType dtype, bool offload)
    {
        if (device.type == DeviceType.CPU && dtype == ScalarType.BFloat16)
            throw new ArgumentException(
                "the random init writes into the loaded weights: on the CPU they must be converted copies (--dtype fp32)");
        string dir = Path.Combine(work, Path.GetFileNameWithoutExtension(shapeJson) + "-sparse");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        SparseCheckpoint.Write(shapeJson, dir);
        return (CausalLM.Load(dir, device, dtype, offload), dir);
    }

    static List<int[]> RandomIds(int count, int length, int vocab, int seed)
    {
        using var g = new Generator((ulong)seed);
        using var ids = randint(0, vocab, [count, length], generator: g, dtype: ScalarType.Int64);
        var flat = ids.data<long>().ToArray();
        return Enumerable.Range(0, count).Select(b => flat.Skip(b * length).Take(length).Select(x => (int)x).ToArray()).ToList();
    }

    /// <summary>Mean seconds of <paramref name="n"/> runs after one warm-up.</summary>
    static double Mean(int n, Device device, Action a)
    {
        a();
        Sync(device);
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < n; i++) a();
        Sync(device);
        return sw.Elapsed.TotalSeconds / n;
    }

    /// <summary>The peer script's FLOP count of a forward: 2·params·tokens + causal attention 4·L·T²·H·B/2.</summary>
    static double ForwardFlops(ModelConfig c, long nparam, int batch, int seqLen) =>
        2.0 * nparam * batch * seqLen + 4.0 * c.NumLayers * seqLen * (double)seqLen * c.HiddenSize * batch / 2;

    static JsonObject Rate(double seconds, double tokens, double flops) => new()
    {
        ["tokens_per_s"] = Math.Round(tokens / seconds, 1), ["s"] = Math.Round(seconds, 4),
        ["tflops"] = Math.Round(flops / seconds / 1e12, 2),
    };

    /// <summary>Forward, LoRA (r 64 on every projection, checkpointing, AdamW) train steps; mean seconds of the timed ones.</summary>
    static double TrainSeconds(CausalLM model, List<int[]> seqs, List<TorchSharp.Modules.Parameter> parameters, torch.optim.Optimizer opt,
        int steps, Device device)
    {
        int warm = Math.Max(1, steps / 3);
        Stopwatch? sw = null;
        for (int i = 0; i < steps; i++)
        {
            if (i == warm)
            {
                Sync(device);
                sw = Stopwatch.StartNew();
            }
            opt.zero_grad();
            using (var loss = Healer.Loss(model, seqs))
                loss.backward();
            opt.step();
        }
        Sync(device);
        return sw!.Elapsed.TotalSeconds / (steps - warm);
    }

    // ---- 4. the race on the 7B shape: forward, similarity pass, LoRA training (peer: bench/gpu/peer_hf_llama7b.py) ----
    static JsonObject Race(Device device, ScalarType dtype, string shape, string work, int batch, int seqLen, int trainBatch,
        int trainSeqLen, int repeats, int trainSteps)
    {
        var sw = Stopwatch.StartNew();
        var (model, dir) = Build(shape, work, device, dtype, offload: false);
        using var _m = model;
        using var gen = new Generator(0, device);
        SparseCheckpoint.Randomize(model.NamedTensors(), gen);
        Sync(device);
        double loadS = sw.Elapsed.TotalSeconds;
        long nparam = model.NamedTensors().Sum(t => t.tensor.NumberOfElements);
        var c = model.Config;
        var r = new JsonObject
        {
            ["shape"] = Path.GetFileNameWithoutExtension(shape), ["dtype"] = ComputeTarget.Name(dtype), ["params"] = nparam,
            ["load_and_init_s"] = Math.Round(loadS, 2), ["batch"] = batch, ["seq_len"] = seqLen,
        };
        var samples = RandomIds(batch, seqLen, c.VocabSize, 1);
        using var ids = tensor(samples.SelectMany(s => s.Select(x => (long)x)).ToArray(), [batch, seqLen]);
        double fwdFlops = ForwardFlops(c, nparam, batch, seqLen);
        double fwd = Mean(repeats, device, () =>
        {
            using var _ = no_grad();
            using var logits = model.Forward(ids);
        });
        r["forward"] = Rate(fwd, batch * seqLen, fwdFlops);
        // The similarity pass: every residual stream at the last token, all pairwise angular distances (the peer's fwd_hidden).
        double sim = Mean(repeats, device, () => LayerSimilarity.Compute(model, samples, batchSize: batch));
        r["similarity"] = Rate(sim, batch * seqLen, fwdFlops);

        var adapters = LoraInjector.Inject(model.NamedLinears(), Lora(), 0);
        using var dropout = new Generator(1, device);
        foreach (var (_, a) in adapters) a.DropoutGenerator = dropout;
        model.GradientCheckpointing = new GradientCheckpointing { PreservedGenerators = [dropout] };
        var parameters = adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
        using var opt = torch.optim.AdamW(parameters, 1e-4);
        var seqs = RandomIds(trainBatch, trainSeqLen, c.VocabSize, 2);
        double step = TrainSeconds(model, seqs, parameters, opt, trainSteps, device);
        // Model FLOPs of a training step: 3 × the forward (forward + backward), recompute not counted (MFU convention).
        r["lora_train"] = Rate(step, trainBatch * trainSeqLen, 3 * ForwardFlops(c, nparam, trainBatch, trainSeqLen));
        r["lora_train"]!["batch"] = trainBatch;
        r["lora_train"]!["seq_len"] = trainSeqLen;
        r["lora_train"]!["trainable_params"] = parameters.Sum(p => p.NumberOfElements);
        model.GradientCheckpointing = null;
        Directory.Delete(dir, recursive: true);
        return r;
    }

    // ---- 5a. QLoRA at 70B shape: NF4 base quantized layer by layer on the device, LoRA (r 8), checkpointed steps ----
    static JsonObject QLora(Device device, ScalarType dtype, string shape, string work, int batch, int seqLen, int steps, int rank)
    {
        var sw = Stopwatch.StartNew();
        var (model, dir) = Build(shape, work, device, dtype, offload: true);
        using var _m = model;
        using var gen = new Generator(0, device);
        SparseCheckpoint.Randomize(model.StateDict(), gen);   // embeddings, final norm, head (the layers are not resident)
        SparseCheckpoint.RandomizeEachLoadedLayer(model, gen);
        foreach (var (_, t) in model.StateDict()) t.requires_grad_(false);
        var adapters = LoraInjector.Inject(model.LinearsLayerByLayer(model.KeepResident), Lora(rank), 0, BaseQuantization.Nf4);
        model.LayerLoaded = null;
        Sync(device);
        double quantS = sw.Elapsed.TotalSeconds;
        using var dropout = new Generator(1, device);
        foreach (var (_, a) in adapters) a.DropoutGenerator = dropout;
        model.GradientCheckpointing = new GradientCheckpointing { PreservedGenerators = [dropout] };
        var parameters = adapters.SelectMany(a => a.Adapter.Parameters()).ToList();
        using var opt = torch.optim.AdamW(parameters, 1e-4);
        var seqs = RandomIds(batch, seqLen, model.Config.VocabSize, 2);
        double step = TrainSeconds(model, seqs, parameters, opt, steps, device);
        double lossValue;
        using (no_grad())
        using (var loss = Healer.Loss(model, seqs))
            lossValue = loss.to(ScalarType.Float64).item<double>();
        var c = model.Config;
        long nparam = model.Checkpoint.ParameterCount;
        Directory.Delete(dir, recursive: true);
        return new JsonObject
        {
            ["shape"] = Path.GetFileNameWithoutExtension(shape), ["layers"] = c.NumLayers, ["hidden"] = c.HiddenSize,
            ["kv_heads"] = c.NumKvHeads, ["params"] = nparam, ["dtype"] = ComputeTarget.Name(dtype),
            ["load_quantize_s"] = Math.Round(quantS, 2), ["lora_rank"] = rank, ["batch"] = batch, ["seq_len"] = seqLen,
            ["step_s"] = Math.Round(step, 3), ["tokens_per_s"] = Math.Round(batch * seqLen / step, 1),
            ["trainable_params"] = parameters.Sum(p => p.NumberOfElements), ["loss_after"] = lossValue,
            ["pass"] = double.IsFinite(lossValue),
        };
    }

    // ---- 5b. a similarity pass of a model streamed from the host one layer at a time (70B shape: 138 GB of bf16) ----
    static JsonObject Stream(Device device, ScalarType dtype, string shape, string work, int batch, int seqLen)
    {
        var (model, dir) = Build(shape, work, device, dtype, offload: true);
        using var _m = model;
        using var gen = new Generator(0, device);
        SparseCheckpoint.Randomize(model.StateDict(), gen);
        SparseCheckpoint.RandomizeEachLoadedLayer(model, gen);
        var samples = RandomIds(batch, seqLen, model.Config.VocabSize, 1);
        var sw = Stopwatch.StartNew();
        var result = LayerSimilarity.Compute(model, samples, batchSize: batch);
        Sync(device);
        double s = sw.Elapsed.TotalSeconds;
        long bytes = model.Checkpoint.StorageBytes;
        Directory.Delete(dir, recursive: true);
        return new JsonObject
        {
            ["shape"] = Path.GetFileNameWithoutExtension(shape), ["dtype"] = ComputeTarget.Name(dtype), ["batch"] = batch,
            ["seq_len"] = seqLen, ["checkpoint_gb"] = Math.Round(bytes / 1e9, 2), ["s"] = Math.Round(s, 2),
            ["tokens_per_s"] = Math.Round(batch * seqLen / s, 1), ["weights_gb_per_s"] = Math.Round(bytes / 1e9 / s, 2),
            ["layer_reads"] = model.LayerReads, ["pass"] = result.Matrix.Cast<double>().All(double.IsFinite),
        };
    }
}
