using LayerPrune.Fuzz;

// Usage: LayerPrune.Fuzz [inputs=100000] [seed=1] [--targets ID,…] [--weights ID=W,…] [--jobs N] [--no-kjv-seed]
//                        [--no-llamacpp-seeds] [--progress SECONDS] [--watchdog SECONDS] [--work DIR]
// Targets: safetensors-parse safetensors-open config index tokenizer-config gguf-open gguf-large gguf-convert hub-headers tokenizer-json
// tokenizer-model; an id prefix selects a group ("gguf").
var positional = new List<string>();
var o = new FuzzOptions();
for (int i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--targets": o = o with { Targets = Next().Split(',', StringSplitOptions.RemoveEmptyEntries) }; break;
        case "--weights":
            o = o with { Weights = Next().Split(',', StringSplitOptions.RemoveEmptyEntries)
                .Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => int.Parse(kv[1])) };
            break;
        case "--jobs": o = o with { Jobs = int.Parse(Next()) }; break;
        case "--no-kjv-seed": o = o with { KjvSeed = false }; break;
        case "--no-llamacpp-seeds": o = o with { LlamaCppSeeds = false }; break;
        case "--progress": o = o with { ProgressSeconds = double.Parse(Next()) }; break;
        case "--watchdog": o = o with { WatchdogSeconds = double.Parse(Next()) }; break;
        case "--work": o = o with { WorkDir = Next() }; break;
        default: positional.Add(args[i]); break;
    }
}
if (positional.Count > 0) o = o with { Inputs = long.Parse(positional[0]) };
if (positional.Count > 1) o = o with { Seed = int.Parse(positional[1]) };
// One torch thread per worker: the hang limit measures the fuzzing thread's CPU time.
TorchSharp.torch.set_num_threads(1);
var result = Fuzzer.Run(o, Console.Out);
return result.Failures == 0 ? 0 : 1;
