// The paper's recipe with the LayerPrune library: measure, prune the most redundant block, evaluate, write the checkpoint.
// Usage: dotnet run --project samples/csharp -- [MODEL_DIR] [TEXT_FILE] [OUT_DIR] [N] [CALIBRATION_FILE]
//        (defaults: the embedded sample, 8 layers; calibration of the training-free repair: train.txt beside TEXT_FILE)
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
string besideText = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(text))!, "train.txt");   // kjv's training split
string calibration = args.ElementAtOrDefault(4) ?? (File.Exists(besideText) ? besideText : text);

var tokenizer = TokenizerLoader.Load(modelDir);
using var model = CausalLM.Load(modelDir);                                          // fp32 on the CPU
var samples = SampleLoader.Load(text, tokenizer, samples: 64, seqLen: 256);
var similarity = LayerSimilarity.Compute(model, samples);                           // d(x_l, x_l+n) for every l, n
var plan = PrunePlan.FromSimilarity(similarity, n);                                 // the block that changes least
var chunks = TokenChunks.FromLines(TextCorpus.Read(text), tokenizer, seqLen: 256, maxChunks: 128);
var loss = LossEvaluator.Evaluate(model, chunks, layers: plan.Kept);                // the pruned model, in memory
CheckpointPruner.Write(model.Checkpoint, plan, outDir);                             // HF checkpoint + prune_plan.json

// Training-free repair (ReplaceMe, docs/repair.md): one least-squares map per removed run, folded into the down_proj
// before it; applied in memory here (CheckpointPruner.Write(..., repair: repair) writes it instead).
var calib = TokenChunks.FromLines(TextCorpus.Read(calibration), tokenizer, seqLen: 256, maxChunks: 32);
using var repair = LinearRepair.Fit(model, plan, calib, new RepairOptions { Method = "linear" });
LossResult repaired;
using (repair.ApplyTo(model)) repaired = LossEvaluator.Evaluate(model, chunks, layers: plan.Kept);

Console.WriteLine($"removed layers: {string.Join(",", plan.Removed)} (angular distance {plan.Distance:F4})");
Console.WriteLine($"validation loss without them: {loss.ValidationLoss:F5} ({loss.Tokens} predictions)");
Console.WriteLine($"validation loss with the linear repair: {repaired.ValidationLoss:F5} ({repair.Cost.Tokens} calibration tokens)");
Console.WriteLine($"wrote {Path.GetFullPath(outDir)}");
