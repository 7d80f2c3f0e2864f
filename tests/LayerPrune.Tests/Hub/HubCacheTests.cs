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
