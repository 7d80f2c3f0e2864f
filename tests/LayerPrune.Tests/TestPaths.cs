namespace LayerPrune.Tests;

public static class TestPaths
{
    public static string RepoRoot { get; } = FindRoot();
    public static string Fixtures => Path.Combine(RepoRoot, "tests", "fixtures");
    public static string Samples => Path.Combine(RepoRoot, "samples");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LayerPrune.sln"))) return dir.FullName;
        throw new InvalidOperationException("LayerPrune.sln not found above " + AppContext.BaseDirectory);
    }
}
