using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json.Nodes;
using LayerPrune.Pruning;
using LayerPrune.Tests.Pruning;
using Xunit.Abstractions;

namespace LayerPrune.Tests.Packaging;

/// <summary>
/// Issue 18: both packages packed from this build, the tool installed into a temporary tool path and run from an empty
/// folder on its embedded defaults, and a throwaway project built against the library package running samples/csharp.
/// </summary>
public class PackageTests(ITestOutputHelper log)
{
    const long MaxPackageBytes = 250_000_000;
    static readonly TimeSpan Slow = TimeSpan.FromMinutes(15);

#if DEBUG
    const string Configuration = "Debug";
#else
    const string Configuration = "Release";
#endif

    [Fact]
    public void PackedToolRunsASweepAnywhereAndTheLibraryPackageBuildsTheExample()
    {
        using var tmp = new TempDir();
        // A version no earlier run used: nothing stale can come from a package cache.
        string version = "0.0.0-test." + Guid.NewGuid().ToString("N")[..12];
        string feed = Directory.CreateDirectory(tmp["feed"]).FullName;
        string globalPackages = GlobalPackagesFolder();
        // Packages this test restores are extracted here; everything else is read from the user's cache (fallback folder).
        // tmp/nuget.config also applies to tmp/consumer (NuGet looks in the project's folder and above).
        var env = new Dictionary<string, string?> { ["NUGET_PACKAGES"] = tmp["nuget-packages"], ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1" };
        File.WriteAllText(tmp["nuget.config"], NugetConfig(feed, globalPackages));
        var clock = Stopwatch.StartNew();

        // --no-build: the packages hold this build's assemblies; the generated .nuspec files go to tmp, not obj/.
        string[] pack =
        [
            "pack", "LayerPrune.sln", "-c", Configuration, "--no-build", "-o", feed,
            $"-p:PackageVersion={version}", $"-p:NuspecOutputPath={tmp["nuspec"]}/",
        ];
        Dotnet(pack, TestPaths.RepoRoot, new Dictionary<string, string?>());
        log.WriteLine($"pack: {clock.Elapsed.TotalSeconds:F0} s");
        string tool = Path.Combine(feed, $"LayerPrune.Tool.{version}.nupkg");
        string library = Path.Combine(feed, $"LayerPrune.{version}.nupkg");
        AssertPackageContents(tool, library);

        string toolPath = tmp["tools"];
        Dotnet(["tool", "install", "LayerPrune.Tool", "--version", version, "--tool-path", toolPath, "--configfile", tmp["nuget.config"]],
               tmp.Path, env);
        log.WriteLine($"tool install: {clock.Elapsed.TotalSeconds:F0} s");

        string empty = Directory.CreateDirectory(tmp["anywhere"]).FullName;
        var toolEnv = new Dictionary<string, string?>(env) { ["DOTNET_ROOT"] = ProcessRunner.DotnetRoot };
        // The embedded model, data and tasks; 128 loss chunks = the reference protocol; fewer similarity samples and cloze items.
        string[] sweep = ["sweep", "--n", "1,8", "--strategies", "deepest", "--max-chunks", "128", "--samples", "8", "--limit", "20"];
        var (code, stdout, stderr) = ProcessRunner.Run(Path.Combine(toolPath, "layerprune"), sweep, empty, toolEnv, Slow);
        Assert.True(code == 0, $"layerprune sweep: exit {code}\n{stdout}\n{stderr}");
        log.WriteLine($"sweep: {clock.Elapsed.TotalSeconds:F0} s");
        AssertSweep(Path.Combine(empty, "sweep-out", "results.json"), toolPath);

        string project = Directory.CreateDirectory(tmp["consumer"]).FullName;
        WriteConsumer(project, version);
        string outDir = tmp["kjv-n8"];
        string[] run =
        [
            "run", "--",
            Path.Combine(TestPaths.Samples, "kjv-llama-16l"), Path.Combine(TestPaths.Samples, "data", "kjv", "validation.txt"), outDir, "8",
        ];
        string output = Dotnet(run, project, env);
        log.WriteLine($"library package example: {clock.Elapsed.TotalSeconds:F0} s");
        ExampleOutput.Parse(output).AssertMatchesHfForEightLayers(outDir);
        Assert.True(Directory.Exists(Path.Combine(tmp["nuget-packages"], "layerprune", version)), "the library came from the packed feed");
    }

    static void AssertPackageContents(string tool, string library)
    {
        foreach (var package in new[] { tool, library })
        {
            Assert.True(File.Exists(package), package);
            Assert.InRange(new FileInfo(package).Length, 1, MaxPackageBytes);
        }
        using (var zip = ZipFile.OpenRead(tool))
        {
            var names = zip.Entries.Select(e => e.FullName).ToHashSet();
            Assert.Contains("README.md", names);
            string tools = names.Single(n => n.EndsWith("/layerprune.dll"))[..^"layerprune.dll".Length];
            foreach (var sample in new[] { "kjv-llama-16l/model.safetensors", "data/kjv/validation.txt", "data/kjv-cloze/test.jsonl" })
                Assert.Contains(tools + "samples/" + sample, names);
        }
        using (var zip = ZipFile.OpenRead(library))
        {
            var names = zip.Entries.Select(e => e.FullName).ToHashSet();
            string[] files =
            [
                "README.md", "buildTransitive/LayerPrune.targets", "lib/net10.0/LayerPrune.Core.dll", "lib/net10.0/LayerPrune.Core.xml",
            ];
            foreach (var file in files)
                Assert.Contains(file, names);
            using var nuspec = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec")).Open());
            string text = nuspec.ReadToEnd();
            Assert.Contains("id=\"TorchSharp\"", text);
            Assert.Contains("id=\"libtorch-cpu-linux-x64\"", text);
        }
    }

    /// <summary>The unpruned row has the HF reference loss; the deepest variants removed what PrunePlan.Deepest says.</summary>
    static void AssertSweep(string resultsPath, string toolPath)
    {
        var results = JsonNode.Parse(File.ReadAllText(resultsPath))!;
        var rows = results["rows"]!.AsArray();
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.Fixtures, "reference", "kjv-llama-16l.json")))!;
        var unpruned = rows.Single(r => (string)r!["strategy"]! == "none")!;
        Assert.InRange((double)unpruned["validation_loss"]! - (double)reference["validation_loss"]!["value"]!, -1e-3, 1e-3);
        foreach (int n in new[] { 1, 8 })
        {
            var row = rows.Single(r => (string)r!["strategy"]! == "deepest" && (int)r["n"]! == n)!;
            Assert.Equal(PrunePlan.Deepest(n, 16).Removed, row["removed"]!.AsArray().Select(x => (int)x!));
        }
        Assert.Equal(3, rows.Count);
        // The default model is the one installed with the tool, not the checkout's.
        Assert.StartsWith(Path.GetFullPath(toolPath) + Path.DirectorySeparatorChar, (string)results["config"]!["model"]!);
    }

    static void WriteConsumer(string project, string version)
    {
        File.WriteAllText(Path.Combine(project, "Consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="LayerPrune" Version="{version}" />
              </ItemGroup>
            </Project>
            """);
        File.Copy(Path.Combine(TestPaths.RepoRoot, "samples", "csharp", "Program.cs"), Path.Combine(project, "Program.cs"));
    }

    static string NugetConfig(string feed, string globalPackages) => $"""
        <?xml version="1.0" encoding="utf-8"?>
        <configuration>
          <packageSources>
            <clear />
            <add key="packed" value="{feed}" />
            <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
          </packageSources>
          <fallbackPackageFolders>
            <add key="user" value="{globalPackages}" />
          </fallbackPackageFolders>
        </configuration>
        """;

    /// <summary>The user's global packages folder (TorchSharp and libtorch are already there after the solution's restore).</summary>
    static string GlobalPackagesFolder()
    {
        var (code, stdout, stderr) = ProcessRunner.Run("dotnet", ["nuget", "locals", "global-packages", "--list"], TestPaths.RepoRoot,
                                                       new Dictionary<string, string?>(), TimeSpan.FromMinutes(1));
        Assert.True(code == 0, stderr);
        return stdout.Trim()["global-packages:".Length..].Trim();
    }

    static string Dotnet(string[] args, string dir, IReadOnlyDictionary<string, string?> env)
    {
        var (code, stdout, stderr) = ProcessRunner.Run("dotnet", args, dir, env, Slow);
        Assert.True(code == 0, $"dotnet {string.Join(" ", args)}: exit {code}\n{stdout}\n{stderr}");
        return stdout;
    }
}
