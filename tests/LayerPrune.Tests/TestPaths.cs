namespace LayerPrune.Tests;

public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string Fixtures => Path.Combine(RepoRoot, "tests", "fixtures");

    public static string Samples => Path.Combine(RepoRoot, "samples");

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "LayerPrune.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("LayerPrune.sln not found above " + AppContext.BaseDirectory);
    }
}
