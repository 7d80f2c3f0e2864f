// The paper's recipe with the LayerPrune library: measure, prune the most redundant block, evaluate, write the checkpoint.
// Usage: dotnet run --project samples/csharp -- [MODEL_DIR] [TEXT_FILE] [OUT_DIR] [N]  (defaults: the embedded sample, 8 layers)
using LayerPrune.Data;
using LayerPrune.Evaluation;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Similarity;
using LayerPrune.Tokenization;

string modelDir = args.ElementAtOrDefault(0) ?? "samples/kjv-llama-16l";
string text = args.ElementAtOrDefault(1) ?? "samples/data/kjv/validation.txt";
string outDir = args.ElementAtOrDefault(2) ?? "kjv-pruned";
int n = int.Parse(args.ElementAtOrDefault(3) ?? "8");

var tokenizer = TokenizerLoader.Load(modelDir);
using var model = CausalLM.Load(modelDir);                                          // fp32 on the CPU
var samples = SampleLoader.Load(text, tokenizer, samples: 64, seqLen: 256);
var similarity = LayerSimilarity.Compute(model, samples);                           // d(x_l, x_l+n) for every l, n
var plan = PrunePlan.FromSimilarity(similarity, n);                                 // the block that changes least
var chunks = TokenChunks.FromLines(TextCorpus.Read(text), tokenizer, seqLen: 256, maxChunks: 128);
var loss = LossEvaluator.Evaluate(model, chunks, layers: plan.Kept);                // the pruned model, in memory
CheckpointPruner.Write(model.Checkpoint, plan, outDir);                             // HF checkpoint + prune_plan.json

Console.WriteLine($"removed layers: {string.Join(",", plan.Removed)} (angular distance {plan.Distance:F4})");
Console.WriteLine($"validation loss without them: {loss.ValidationLoss:F5} ({loss.Tokens} predictions)");
Console.WriteLine($"wrote {Path.GetFullPath(outDir)}");
