using LayerPrune.Tests.Pruning;

namespace LayerPrune.Tests.Packaging;

public class ExampleTests
{
    /// <summary>samples/csharp (docs/library.md) run as its own process on the embedded model, from an empty folder.</summary>
    [Fact]
    public void CSharpExamplePrunesTheSimilarBlockAndReportsHfLosses()
    {
        using var tmp = new TempDir();
        string outDir = tmp["kjv-n8"];
        string[] args =
        [
            Path.Combine(AppContext.BaseDirectory, "LayerPrune.Example.dll"),
            Path.Combine(TestPaths.Samples, "kjv-llama-16l"),
            Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt"),
            outDir,
            "8",
        ];
        var (code, stdout, stderr) = ProcessRunner.Run("dotnet", args, tmp.Path, new Dictionary<string, string?>(), TimeSpan.FromMinutes(15));
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        ExampleOutput.Parse(stdout).AssertMatchesHfForEightLayers(outDir);
    }
}
