using LayerPrune.Tests.Pruning;
using Xunit.Abstractions;

namespace LayerPrune.Tests.Packaging;

public class ExampleTests(ITestOutputHelper log)
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
        var noEnv = new Dictionary<string, string?>();
        var (code, stdout, stderr) = ProcessRunner.Run("dotnet", args, tmp.Path, noEnv, TimeSpan.FromMinutes(15));
        Assert.True(code == 0, $"exit {code}\n{stdout}\n{stderr}");
        log.WriteLine(stdout);
        ExampleOutput.Parse(stdout).AssertMatchesHfForEightLayers(outDir);
    }
}
