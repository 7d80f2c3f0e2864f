using TorchSharp;
using System.Diagnostics;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Healing;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tokenization;
using static TorchSharp.torch;

namespace LayerPrune.Tests.Healing;

/// <summary>
/// A 2-layer model cut from samples/kjv-llama-16l (layers 0 and 15 kept) in bf16 (as stored) and an fp32 copy, plus a
/// small training text (the first 150 lines of kjv train.txt). Built once per test class in a temp folder.
/// </summary>
public sealed class HealFixture : IDisposable
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "lp-heal-" + Guid.NewGuid().ToString("N")[..8]);
    public string Bf16 => Path.Combine(Root, "kjv2-bf16");
    public string Fp32 => Path.Combine(Root, "kjv2-fp32");
    public string Train => Path.Combine(Root, "train.txt");

    public HealFixture()
    {
        Directory.CreateDirectory(Root);
        using (var src = Checkpoint.Open(Path.Combine(TestPaths.Samples, "kjv-llama-16l")))
            CheckpointPruner.Write(src, PrunePlan.FromLayerSpec("1-14", 16), Bf16);
        Directory.CreateDirectory(Fp32);
        using (var ck = Checkpoint.Open(Bf16))
        {
            var tensors = ck.WeightMap.Keys.Select(n => { using var t = ck.Load(n); return TensorToWrite.FromTensor(n, t.to(ScalarType.Float32)); }).ToList();
            SafeTensorsWriter.Write(Path.Combine(Fp32, Checkpoint.SingleFile), tensors);
        }
        foreach (var f in Directory.EnumerateFiles(Bf16).Where(f => !f.EndsWith(".safetensors")))
            File.Copy(f, Path.Combine(Fp32, Path.GetFileName(f)));
        File.WriteAllLines(Train, File.ReadLines(Path.Combine(TestPaths.Samples, "data", "kjv", "train.txt")).Take(150));
    }

    public string NewOut() => Path.Combine(Root, "out-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>Small, fast settings: 4 × 32 tokens per step, r 4, micro-batches of 2 (accumulation), dropout on.</summary>
    public HealOptions Options(string model, string outDir, int steps = 6) => new()
    {
        ModelDir = model, DataPath = Train, OutDir = outDir, Steps = steps, Batch = 4, MicroBatch = 2, SeqLen = 32,
        Rank = 4, Alpha = 8, Dropout = 0.05, LearningRate = 2e-3, Warmup = 1, Quant = BaseQuantization.None,
        EvalDataPath = Train, EvalEvery = 3, EvalChunks = 4, SaveEvery = 2, Seed = 7,
    };

    public void Dispose() { try { Directory.Delete(Root, true); } catch (IOException) { } }
}

public sealed class HealerTests(HealFixture fx) : IClassFixture<HealFixture>
{
    static double LossOn(string modelDir, IReadOnlyList<int[]> chunks)
    {
        using var m = CausalLM.Load(modelDir);
        return LossEvaluator.Evaluate(m, chunks).ValidationLoss;
    }

    [Fact]
    public void FewSteps_ReduceTrainingLoss_Nf4_MergedKeepsNamesAndBf16()
    {
        string outDir = fx.NewOut();
        var r = Healer.Run(fx.Options(fx.Bf16, outDir, steps: 8) with { Quant = BaseQuantization.Nf4, Dropout = 0 });
        Assert.True(r.Completed);
        var chunks = TokenChunks.FromLines(TextCorpus.Read(fx.Train), TokenizerLoader.Load(fx.Bf16), 32, 16);
        double before = LossOn(fx.Bf16, chunks), after = LossOn(Path.Combine(outDir, "merged"), chunks);
        Assert.True(after < before - 0.05, $"training-data loss {before:F4} → {after:F4}");
        // The reported merged loss is the merged checkpoint's loss on the eval data (the first 4 chunks of the same file).
        Assert.Equal(LossOn(Path.Combine(outDir, "merged"), chunks.Take(4).ToList()), r.MergedValLoss!.Value, 1e-6);
        // Merged: the same tensor names, dtypes and shapes as the input (bf16 stays bf16), side files copied.
        using var src = SafeTensorsFile.Open(Path.Combine(fx.Bf16, "model.safetensors"));
        using var merged = SafeTensorsFile.Open(Path.Combine(outDir, "merged", "model.safetensors"));
        Assert.Equal(src.Tensors.Keys.Order(), merged.Tensors.Keys.Order());
        foreach (var (name, info) in src.Tensors)
        {
            Assert.Equal(info.Dtype, merged.Tensors[name].Dtype);
            Assert.Equal(info.Shape, merged.Tensors[name].Shape);
        }
        Assert.Equal("BF16", merged.Tensors["model.layers.0.mlp.down_proj.weight"].Dtype);
        Assert.Equal(File.ReadAllText(Path.Combine(fx.Bf16, "config.json")), File.ReadAllText(Path.Combine(outDir, "merged", "config.json")));
        Assert.True(File.Exists(Path.Combine(outDir, "merged", "tokenizer.model")));
        Assert.False(Directory.Exists(Healer.PartialDir(outDir)));
    }

    [Fact]
    public void InterruptedAndResumed_EqualsUninterrupted()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        Healer.Run(fx.Options(fx.Fp32, a));
        var first = Healer.Run(fx.Options(fx.Fp32, b), onStep: s => s.Step < 3); // the step callback stops the run after step 3
        Assert.False(first.Completed);
        Assert.Equal(3, first.Steps);
        Assert.False(Directory.Exists(b));
        Assert.Throws<LayerPruneException>(() => Healer.Run(fx.Options(fx.Fp32, b))); // an interrupted run needs --resume or --force
        var second = Healer.Run(fx.Options(fx.Fp32, b) with { Resume = true });
        Assert.True(second.Completed);
        double diff = HealingTestUtil.MaxDiff(HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors")), HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors")));
        Assert.True(diff <= 1e-5, $"adapters differ by {diff}");
        // The logs agree step by step (losses recomputed after the resume match the uninterrupted run).
        var la = File.ReadAllLines(Path.Combine(a, "train_log.jsonl"));
        var lb = File.ReadAllLines(Path.Combine(b, "train_log.jsonl"));
        Assert.Equal(6, la.Length);
        Assert.Equal(la.Length, lb.Length);
        for (int i = 0; i < la.Length; i++)
            Assert.Equal(JsonNode.Parse(la[i])!["loss"]!.GetValue<double>(), JsonNode.Parse(lb[i])!["loss"]!.GetValue<double>(), 1e-5);
    }

    [Fact]
    public void SessionDrivenStepByStep_OnInMemoryModel_EqualsRun()
    {
        string a = fx.NewOut(), b = fx.NewOut();
        var ra = Healer.Run(fx.Options(fx.Fp32, a));
        using var model = CausalLM.Load(fx.Fp32);
        var steps = new List<HealStep>();
        HealResult rb;
        // ModelDir "" is filled in from the in-memory model's checkpoint folder.
        using (var session = HealSession.Open(model, fx.Options("", b)))
        {
            Assert.Equal(Path.GetFullPath(fx.Fp32), Path.GetFullPath(session.Options.ModelDir));
            while (!session.IsFinished)
                steps.Add(session.Step());
            Assert.Throws<InvalidOperationException>(() => session.Step());
            rb = session.Export();
        }
        Assert.Equal([1, 2, 3, 4, 5, 6], steps.Select(s => s.Step));
        Assert.Equal([3, 6], steps.Where(s => s.ValLoss is not null).Select(s => s.Step));   // EvalEvery 3 and the last step
        Assert.Equal([2, 4, 6], steps.Where(s => s.CheckpointSaved).Select(s => s.Step));    // SaveEvery 2
        Assert.True(steps[0].LearningRate == 0 && steps[1].LearningRate == 2e-3, "warmup 1 then the cosine peak");
        double diff = HealingTestUtil.MaxDiff(HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors")), HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors")));
        Assert.True(diff <= 1e-5, $"adapters differ by {diff}");
        Assert.Equal(ra.FinalValLoss!.Value, rb.FinalValLoss!.Value, 1e-5);
        Assert.Equal(ra.MergedValLoss!.Value, rb.MergedValLoss!.Value, 1e-5);
        Assert.Equal(ra.FinalValLoss.Value, steps[^1].ValLoss!.Value, 1e-5);
        // The in-memory model was healed in place: it now has the adapters, and its loss is the healed one.
        Assert.All(model.NamedLinears(), l => Assert.NotNull(l.linear.Adapter));
        Assert.False(Directory.Exists(Healer.PartialDir(b)));
    }

    [Fact]
    public void KilledCliProcess_ResumesToSameAdapters()
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "layerprune.dll");
        Assert.True(File.Exists(dll), dll);
        string a = fx.NewOut(), b = fx.NewOut();
        const int steps = 30;
        var o = fx.Options(fx.Fp32, a, steps) with { SaveEvery = 5, EvalDataPath = null };
        Healer.Run(o);
        string[] args = ["exec", dll, "heal", "--model", fx.Fp32, "--data", fx.Train, "--out", b, "--steps", $"{steps}", "--batch", "4",
            "--micro-batch", "2", "--seq-len", "32", "--rank", "4", "--alpha", "8", "--dropout", "0.05", "--lr", "2e-3", "--warmup", "1",
            "--quant", "none", "--save-every", "5", "--seed", "7", "--device", "cpu", "--dtype", "fp32", "--quiet"];
        // The test host heals with the same settings (the options the CLI flags above build) and a step callback that
        // SIGKILLs the process after step 12: a hard kill at a deterministic point, between checkpoints (save-every 5 → the
        // last checkpoint is step 10, steps 11–12 are lost and redone). The CLI then refuses and resumes that run.
        string optionsJson = Path.Combine(fx.Root, $"heal-options-{Guid.NewGuid():N}.json");
        File.WriteAllText(optionsJson, System.Text.Json.JsonSerializer.Serialize(o with { OutDir = b }));
        using (var p = Process.Start(TestHostProcess.StartInfo("heal", optionsJson, "--kill-at-step", "12"))!)
        {
            p.StandardError.ReadToEnd();
            Assert.True(p.WaitForExit(120_000));
            Assert.Equal(137, p.ExitCode); // 128 + SIGKILL
        }
        Assert.False(Directory.Exists(b), "a killed run must leave nothing under the final --out name");
        Assert.True(Directory.Exists(Healer.PartialDir(b)));
        // Without --resume the interrupted run is refused (exit 2) rather than silently restarted.
        using (var p = Process.Start(new ProcessStartInfo("dotnet", args) { RedirectStandardOutput = true, RedirectStandardError = true })!)
        {
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.Equal(2, p.ExitCode);
            Assert.Contains("--resume", err);
        }
        using (var p = Process.Start(new ProcessStartInfo("dotnet", [.. args, "--resume"]) { RedirectStandardOutput = true, RedirectStandardError = true })!)
        {
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, err);
        }
        double diff = HealingTestUtil.MaxDiff(HealingTestUtil.ReadAll(Path.Combine(a, "adapter_model.safetensors")), HealingTestUtil.ReadAll(Path.Combine(b, "adapter_model.safetensors")));
        Assert.True(diff <= 1e-5, $"adapters differ by {diff}");
        Assert.Equal(steps, File.ReadAllLines(Path.Combine(b, "train_log.jsonl")).Length);
    }

    [Fact]
    public void Outputs_PeftKeysConfig_AndMergedLogitsEqualBasePlusAdapter()
    {
        string outDir = fx.NewOut();
        Healer.Run(fx.Options(fx.Fp32, outDir, steps: 4));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "adapter_config.json")))!.AsObject();
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal(4, config["r"]!.GetValue<int>());
        Assert.Equal(8, config["lora_alpha"]!.GetValue<int>());
        Assert.Equal(LoraSettings.AllLinear, config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
        var tensors = HealingTestUtil.ReadAll(Path.Combine(outDir, "adapter_model.safetensors"));
        var expected = new List<string>();
        foreach (int i in new[] { 0, 1 })
            foreach (var m in new[] { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" })
                expected.AddRange([$"base_model.model.model.layers.{i}.{m}.lora_A.weight", $"base_model.model.model.layers.{i}.{m}.lora_B.weight"]);
        Assert.Equal(expected.Order(), tensors.Keys.Order());
        Assert.Equal(new long[] { 4, 256 }, tensors["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"].shape);
        Assert.Equal(new long[] { 128, 4 }, tensors["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"].shape);
        Assert.Equal(new long[] { 688, 4 }, tensors["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"].shape);
        Assert.True(tensors.Values.All(t => t.dtype == ScalarType.Float32));

        // Base (fp32) + re-attached adapters vs the merged checkpoint: same logits.
        using var ids = tensor(TokenChunks.FromLines(TextCorpus.Read(fx.Train), TokenizerLoader.Load(fx.Fp32), 32, 2).SelectMany(c => c.Select(x => (long)x)).ToArray(), [2, 32]);
        using var baseModel = CausalLM.Load(fx.Fp32);
        using var plainLogits = baseModel.Forward(ids);
        var adapters = PeftAdapterFiles.Attach(baseModel.NamedLinears(), tensors, config);
        Assert.Equal(14, adapters.Count);
        using var adapted = baseModel.Forward(ids);
        using var merged = CausalLM.Load(Path.Combine(outDir, "merged"));
        using var mergedLogits = merged.Forward(ids);
        double changed = (adapted - plainLogits).abs().max().ToDouble();
        double diff = (adapted - mergedLogits).abs().max().ToDouble();
        Assert.True(changed > 1e-2, $"training changed logits by only {changed}");
        Assert.True(diff <= 1e-4, $"merged vs base+adapter logits differ by {diff}");
    }

    [Fact]
    public void Schedule_MatchesFormula_AndLogUsesIt()
    {
        const double lr = 3e-4;
        Assert.Equal(lr, LrSchedule.Cosine(lr, 0, 0, 300), 15);
        Assert.Equal(lr * 0.5 * (1 + Math.Cos(Math.PI / 4)), LrSchedule.Cosine(lr, 75, 0, 300), 15);
        Assert.Equal(lr / 2, LrSchedule.Cosine(lr, 150, 0, 300), 15);
        Assert.Equal(0.0, LrSchedule.Cosine(lr, 300, 0, 300), 15);
        // Warmup 100 of 300: linear 0 → lr, then cosine over the remaining 200 steps.
        Assert.Equal(0.0, LrSchedule.Cosine(lr, 0, 100, 300), 15);
        Assert.Equal(lr / 2, LrSchedule.Cosine(lr, 50, 100, 300), 15);
        Assert.Equal(lr, LrSchedule.Cosine(lr, 100, 100, 300), 15);
        Assert.Equal(lr / 2, LrSchedule.Cosine(lr, 200, 100, 300), 15);
        Assert.Equal(lr * 0.5 * (1 + Math.Cos(Math.PI * 0.75)), LrSchedule.Cosine(lr, 250, 100, 300), 15);

        string outDir = fx.NewOut();
        var o = fx.Options(fx.Fp32, outDir, steps: 5) with { Warmup = 2, EvalDataPath = null, Batch = 2, MicroBatch = null };
        Healer.Run(o);
        var lines = File.ReadAllLines(Path.Combine(outDir, "train_log.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(5, lines.Count);
        for (int s = 0; s < 5; s++)
        {
            Assert.Equal(s + 1, lines[s]["step"]!.GetValue<int>());
            Assert.Equal(LrSchedule.Cosine(2e-3, s, 2, 5), lines[s]["lr"]!.GetValue<double>(), 15);
        }
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "heal_summary.json")))!;
        Assert.Equal(5, summary["steps"]!.GetValue<int>());
        // r·(in + out) per adapted projection: q 256+256, k 256+128, v 256+128, o 256+256, gate/up 256+688, down 688+256; 2 layers, r 4.
        Assert.Equal(2 * 4 * (512 + 384 + 384 + 512 + 944 + 944 + 944), summary["trainable_parameters"]!.GetValue<long>());
    }

    [Fact]
    public void Recipes_AndBadValues()
    {
        var config = ModelConfig.Load(fx.Bf16);
        var paper = HealRecipes.Apply(fx.Options(fx.Bf16, fx.NewOut()) with { Recipe = "paper", Steps = 300 }, config);
        Assert.Equal(["gate_proj", "up_proj", "down_proj"], paper.Targets!);
        Assert.Equal((8, 8.0, 3e-4, 100, 16, 0.05), (paper.Rank, paper.Alpha, paper.LearningRate, paper.Warmup, paper.Batch, paper.Dropout));
        Assert.Equal(["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"], HealRecipes.AllLinear(ArchitectureFamily.Phi));

        var bad = fx.Options(fx.Fp32, fx.NewOut());
        // Errors name the options property (the CLI shows it as its flag, e.g. --micro-batch).
        LayerPruneException Bad(HealOptions o) => Assert.Throws<LayerPruneException>(() => Healer.Run(o));
        Assert.Equal(nameof(HealOptions.MicroBatch), Bad(bad with { MicroBatch = 5 }).ParameterName);
        Assert.Equal(nameof(HealOptions.Dropout), Bad(bad with { Dropout = 1 }).ParameterName);
        Assert.Equal(nameof(HealOptions.Warmup), Bad(bad with { Warmup = 7 }).ParameterName);
        Assert.Equal(nameof(HealOptions.ReplayFrozenOutputs),
            Bad(bad with { ReplayFrozenOutputs = true, Quant = BaseQuantization.None }).ParameterName);
        Assert.Equal(nameof(HealOptions.ReplayFrozenOutputs),
            Bad(bad with { ReplayFrozenOutputs = true, Quant = BaseQuantization.Nf4, GradientCheckpointing = false }).ParameterName);
        Assert.Equal("MicroBatch 5: must not exceed Batch 4", Bad(bad with { MicroBatch = 5 }).Message);
        string existing = fx.NewOut();
        Directory.CreateDirectory(existing);
        Assert.Contains("already exists", Assert.Throws<LayerPruneException>(() => Healer.Run(fx.Options(fx.Fp32, existing))).Message);
    }
}
