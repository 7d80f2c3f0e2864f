using System.Xml.Linq;

namespace LayerPrune.Tests.Repository;

/// <summary>
/// A fresh clone must restore on a machine that has only the .NET SDK: no NuGet configuration in the repository may add a
/// package source that is a local path on some machine (an absolute path, or a relative one leading out of the repository),
/// and the root nuget.config must clear inherited sources so only the public feed is used.
/// </summary>
public class NuGetConfigTests
{
    static IEnumerable<string> RepoFiles(Func<string, bool> nameMatches)
    {
        var pending = new Stack<string>([TestPaths.RepoRoot]);
        while (pending.Count > 0)
        {
            string dir = pending.Pop();
            foreach (var sub in Directory.EnumerateDirectories(dir))
            {
                string name = Path.GetFileName(sub);
                if (name is ".git" or "bin" or "obj" or "node_modules") continue;
                pending.Push(sub);
            }
            foreach (var file in Directory.EnumerateFiles(dir).Where(f => nameMatches(Path.GetFileName(f)))) yield return file;
        }
    }

    /// <summary>Null when <paramref name="source"/> is acceptable, else why not.</summary>
    static string? Problem(string source, string configDir)
    {
        if (Uri.TryCreate(source, UriKind.Absolute, out var uri) && uri.Scheme is "https" or "http") return null;
        bool windowsRooted = System.Text.RegularExpressions.Regex.IsMatch(source, @"^([A-Za-z]:)?[\\/]");
        if (Path.IsPathRooted(source) || windowsRooted || source.StartsWith('~') || source.Contains('%') || source.Contains("$("))
            return "is an absolute or machine-specific local path";
        string full = Path.GetFullPath(Path.Combine(configDir, source));
        string root = Path.GetFullPath(TestPaths.RepoRoot).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        return full.StartsWith(root, StringComparison.Ordinal) ? null : "is a local path outside the repository";
    }

    [Fact]
    public void EveryNuGetConfigUsesOnlyFeedsOrFoldersInsideTheRepository()
    {
        var configs = RepoFiles(n => n.Equals("nuget.config", StringComparison.OrdinalIgnoreCase)).ToList();
        string rootConfig = Path.Combine(TestPaths.RepoRoot, "nuget.config");
        Assert.Contains(rootConfig, configs);
        var problems = new List<string>();
        foreach (var config in configs)
        {
            var doc = XDocument.Load(config);
            var sources = doc.Root?.Element("packageSources");
            if (sources is null) continue;
            foreach (var add in sources.Elements("add"))
            {
                string value = (string?)add.Attribute("value") ?? "";
                if (Problem(value, Path.GetDirectoryName(config)!) is { } why)
                {
                    string file = Path.GetRelativePath(TestPaths.RepoRoot, config);
                    problems.Add($"{file}: source '{add.Attribute("key")?.Value}' = '{value}' {why}");
                }
            }
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
        // The root config starts from an empty list (a user's or CI machine's own sources are not inherited) and names nuget.org.
        var root = XDocument.Load(rootConfig).Root!.Element("packageSources");
        Assert.NotNull(root);
        Assert.Equal("clear", root.Elements().First().Name.LocalName);
        Assert.Contains(root.Elements("add"), a => (string?)a.Attribute("value") == "https://api.nuget.org/v3/index.json");
    }

    [Fact]
    public void NoMsBuildFileAddsRestoreSourcesOutsideTheRepository()
    {
        var problems = new List<string>();
        string[] extensions = [".props", ".targets", ".csproj"];
        var files = RepoFiles(n => extensions.Any(x => n.EndsWith(x, StringComparison.OrdinalIgnoreCase)));
        foreach (var file in files)
        {
            var elements = XDocument.Load(file).Descendants()
                .Where(e => e.Name.LocalName is "RestoreSources" or "RestoreAdditionalProjectSources");
            foreach (var e in elements)
                foreach (var source in e.Value.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    if (Problem(source, Path.GetDirectoryName(file)!) is { } why)
                        problems.Add($"{Path.GetRelativePath(TestPaths.RepoRoot, file)}: <{e.Name.LocalName}> '{source}' {why}");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Theory]
    [InlineData("/opt/nuget/packages", false)]
    [InlineData("../../elsewhere/packages", false)]
    [InlineData("~/packages", false)]
    [InlineData("%HOME%/packages", false)]
    [InlineData("C:\\packages", false)]
    [InlineData("\\\\server\\share", false)]
    [InlineData("https://api.nuget.org/v3/index.json", true)]
    [InlineData("vendor/packages", true)]
    public void SourceRuleRejectsMachineSpecificPaths(string source, bool ok)
    {
        Assert.Equal(ok, Problem(source, TestPaths.RepoRoot) is null);
    }
}
