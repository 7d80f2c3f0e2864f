using System.Text;
using LayerPrune.Hub;
using LayerPrune.Tests.Integration;
using LayerPrune.Tests.Robustness;

namespace LayerPrune.Tests.Hub;

/// <summary>
/// Hub ids against a loopback hub (<see cref="FakeHub"/>, issue 27): downloads into huggingface_hub's cache layout, reuse
/// without content requests, sha256 verification, locks, resume after SIGKILL, and one-line errors.
/// </summary>
public sealed class HubCacheTests : IDisposable
{
    const string Repo = "test-org/kjv-llama-16l";
    readonly FakeHub _hub = new();
    readonly string _tmp = Directory.CreateTempSubdirectory("lp-hub-").FullName;
    string Cache => Path.Combine(_tmp, "hub");
    string RepoDir => Path.Combine(Cache, "models--test-org--kjv-llama-16l");

    public HubCacheTests() => _hub.AddRepo(Repo, KjvModel.Dir);

    public void Dispose()
    {
        _hub.Dispose();
        Directory.Delete(_tmp, recursive: true);
    }

    HubOptions Options(bool offline = false, string? token = null) =>
        new() { Endpoint = _hub.Endpoint, CacheDir = Cache, Offline = offline, HfToken = token };

    static void AssertSameFiles(string expectedDir, string dir)
    {
        foreach (var f in Directory.GetFiles(expectedDir))
            Assert.True(File.ReadAllBytes(f).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir, Path.GetFileName(f)))),
                Path.GetFileName(f));
        Assert.Equal(Directory.GetFiles(expectedDir).Length, Directory.GetFiles(dir).Length);
    }

    [Fact]
    public void ColdDownloadWritesHuggingFaceHubLayoutAndSecondRunFetchesNoContent()
    {
        string snapshot = ModelSource.Resolve(Repo, Options());
        Assert.Equal(Path.Combine(RepoDir, "snapshots", FakeHub.Commit), snapshot);
        AssertSameFiles(KjvModel.Dir, snapshot);
        // huggingface_hub's rules: refs/main holds the commit; every snapshot file is a relative symlink to blobs/ETAG,
        // where ETAG is the LFS sha256 for LFS files and the git etag otherwise.
        Assert.Equal(FakeHub.Commit, File.ReadAllText(Path.Combine(RepoDir, "refs", "main")));
        foreach (var f in Directory.GetFiles(snapshot))
        {
            string target = new FileInfo(f).LinkTarget ?? throw new Xunit.Sdk.XunitException($"{f} is not a symlink");
            Assert.StartsWith("../../blobs/", target);
            byte[] bytes = File.ReadAllBytes(f);
            string name = Path.GetFileName(f);
            string expected = FakeHub.IsLfs(name) ? FakeHub.Sha256(bytes)
                : Convert.ToHexStringLower(System.Security.Cryptography.SHA1.HashData(bytes));
            Assert.Equal(expected, Path.GetFileName(target));
        }
        Assert.Empty(Directory.GetFiles(Path.Combine(RepoDir, "blobs"), "*.incomplete"));
        Assert.True(_hub.Sent.ContainsKey(FakeHub.Sha256(File.ReadAllBytes(Path.Combine(KjvModel.Dir, "model.safetensors")))));
        int gets = _hub.Gets();
        Assert.True(gets >= 5, $"{gets} GETs on the cold run");

        Assert.Equal(snapshot, ModelSource.Resolve(Repo, Options()));
        Assert.Equal(gets, _hub.Gets()); // the second run makes no request for file content
        int requests = _hub.Requests.Count;
        Assert.Equal(snapshot, ModelSource.Resolve(Repo, Options(offline: true)));
        Assert.Equal(requests, _hub.Requests.Count); // offline: no request at all
        // The hub unreachable (nothing listens on port 9): the cached revision, as huggingface_hub falls back to it.
        Assert.Equal(snapshot, ModelSource.Resolve(Repo, Options() with { Endpoint = "http://127.0.0.1:9" }));
    }

    [Fact]
    public void CorruptBlobOnTheServerIsRefusedAndNotKept()
    {
        _hub.AddRepo("test-org/corrupt", KjvModel.Dir, corrupt: "model.safetensors");
        var e = Assert.Throws<LayerPruneException>(() => ModelSource.Resolve("test-org/corrupt", Options()));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("sha256", e.Message);
        Assert.Contains("not kept", e.Message);
        string dir = Path.Combine(Cache, "models--test-org--corrupt");
        Assert.False(Directory.Exists(Path.Combine(dir, "snapshots")));
        Assert.Empty(Directory.GetFiles(Path.Combine(dir, "blobs")).Where(f => new FileInfo(f).Length > 10_000_000));
        Assert.Empty(Directory.GetFiles(Path.Combine(dir, "blobs"), "*.incomplete"));
    }

    [Fact]
    public void TwoConcurrentDownloadsBothSucceedWithOneCopy()
    {
        _hub.Throttle = TimeSpan.FromMilliseconds(5);
        var results = new string[2];
        Parallel.For(0, 2, i => results[i] = ModelSource.Resolve(Repo, Options()));
        Assert.Equal(results[0], results[1]);
        AssertSameFiles(KjvModel.Dir, results[0]);
        string sha = FakeHub.Sha256(File.ReadAllBytes(Path.Combine(KjvModel.Dir, "model.safetensors")));
        Assert.Equal(1, _hub.Gets(p => p == $"/cdn/{sha}")); // the second waited on the blob's lock and reused the blob
        Assert.Single(Directory.GetFiles(Path.Combine(RepoDir, "blobs")), f => new FileInfo(f).Length > 10_000_000);
        Assert.True(File.Exists(Path.Combine(Cache, ".locks", "models--test-org--kjv-llama-16l", sha + ".lock")));
    }

    [Fact]
    public void GatedRepoNeedsTheToken()
    {
        _hub.AddRepo("test-org/gated", KjvModel.Dir, gated: true);
        var e = Assert.Throws<LayerPruneException>(() => ModelSource.Resolve("test-org/gated", Options()));
        Assert.Contains("gated", e.Message);
        Assert.Contains("HF_TOKEN", e.Message);
        AssertSameFiles(KjvModel.Dir, ModelSource.Resolve("test-org/gated", Options(token: FakeHub.GoodToken)));
    }

    [Theory]
    [InlineData("test-org/kjv-llama-16l", "main")]
    [InlineData("a/b@v1.0", "v1.0")]
    public void HubIdsParse(string id, string revision) => Assert.Equal(revision, HubCache.Parse(id)!.Revision);

    [Theory]
    [InlineData("samples/kjv.gguf")]
    [InlineData("/abs/path")]
    [InlineData("a/b/c")]
    [InlineData("../x")]
    [InlineData("plain")]
    public void NonIdsDoNotParse(string s) => Assert.Null(HubCache.Parse(s));

    [Theory]
    [InlineData("\"abc\"", "abc")]
    [InlineData("W/\"abc\"", "abc")]
    [InlineData("\"../../etc\"", null)]
    [InlineData("", null)]
    [InlineData("\".\"", null)] // found by the fuzzer: blobs/. is the blobs folder itself
    [InlineData("..", null)]
    public void EtagsAreNormalizedAndPathSafe(string raw, string? expected) => Assert.Equal(expected, HubCache.NormalizeEtag(raw));

    // ---- the CLI: one-line errors, exit 1, nothing visible; resume after SIGKILL; a cold sweep equals the local one ----

    Dictionary<string, string> Env(bool offline = false) => new()
    {
        ["HF_ENDPOINT"] = _hub.Endpoint, ["HF_HUB_CACHE"] = Cache, ["HF_HUB_OFFLINE"] = offline ? "1" : "0", ["HF_TOKEN"] = "",
        ["HF_HOME"] = Path.Combine(_tmp, "home"),
    };

    [Theory]
    [InlineData("test-org/nope", false, "repository not found")]
    [InlineData("test-org/broken-index", false, "file model-00001-of-00002.safetensors not found")]
    [InlineData("test-org/gated", false, "accept its license")]
    [InlineData("test-org/kjv-llama-16l", true, "HF_HUB_OFFLINE=1")]
    public void CliErrorsAreOneLineWithNothingHalfWrittenVisible(string id, bool offline, string expected)
    {
        _hub.AddRepo("test-org/gated", KjvModel.Dir, gated: true);
        _hub.AddRepo("test-org/broken-index", new Dictionary<string, byte[]>
        {
            ["config.json"] = File.ReadAllBytes(Path.Combine(KjvModel.Dir, "config.json")),
            ["model.safetensors.index.json"] = Encoding.UTF8.GetBytes(
                """{"metadata": {}, "weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}"""),
        });
        var r = ChildRun.Run(["download", id], env: Env(offline));
        string line = ChildRun.AssertOneLineError(r, 1);
        Assert.Contains(expected, line);
        foreach (var repo in Directory.Exists(Cache) ? Directory.GetDirectories(Cache, "models--*") : [])
            Assert.False(Directory.Exists(Path.Combine(repo, "snapshots")), $"{repo} has a visible snapshot");
    }

    /// <summary>A repository with only pickle weights is refused in one line naming it, and nothing is downloaded.</summary>
    [Fact]
    public void PickleOnlyRepoIsRefusedNamingTheRepo()
    {
        _hub.AddRepo("test-org/pickle", new Dictionary<string, byte[]>
        {
            ["config.json"] = File.ReadAllBytes(Path.Combine(KjvModel.Dir, "config.json")),
            ["pytorch_model.bin"] = new byte[4096],
        });
        var line = ChildRun.AssertOneLineError(ChildRun.Run(["download", "test-org/pickle"], env: Env()), 1);
        Assert.Contains("test-org/pickle", line);
        Assert.Contains("pickle", line);
        Assert.Equal(0, _hub.Gets(p => p.EndsWith("pytorch_model.bin", StringComparison.Ordinal)));
        Assert.False(Directory.Exists(Path.Combine(Cache, "models--test-org--pickle", "snapshots")));
    }

    /// <summary>huggingface_hub's cache rule: without HF_HUB_CACHE the cache is HF_HOME/hub.</summary>
    [Fact]
    public void WithoutHfHubCacheTheCacheIsHfHomeHub()
    {
        var env = Env();
        env["HF_HUB_CACHE"] = "";
        var r = ChildRun.Run(["download", Repo], env: env);
        Assert.True(r.Exit == 0, r.Stderr);
        string expected = Path.Combine(_tmp, "home", "hub", "models--test-org--kjv-llama-16l", "snapshots", FakeHub.Commit);
        Assert.Equal(expected, r.Stdout.Trim());
        AssertSameFiles(KjvModel.Dir, expected);
        Assert.False(Directory.Exists(Cache));
    }

    [Fact]
    public void ColdSweepOfAHubIdDownloadsAndGivesTheLocalFoldersResults()
    {
        string[] Args(string model, string outDir) =>
            ["sweep", "--model", model, "--data", KjvModel.Validation, "--samples", "4", "--seq-len", "32",
             "--tasks", "loss:" + KjvModel.Validation, "--max-chunks", "4", "--batch", "4", "--strategies", "similarity,deepest",
             "--n", "1-2", "--out", outDir, "--quiet"];
        var local = ChildRun.Run(Args(KjvModel.Dir, Path.Combine(_tmp, "local")), env: Env());
        Assert.True(local.Exit == 0, local.Stderr);
        var hub = ChildRun.Run(Args(Repo, Path.Combine(_tmp, "hub-out")), env: Env());
        Assert.True(hub.Exit == 0, hub.Stderr);
        Assert.True(File.Exists(Path.Combine(RepoDir, "refs", "main")));
        static string Rows(string dir) =>
            System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "results.json")))!["rows"]!.ToJsonString();
        Assert.Equal(Rows(Path.Combine(_tmp, "local")), Rows(Path.Combine(_tmp, "hub-out")));
    }

    /// <summary>
    /// Two `layerprune download` processes of one model: the second asks the hub for model.safetensors while the first is
    /// inside its body (the hub holds that body until it has), so the second must wait on the blob's .lock. Both succeed
    /// with one snapshot, the blob is fetched and stored once, and nothing half-written or stray is left.
    /// </summary>
    [Fact]
    public void TwoConcurrentDownloadProcessesBothSucceedWithOneCopy()
    {
        byte[] weights = File.ReadAllBytes(Path.Combine(KjvModel.Dir, "model.safetensors"));
        string sha = FakeHub.Sha256(weights);
        string resolve = $"/{Repo}/resolve/main/model.safetensors";
        using var gate = new ManualResetEventSlim(false);
        _hub.BodyGate = gate;
        try
        {
            var first = Task.Run(() => ChildRun.Run(["download", Repo], env: Env()));
            Assert.True(SpinWait.SpinUntil(() => _hub.Sent.GetValueOrDefault(sha) > 0 || first.IsCompleted, TimeSpan.FromMinutes(3)));
            Assert.False(first.IsCompleted, first.IsCompleted ? first.Result.Stderr : "");
            var second = Task.Run(() => ChildRun.Run(["download", Repo], env: Env()));
            Assert.True(SpinWait.SpinUntil(() => _hub.Requests.Count(q => q.Path == resolve) >= 2 || second.IsCompleted,
                TimeSpan.FromMinutes(3)), "the second download never asked for model.safetensors");
            long sentWhenSecondAsked = _hub.Sent.GetValueOrDefault(sha);
            gate.Set();
            var a = first.Result;
            var b = second.Result;
            Assert.True(a.Exit == 0, a.Stderr);
            Assert.True(b.Exit == 0, b.Stderr);
            Assert.InRange(sentWhenSecondAsked, 1, weights.Length - 1); // they overlapped: the blob was half sent
            Assert.Equal(a.Stdout.Trim(), b.Stdout.Trim());
            AssertSameFiles(KjvModel.Dir, a.Stdout.Trim());
        }
        finally { gate.Set(); }
        Assert.Equal(1, _hub.Gets(p => p == $"/cdn/{sha}")); // fetched once
        var blobs = Directory.GetFiles(Path.Combine(RepoDir, "blobs"));
        Assert.Single(blobs, f => new FileInfo(f).Length == weights.Length); // stored once
        Assert.Equal(Directory.GetFiles(KjvModel.Dir).Length, blobs.Length); // one blob per file, no .incomplete or temp file
        Assert.Empty(Directory.GetFiles(RepoDir, "*.tmp-*", SearchOption.AllDirectories));
        // .locks holds empty lock files only (as huggingface_hub leaves them), one per blob at most.
        var locks = Directory.GetFiles(Path.Combine(Cache, ".locks", "models--test-org--kjv-llama-16l"));
        Assert.Contains(locks, f => Path.GetFileName(f) == sha + ".lock");
        Assert.All(locks, f => Assert.True(f.EndsWith(".lock") && new FileInfo(f).Length == 0, f));
        Assert.Equal(FakeHub.Commit, File.ReadAllText(Path.Combine(RepoDir, "refs", "main")));
    }

    [Fact]
    public void DownloadKilledMidShardResumesWithRangeAndVerifies()
    {
        string sha = FakeHub.Sha256(File.ReadAllBytes(Path.Combine(KjvModel.Dir, "model.safetensors")));
        _hub.Throttle = TimeSpan.FromMilliseconds(40);
        var killed = ChildRun.Run(["download", Repo], killWhen: () => _hub.Sent.GetValueOrDefault(sha) > 8_000_000, env: Env());
        Assert.True(killed.Killed, killed.Stderr);
        string incomplete = Path.Combine(RepoDir, "blobs", sha + ".incomplete");
        long partial = new FileInfo(incomplete).Length;
        Assert.InRange(partial, 1, 25_000_000);
        Assert.False(Directory.Exists(Path.Combine(RepoDir, "snapshots")));

        _hub.Throttle = null;
        var r = ChildRun.Run(["download", Repo], env: Env());
        Assert.True(r.Exit == 0, r.Stderr);
        Assert.Contains(_hub.Requests, q => q.Path == $"/cdn/{sha}" && q.Range == $"bytes={partial}-");
        string snapshot = r.Stdout.Trim();
        AssertSameFiles(KjvModel.Dir, snapshot);
        Assert.False(File.Exists(incomplete));
    }
}
