using System.Diagnostics;
using System.Text.Json;
using LayerPrune;
using LayerPrune.Checkpoints;
using LayerPrune.Healing;
using LayerPrune.Pruning;

// A test host: the library's prune and heal with callbacks that slow the work down or SIGKILL this process at a known point.
//   prune MODEL OUT LAYERS [--sleep-ms N] [--kill-after-tensors K]
//       CheckpointPruner.Write; after each tensor written (and flushed): sleep N ms; SIGKILL after the K-th tensor.
//   heal OPTIONS.json [--kill-at-step K] [--stop-at-step K]
//       Healer.Run with HealOptions read from JSON (System.Text.Json, property names); after optimizer step K (and its
//       checkpoint, when one is due) SIGKILL (--kill-at-step) or stop through the step callback (--stop-at-step).
// Exit: 0 done, 3 stopped by the callback, 1 a LayerPruneException (message on stderr), 64 bad arguments.
return TestHost.Run(args);

static class TestHost
{
    public static int Run(string[] args)
    {
        try
        {
            return args.FirstOrDefault() switch
            {
                "prune" when args.Length >= 4 => Prune(args[1], args[2], args[3], Flags(args[4..])),
                "heal" when args.Length >= 2 => Heal(args[1], Flags(args[2..])),
                _ => Usage(),
            };
        }
        catch (LayerPruneException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    static int Prune(string model, string output, string layers, Dictionary<string, int> flags)
    {
        int sleepMs = flags.GetValueOrDefault("--sleep-ms");
        int killAfter = flags.GetValueOrDefault("--kill-after-tensors");
        int written = 0;
        void OnTensorWritten(string name)
        {
            written++;
            if (killAfter > 0 && written >= killAfter)
                Process.GetCurrentProcess().Kill();
            if (sleepMs > 0)
                Thread.Sleep(sleepMs);
        }
        using var source = Checkpoint.Open(model);
        var plan = PrunePlan.FromLayerSpec(layers, source.Config.NumLayers);
        CheckpointPruner.Write(source, plan, output, onTensorWritten: OnTensorWritten);
        return 0;
    }

    static int Heal(string optionsJson, Dictionary<string, int> flags)
    {
        var options = JsonSerializer.Deserialize<HealOptions>(File.ReadAllText(optionsJson))
            ?? throw new LayerPruneException($"{optionsJson}: no options");
        int killAt = flags.GetValueOrDefault("--kill-at-step");
        int stopAt = flags.GetValueOrDefault("--stop-at-step");
        bool OnStep(HealStep s)
        {
            if (s.Step == killAt)
                Process.GetCurrentProcess().Kill();
            return s.Step != stopAt;
        }
        var result = Healer.Run(options, onStep: OnStep);
        return result.Completed ? 0 : 3;
    }

    static Dictionary<string, int> Flags(string[] args)
    {
        var flags = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + 1 < args.Length; i += 2)
            flags[args[i]] = int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture);
        return flags;
    }

    static int Usage()
    {
        Console.Error.WriteLine("usage: LayerPrune.TestHost prune MODEL OUT LAYERS [--sleep-ms N] [--kill-after-tensors K]");
        Console.Error.WriteLine("       LayerPrune.TestHost heal OPTIONS.json [--kill-at-step K] [--stop-at-step K]");
        return 64;
    }
}
