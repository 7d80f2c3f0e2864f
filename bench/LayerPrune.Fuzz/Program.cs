using LayerPrune.Fuzz;

// Usage: dotnet run --project bench/LayerPrune.Fuzz -c Release -- [inputs=100000] [seed=1]
int count = args.Length > 0 ? int.Parse(args[0]) : 100_000;
int seed = args.Length > 1 ? int.Parse(args[1]) : 1;
var result = Fuzzer.Run(count, seed, Console.Out);
return result.Failures == 0 ? 0 : 1;
