namespace LayerPrune.Tests;

public static class TestPaths
{
    public static string RepoRoot { get; } = FindRoot();
    public static string Fixtures => Path.Combine(RepoRoot, "tests", "fixtures");
    public static string Samples => Path.Combine(RepoRoot, "samples");

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "LayerPrune.sln"))) return d.FullName;
        throw new InvalidOperationException("LayerPrune.sln not found above " + AppContext.BaseDirectory);
    }
}
