using System.Text.Json.Nodes;
using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Robustness;

/// <summary>
/// Resumable state that was cut short or edited — a heal checkpoint in OUT.partial/.checkpoint, a sweep's results.json —
/// gives one line saying how to start over (never a stack trace); a sweep killed mid-run and rerun gives exactly the rows
/// of an uninterrupted sweep.
/// </summary>
public class ResumeStateTests(ReliabilityFixture fx) : IClassFixture<ReliabilityFixture>
{
    static void CopyTree(string from, string to)
    {
        foreach (var dir in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(to, Path.GetRelativePath(from, dir)));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(to, Path.GetRelativePath(from, file)));
    }

    static void Truncate(string file) => File.WriteAllBytes(file, File.ReadAllBytes(file)[..(int)(new FileInfo(file).Length / 2)]);

    /// <summary>Runs the cases' CLI commands concurrently (independent folders), returning results in order.</summary>
    static ChildResult[] RunAll(IEnumerable<string[]> commands) =>
        commands.Select(args => Task.Run(() => ChildRun.Run(args))).ToArray().Select(t => t.Result).ToArray();

    [Fact]
    public void DamagedHealCheckpointSaysHowToStartOver()
    {
        using var t = new TempDir();
        // A real interrupted run: 4 steps, checkpoint every step, the child SIGKILLs itself after step 2.
        string killedOut = t["healed"];
        // The test host runs the library's heal with the same settings as fx.HealArgs (same fingerprint) and a step
        // callback that SIGKILLs it after step 2.
        string optionsJson = t["heal-options.json"];
        File.WriteAllText(optionsJson, System.Text.Json.JsonSerializer.Serialize(fx.HealOptions(killedOut, steps: 4, saveEvery: 1)));
        var killed = ChildRun.Run(TestHostProcess.StartInfo("heal", optionsJson, "--kill-at-step", "2"));
        Assert.Equal(137, killed.Exit);
        string checkpoint = Path.Combine(killedOut + ".partial", ".checkpoint");
        Assert.True(File.Exists(Path.Combine(checkpoint, "state.json")));

        var cases = new (string Name, Action<string> Damage, string Problem)[]
        {
            ("state-truncated", cp => Truncate(Path.Combine(cp, "state.json")), "is damaged ("),
            ("state-step-edited", cp => File.WriteAllText(Path.Combine(cp, "state.json"),
                File.ReadAllText(Path.Combine(cp, "state.json")).Replace("\"step\": 2", "\"step\": 999")),
                "is damaged (step 999, epoch 0, index 4 are out of range)"),
            ("adapters-truncated", cp => Truncate(Path.Combine(cp, "adapters.safetensors")), "is damaged ("),
            ("optimizer-truncated", cp => Truncate(Path.Combine(cp, "optimizer.bin")), "is damaged ("),
        };
        var outs = cases.Select(c => t[c.Name]).ToArray();
        for (int i = 0; i < cases.Length; i++)
        {
            CopyTree(killedOut + ".partial", outs[i] + ".partial");
            cases[i].Damage(Path.Combine(outs[i] + ".partial", ".checkpoint"));
        }
        var results = RunAll(outs.Select(o => (string[])[.. fx.HealArgs(o, steps: 4, saveEvery: 1), "--resume"]));
        for (int i = 0; i < cases.Length; i++)
        {
            string line = ChildRun.AssertOneLineError(results[i], 1);
            string partial = outs[i] + ".partial";
            Assert.StartsWith($"error: --resume: the checkpoint in {partial} {cases[i].Problem}", line);
            Assert.EndsWith($"; delete {partial} or rerun with --force to start over", line);
            Assert.False(Directory.Exists(outs[i]));
        }
        // The advice works: --force starts over and completes.
        var forced = ChildRun.Run([.. fx.HealArgs(outs[0], steps: 4, saveEvery: 1), "--force"]);
        Assert.True(forced.Exit == 0, forced.Stderr);
        Assert.Equal(4, File.ReadAllLines(Path.Combine(outs[0], "train_log.jsonl")).Length);
    }

    static string[] SweepArgs(string outDir) =>
        ["sweep", "--model", ReliabilityFixture.Kjv16, "--data", ReliabilityFixture.Validation, "--samples", "4", "--seq-len", "32",
         "--tasks", "loss:" + ReliabilityFixture.Validation, "--max-chunks", "4", "--batch", "4", "--strategies", "similarity,deepest",
         "--n", "1-4", "--out", outDir, "--quiet", "--json"];

    static JsonArray Rows(string outDir) => JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, "results.json")))!["rows"]!.AsArray();

    static int RowCount(string outDir)
    {
        try { return Rows(outDir).Count; }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException or NullReferenceException) { return 0; }
    }

    [Fact]
    public void SweepKilledMidRunResumesToTheRowsOfAnUninterruptedSweep_AndDamagedResultsSayHowToStartOver()
    {
        using var t = new TempDir();
        string whole = t["whole"], killedOut = t["killed"];
        var uninterrupted = ChildRun.Run(SweepArgs(whole));
        Assert.True(uninterrupted.Exit == 0, uninterrupted.Stderr);
        var expected = Rows(whole);
        Assert.Equal(9, expected.Count); // unpruned + 2 strategies × n = 1…4

        var killed = ChildRun.Run(SweepArgs(killedOut), killWhen: () => RowCount(killedOut) >= 1);
        Assert.True(killed.Killed, "the sweep finished before it could be killed");
        int finished = RowCount(killedOut);
        Assert.InRange(finished, 1, expected.Count - 1);
        var rerun = ChildRun.Run(SweepArgs(killedOut));
        Assert.True(rerun.Exit == 0, rerun.Stderr);
        Assert.True(JsonNode.DeepEquals(expected, Rows(killedOut)),
            $"rows after a kill at {finished} rows + rerun differ from an uninterrupted sweep");
        Assert.Empty(Directory.EnumerateFiles(killedOut, "*.tmp"));

        // Damaged results.json: truncated, or a row edited so it lacks its n.
        string truncated = t["truncated"], edited = t["edited"];
        CopyTree(whole, truncated);
        CopyTree(whole, edited);
        Truncate(Path.Combine(truncated, "results.json"));
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(edited, "results.json")))!;
        json["rows"]![1]!.AsObject().Remove("n");
        File.WriteAllText(Path.Combine(edited, "results.json"), json.ToJsonString());
        var results = RunAll([SweepArgs(truncated), SweepArgs(edited)]);
        var expectations = new[] { (truncated, results[0], "("), (edited, results[1], "(row 2 lacks strategy, n, healed or removed)") };
        foreach (var (dir, r, problem) in expectations)
        {
            string line = ChildRun.AssertOneLineError(r, 1);
            Assert.StartsWith($"error: {dir}/results.json: damaged resume state {problem}", line);
            Assert.EndsWith($"; delete {dir} or rerun with --force to start over", line);
        }
    }
}
