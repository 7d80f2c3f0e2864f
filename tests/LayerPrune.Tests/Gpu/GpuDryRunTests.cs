using System.Text.Json.Nodes;
using LayerPrune.Tests.Packaging;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Gpu;

/// <summary>
/// bench/gpu/run.sh --dry-run (issue 29): every step of the GPU run on the CPU with tiny shapes, so that a typo or a broken
/// step is found here and not in the few minutes of a GPU machine. The numbers it writes are checked against independent
/// ones: HF's golden fixtures and kjv reference, the LoRA parameter count of the tiny shape, the loss of a random init.
/// </summary>
public class GpuDryRunTests
{
    static string Script => Path.Combine(TestPaths.RepoRoot, "bench", "gpu", "run.sh");

    static (int Exit, string Stdout, string Stderr) RunScript(params string[] args) => ProcessRunner.Run("bash", [Script, .. args],
        TestPaths.RepoRoot, new Dictionary<string, string?>
        {
            // The bench built with the tests (project reference): the same code the GPU machine runs from its publish.
            ["LP_BENCH"] = "dotnet " + Path.Combine(AppContext.BaseDirectory, "LayerPrune.Bench.dll"),
            ["OUT"] = null,
        }, TimeSpan.FromMinutes(5));

    [Fact]
    public void DryRunRunsEveryStepAndItsNumbersHold()
    {
        using var tmp = new TempDir();
        var (exit, stdout, stderr) = RunScript("--dry-run", "--out", tmp.Path);
        Assert.True(exit == 0, $"run.sh --dry-run exited {exit}\n{stdout}\n{stderr}");
        var results = JsonNode.Parse(File.ReadAllText(tmp["results.json"]))!;
        var steps = results["steps"]!;
        foreach (var name in new[] { "parity", "loss", "cloze-requests", "cloze", "race", "qlora", "stream" })
            Assert.True((int?)steps[name]?["exit_code"] == 0, $"step {name}: {steps[name]?.ToJsonString()}");

        // 1. Golden parity: every architecture within HF's fp32 logits (1e-4) with HF's greedy ids.
        var archs = steps["parity"]!["result"]!["architectures"]!.AsArray();
        Assert.Equal(["llama", "llama3rope", "mistral", "qwen2", "phi"], archs.Select(a => (string)a!["arch"]!));
        foreach (var a in archs)
        {
            Assert.InRange((double)a!["logits_row0_max_abs_diff"]!, 0, 1e-4);
            Assert.InRange((double)a["padded_batch_max_abs_diff"]!, 0, 1e-4);
            Assert.True((bool)a["greedy_ids_identical"]!);
        }
        // 2. bf16 loss within 0.01 of fp32.
        var loss = steps["loss"]!["result"]!;
        Assert.InRange(Math.Abs((double)loss["bf16"]!["loss"]! - (double)loss["fp32"]!["loss"]!), 0, 0.01);
        // 3. Our fp32 cloze scores against HF's shared ones: within their documented TF32 noise (KjvReferenceTests).
        Assert.InRange((double)steps["cloze"]!["result"]!["ours_minus_shared_tf32_max_abs"]!, 0, 5e-3);

        // 4. The race's LoRA: r 64 on all seven projections of the tiny 7B-layout shape = r·(in + out) per projection.
        var race = steps["race"]!["result"]!;
        var shape = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "bench", "gpu", "tiny", "llama-7b-tiny.json")))!;
        long h = (long)shape["hidden_size"]!, i = (long)shape["intermediate_size"]!, layers = (long)shape["num_hidden_layers"]!;
        Assert.Equal(layers * 64 * (4 * (h + h) + 3 * (h + i)), (long)race["lora_train"]!["trainable_params"]!);
        foreach (var part in new[] { "forward", "similarity", "lora_train" })
            Assert.True((double)race[part]!["tokens_per_s"]! > 0, part);
        // 5. QLoRA on the tiny 70B layout: a random init (std 0.02) predicts nearly uniformly, loss ≈ ln(vocab).
        var qlora = steps["qlora"]!["result"]!;
        var shape70 = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "bench", "gpu", "tiny", "llama-70b-tiny.json")))!;
        Assert.InRange((double)qlora["loss_after"]! - Math.Log((double)shape70["vocab_size"]!), -0.2, 0.2);
        Assert.Equal((int)shape70["num_key_value_heads"]!, (int)qlora["kv_heads"]!);
        // The streamed similarity pass reads every layer exactly once (layer-major).
        Assert.Equal((long)shape70["num_hidden_layers"]!, (long)steps["stream"]!["result"]!["layer_reads"]!);

        // The python steps ran or say why not; their scripts compiled either way.
        foreach (var py in new[] { "peer", "hf-cloze" })
            Assert.True((int?)steps[py]!["exit_code"] == 0 || ((string?)steps[py]!["skipped"])?.Contains("torch") == true,
                $"{py}: {steps[py]!.ToJsonString()}");
        string log = File.ReadAllText(tmp["log.txt"]);
        Assert.Contains("python scripts compile", log);
        string md = File.ReadAllText(tmp["results.md"]);
        Assert.Contains("Command: `bench/gpu/run.sh --dry-run --out " + tmp.Path + "`", md);
        Assert.Contains("| parity | 0 |", md);
        Assert.Equal(true, (bool?)results["acceptance"]!["parity_fp32_1e-4_and_greedy_ids"]);
    }

    [Fact]
    public void PeerScriptsCompile()
    {
        using var tmp = new TempDir();
        var (exit, _, stderr) = ProcessRunner.Run("python3", ["-m", "py_compile",
                Path.Combine(TestPaths.RepoRoot, "bench", "gpu", "peer_hf_llama7b.py"),
                Path.Combine(TestPaths.RepoRoot, "bench", "gpu", "hf_cloze_reference.py")],
            TestPaths.RepoRoot, new Dictionary<string, string?> { ["PYTHONPYCACHEPREFIX"] = tmp.Path }, TimeSpan.FromMinutes(1));
        Assert.True(exit == 0, stderr);
    }

    [Fact]
    public void UnknownArgumentIsOneLineAndExitCode2()
    {
        var (exit, stdout, stderr) = RunScript("--dryrun");
        Assert.Equal(2, exit);
        Assert.Equal("run.sh: unknown argument '--dryrun' (see --help)", stderr.Trim());
        Assert.Equal("", stdout);
    }

    [Fact]
    public void UnknownBenchStepIsOneLineAndExitCode2()
    {
        using var tmp = new TempDir();
        var (exit, _, stderr) = ProcessRunner.Run("dotnet", [Path.Combine(AppContext.BaseDirectory, "LayerPrune.Bench.dll"), "gpu", "pairty",
            "--out", tmp.Path], TestPaths.RepoRoot, new Dictionary<string, string?>(), TimeSpan.FromMinutes(2));
        Assert.Equal(2, exit);
        Assert.Equal("gpu: unknown step 'pairty' (expected parity, loss, cloze-requests, cloze, race, qlora, stream, report)", stderr.Trim());
    }
}
