using LayerPrune.Checkpoints;
using LayerPrune.Data;
using LayerPrune.Gguf;
using LayerPrune.Modeling;
using LayerPrune.Pruning;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Pruning;
using LayerPrune.Tokenization;

namespace LayerPrune.Tests.Gguf;

/// <summary>A linear-repaired kjv checkpoint (layers 6–13 removed) exports to GGUF and llama.cpp runs it as we do.</summary>
public class RepairGgufTests
{
    [Fact]
    public void RepairedKjv_F32_Export_Matches_LlamaCpp()
    {
        using var tmp = new TempDir();
        var plan = PrunePlan.FromLayerSpec("6-13", 16);
        var tok = TokenizerLoader.Load(KjvModel.Dir);
        var chunks = PreTokenized.LossChunks(KjvModel.Train, tok, 256, 8);   // 2048 calibration tokens: enough for H = 256
        using (var model = CausalLM.Load(KjvModel.Dir))
        using (var repair = LinearRepair.Fit(model, plan, chunks))
        using (var ckpt = Checkpoint.Open(KjvModel.Dir))
        {
            CheckpointPruner.Write(ckpt, plan, tmp["repaired"], repair: repair);
            CheckpointPruner.Write(ckpt, plan, tmp["plain"]);
        }
        string gguf = tmp["repaired.gguf"];
        GgufExporter.Export(tmp["repaired"], gguf, new GgufExportOptions { Type = GgufOutputType.F32 });
        var prompt = tok.Encode("In the beginning God created");
        GgufExportTests.AssertSameAsLlamaCpp(tmp["repaired"], gguf, prompt, 32, "kjv 6-13 linear-repaired");
        // the repair is in the file: its logits are not the plain prune's
        var (_, repaired) = GgufExportTests.Ours(tmp["repaired"], prompt, 1);
        var (_, plain) = GgufExportTests.Ours(tmp["plain"], prompt, 1);
        Assert.True(repaired.Zip(plain).Max(p => Math.Abs(p.First - p.Second)) > 1e-2, "the repaired logits equal the plain prune's");
    }
}
