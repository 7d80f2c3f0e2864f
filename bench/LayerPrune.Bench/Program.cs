using LayerPrune.Bench;

// Benchmarks print ratios against a baseline measured in the same run (never a bare time).
// Usage: dotnet run -c Release --project bench/LayerPrune.Bench -- [all|forward|similarity|prefix|nf4|heal|efficiency] [--model DIR]
//        ... -- scale --model DIR [--model DIR ...] [--commands ...]   (issue 14: every command on real-shape checkpoints; ScaleBench.cs)
//        ... -- heal-scale --model DIR [--dtype bf16] [--batch 4] [--seq-len 128]   (QLoRA step vs forward, HealScaleBench.cs)
//        ... -- heal-profile --model DIR [--dtype bf16] [--batch 4] [--seq-len 128]   (one layer's training passes and their
//                                        parts, bare times: a diagnostic, HealProfile.cs)
//        ... -- heal-stream --model DIR --data FILE [--dtype bf16] [--steps 1] [--batch 1] [--seq-len 32] [--resident]
//                                        (streamed LoRA heal steps without outputs, HealStreamBench.cs)
//        ... -- decode-profile --model DIR [--dtype bf16|fp32] [--threads 2] [--steps 16] [--steps-only] [--skip-attention 1,3]
//                                        [--gemm]   (issue 30: one decode token's parts, fp32 GEMMs; DecodeProfile.cs)
//        ... -- peer --model DIR [--peer llamacpp] [--dtype bf16|fp32] [--threads 2] [--prompt-length 128] [--decode-tokens 32]
//                                        [--repeats 5]   (issue 30: beside llama.cpp on a temporary GGUF, PeerBench.cs)
//        ... -- repair-fit --model DIR --layers S-E [--dtype bf16|fp32] [--chunks 64] [--seq-len 256] [--data FILE]
//                                        (issue 24: linear repair fit vs one similarity pass, RepairFitBench.cs)
//        ... -- gpu STEP --out DIR [--device cuda|cpu]   (the steps of bench/gpu/run.sh, issue 29: GpuBench.cs, docs/gpu.md)
//        ... -- shape NAME --out DIR   (a random-init checkpoint of a real shape in bench/shapes/, e.g. tinyllama-1.1b for
//                                        `efficiency --model DIR --dtype bf16`)
string which = args.FirstOrDefault(a => !a.StartsWith("--")) ?? "all";
if (which == "gpu") return GpuBench.Run(Console.Out, args);
if (which == "shape")
{
    // shape NAME --out DIR [--max-shard-gb G]: a random-init checkpoint of a real model shape (bench/shapes/NAME.json).
    string shape = args.Length > 1 ? args[1] : throw new ArgumentException("usage: shape NAME --out DIR (" + string.Join(", ", RandomCheckpoint.Shapes) + ")");
    string outDir = args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault() ?? throw new ArgumentException("shape: --out DIR is required");
    double shardGb = double.Parse(args.SkipWhile(a => a != "--max-shard-gb").Skip(1).FirstOrDefault() ?? "5");
    var sw = System.Diagnostics.Stopwatch.StartNew();
    long bytes = RandomCheckpoint.Write(shape, outDir, (long)(shardGb * 1e9));
    Console.WriteLine($"{shape}: {bytes / 1e9:F2} GB of bf16 weights written to {outDir} in {sw.Elapsed.TotalSeconds:F0} s");
    return 0;
}
string model = args.SkipWhile(a => a != "--model").Skip(1).FirstOrDefault() ?? BenchPaths.Sample("kjv-llama-16l");
var o = Console.Out;
o.WriteLine($"LayerPrune benchmarks on {Environment.ProcessorCount} cores, TorchSharp threads {TorchSharp.torch.get_num_threads()}, model {model}");
if (which is "all" or "forward") ModelBenchmarks.Forward(o, model);
if (which is "profile") ProfileBench.Run(o, model, args);
if (which is "all" or "similarity") ModelBenchmarks.Similarity(o, model);
if (which is "all" or "prefix") ModelBenchmarks.PrefixReuse(o, model);
if (which is "all" or "nf4") Nf4Benchmarks.Run(o);
if (which is "all" or "heal") HealBenchmarks.Run(o);
if (which is "scale") ScaleBench.Run(o, args);
if (which is "all" or "efficiency") EfficiencyBench.Run(o, model, args);
if (which is "heal-scale") HealScaleBench.Run(o, model, args); // a real-shape checkpoint: --model DIR (not in "all")
if (which is "heal-profile") HealProfile.Run(o, model, args); // where a QLoRA step's time goes, one layer (diagnostic)
if (which is "peer") PeerBench.Run(o, model, args); // llama.cpp side by side (not in "all")
if (which is "decode-profile") DecodeProfile.Run(o, model, args); // issue 30: one decode token's parts (diagnostic)
if (which is "heal-stream") HealStreamBench.Run(o, model, args); // likewise
if (which is "repair-fit") RepairFitBench.Run(o, model, args); // issue 24: repair fit vs similarity pass (not in "all")
return 0;
