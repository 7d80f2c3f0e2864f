using System.CommandLine;
using System.Text.Json.Nodes;
using LayerPrune.Checkpoints;
using LayerPrune.Efficiency;
using LayerPrune.Pruning;
using Spectre.Console;

namespace LayerPrune.Cli.Commands;

/// <summary>`layerprune bench`: prefill/decode speed and memory of a model, and of a layer subset skipped in memory.</summary>
public static class BenchCommand
{
    /// <summary>The `bench` command.</summary>
    public static Command Create()
    {
        var model = Cli.ModelOption();
        var removed = new Option<string?>("--layers-removed")
        {
            Description = "Also measure the model without these 0-based layers (skipped in memory), e.g. 8-14 or 3,5,7; "
                + "the unpruned model and an embedding+head-only run are measured in the same run for the speed-ups",
        };
        var promptLength = new Option<int>("--prompt-length")
            { Description = "Prefill tokens (random ids, batch 1)", DefaultValueFactory = _ => 128 };
        var decodeTokens = new Option<int>("--decode-tokens")
            { Description = "Greedy decode steps with the KV cache (batch 1)", DefaultValueFactory = _ => 32 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed rounds first", DefaultValueFactory = _ => 1 };
        var repeats = new Option<int>("--repeats")
            { Description = "Timed rounds (median and range are reported)", DefaultValueFactory = _ => 5 };
        var threads = new Option<int?>("--threads") { Description = "libtorch CPU threads (default: libtorch's, one per core)" };
        var json = Cli.JsonOption();
        var cmd = new Command("bench",
            "Measure prefill and decode tokens/s (batch 1, KV cache), weight, KV-cache and resident memory on this machine")
            { model, removed, promptLength, decodeTokens, warmup, repeats, threads, json };
        return cmd.WithAction(p =>
        {
            string dir = Cli.ResolveModel(p, p.GetValue(model)!);
            var o = new EfficiencyOptions
            {
                PromptLength = p.GetValue(promptLength), DecodeTokens = p.GetValue(decodeTokens),
                Warmup = p.GetValue(warmup), Repeats = p.GetValue(repeats),
            };
            o.Validate();
            if (p.GetValue(threads) is int n)
            {
                Cli.Require(n >= 1, $"--threads {n}: must be at least 1");
                TorchSharp.torch.set_num_threads(n);
            }
            PrunePlan? plan;
            using (var ckpt = Checkpoint.Open(dir)) // headers only: check --layers-removed before the slow load
                plan = p.GetValue(removed) is { } spec ? ParseRemoved(spec, ckpt.Config.NumLayers) : null;
            var (device, dtype) = Cli.Target(p);
            var (m, resident) = EfficiencyMeter.LoadMeasured(dir, device, dtype, o);
            using var _ = m;
            var targets = new List<EfficiencyTarget> { new("unpruned", m, null, resident) };
            if (plan is not null)
            {
                targets.Add(new($"layers {Spec(plan.Removed)} removed", m, plan.Kept));
                targets.Add(new("embedding + head only", m, []));
            }
            var results = EfficiencyMeter.Measure(targets, o);
            var comparison = plan is null ? null : EfficiencyComparison.Of(results[0], results[1], results[2]);
            if (p.GetValue(json))
            {
                var output = new JsonObject { ["unpruned"] = results[0].ToJson() };
                if (comparison is not null)
                {
                    output["variant"] = results[1].ToJson();
                    output["zero_layers"] = results[2].ToJson();
                    output["comparison"] = comparison.ToJson();
                }
                Cli.PrintJson(output);
                return 0;
            }
            Print(results, comparison);
            return 0;
        });
    }

    static void Print(IReadOnlyList<EfficiencyResult> results, EfficiencyComparison? c)
    {
        var r0 = results[0];
        var table = new Table().AddColumn("measured");
        foreach (var r in results) table.AddColumn(Markup.Escape($"{r.Label} ({r.LayersRun.Length} layers)"));
        void Row(string name, Func<EfficiencyResult, string> cell) =>
            table.AddRow([Markup.Escape(name), .. results.Select(r => Markup.Escape(cell(r)))]);
        Row("prefill tokens/s (median [min–max])", r => Rate(r.PrefillTokensPerSecond));
        Row("decode tokens/s (median [min–max])", r => Rate(r.DecodeTokensPerSecond));
        Row("weights", r => InfoCommand.Human(r.WeightBytes));
        Row($"KV cache at {r0.PromptLength + r0.DecodeTokens} positions", r => InfoCommand.Human(r.KvCacheBytes));
        Row("resident after load (ΔRSS)", r => r.Resident is { } m ? InfoCommand.Human(m.Bytes) : "—");
        Row("load peak (ΔVmHWM)", r => r.Resident?.Peak is long peak ? InfoCommand.Human(peak) : "—");
        AnsiConsole.Write(table);
        var machine = r0.Machine;
        Console.Out.WriteLine(
            $"{r0.Device} {r0.Dtype}; CPU {machine.CpuModel} [{string.Join(" ", machine.CpuFlags)}], {machine.Cores} cores, "
            + $"{machine.TorchThreads} libtorch threads; prompt {r0.PromptLength}, {r0.DecodeTokens} decode steps, "
            + $"{r0.Repeats} rounds + {r0.Warmup} warm-up; "
            + $"process peak RSS {(r0.Process is { } pr ? InfoCommand.Human(pr.Peak) : "n/a")}");
        if (c is null) return;
        Console.Out.WriteLine(
            $"decode speed-up {c.DecodeSpeedup:F2}× (ideal {c.IdealDecodeSpeedup:F2}× with the embedding and head's measured time kept); "
            + $"decoder layers alone {c.LayerDecodeSpeedup:F2}× (ideal L/L_kept = {c.IdealLayerSpeedup:F2}×); "
            + $"prefill {c.PrefillSpeedup:F2}×; "
            + $"weights saved {InfoCommand.Human(c.WeightBytesSaved)} ({c.WeightSavedFraction:P1})");
    }

    /// <summary>PrunePlan.FromLayerSpec with errors naming this command's flag.</summary>
    static PrunePlan ParseRemoved(string spec, int layers)
    {
        try
        {
            return PrunePlan.FromLayerSpec(spec, layers);
        }
        catch (LayerPruneException e)
        {
            throw LayerPruneException.Usage(e.Render(name => name == "spec" ? "--layers-removed" : Cli.FlagOf(name)));
        }
    }

    /// <summary>[7, 8, 9, 12] → "7-9,12".</summary>
    public static string Spec(IReadOnlyList<int> layers)
    {
        var parts = new List<string>();
        for (int i = 0; i < layers.Count;)
        {
            int j = i;
            while (j + 1 < layers.Count && layers[j + 1] == layers[j] + 1) j++;
            parts.Add(j == i ? $"{layers[i]}" : $"{layers[i]}-{layers[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }

    static string Rate(Spread s) => $"{s.Median:F1} [{s.Min:F1}–{s.Max:F1}]";
}
