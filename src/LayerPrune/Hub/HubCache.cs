using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using LayerPrune.Checkpoints;
using LayerPrune.Reporting;

namespace LayerPrune.Hub;

/// <summary>
/// Where and how <see cref="HubCache"/> finds and fetches models; defaults from the environment as huggingface_hub reads it.
/// </summary>
public sealed record HubOptions
{
    /// <summary>The hub's base URL: HF_ENDPOINT, else https://huggingface.co.</summary>
    public string Endpoint { get; init; } = (Env("HF_ENDPOINT") ?? "https://huggingface.co").TrimEnd('/');
    /// <summary>The cache folder: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.</summary>
    public string CacheDir { get; init; } = DefaultCacheDir();
    /// <summary>Access token for gated and private models: HF_TOKEN, else the token file huggingface-cli login writes.</summary>
    public string? HfToken { get; init; } = DefaultToken();
    /// <summary>Never touch the network (HF_HUB_OFFLINE=1): only the cache is read.</summary>
    public bool Offline { get; init; } = Env("HF_HUB_OFFLINE") is { } v && v.ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";
    /// <summary>Progress of the downloads (bytes, rate, ETA).</summary>
    public IProgressSink? Progress { get; init; }
    /// <summary>The HTTP handler (tests); null: a default one.</summary>
    public HttpMessageHandler? Handler { get; init; }

    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    /// <summary>huggingface_hub's cache folder rule.</summary>
    public static string DefaultCacheDir() =>
        Env("HF_HUB_CACHE") ?? Path.Combine(Env("HF_HOME") ?? Path.Combine(
            Env("XDG_CACHE_HOME") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"),
            "huggingface"), "hub");

    static string? DefaultToken()
    {
        if (Env("HF_TOKEN") is { } t) return t.Trim();
        string home = Env("HF_HOME")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface");
        string file = Env("HF_TOKEN_PATH") ?? Path.Combine(home, "token");
        try { return File.Exists(file) ? File.ReadAllText(file).Trim() is { Length: > 0 } s ? s : null : null; }
        catch (IOException) { return null; }
    }
}

/// <summary>A hub model id ORG/NAME with its revision (branch, tag or commit; default main).</summary>
public sealed record HubId(string Repo, string Revision)
{
    /// <summary>The cache folder name huggingface_hub uses: models--ORG--NAME.</summary>
    public string FolderName => "models--" + Repo.Replace("/", "--", StringComparison.Ordinal);
    /// <summary>ORG/NAME[@REV] as given.</summary>
    public override string ToString() => Revision == "main" ? Repo : $"{Repo}@{Revision}";
}

/// <summary>
/// Hugging Face Hub models in huggingface_hub's cache layout (file_download.py hf_hub_download): CACHE/models--ORG--NAME/
/// blobs/ETAG (the file, named by its etag: the LFS sha256 or the git blob id), snapshots/COMMIT/FILE (relative symlinks into
/// blobs), refs/REVISION (the commit), and CACHE/.locks/models--ORG--NAME/ETAG.lock. Downloads go to blobs/ETAG.incomplete,
/// resume with an HTTP Range request, are verified against the LFS sha256 (X-Linked-Etag) and renamed into place; snapshot
/// links and the ref are written only when every file of the model is there, so a failed download leaves nothing visible.
/// </summary>
public static partial class HubCache
{
    /// <summary>Files fetched besides the weights when present (404 is fine).</summary>
    public static readonly string[] OptionalFiles =
    [
        "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.json", "merges.txt", "chat_template.jinja",
    ];

    [GeneratedRegex(
        @"^(?<repo>[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95})(@(?<rev>[A-Za-z0-9][A-Za-z0-9._/-]{0,199}))?$")]
    private static partial Regex IdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Pattern();

    /// <summary>Parses ORG/NAME[@REVISION]; null when <paramref name="s"/> is not of that form.</summary>
    public static HubId? Parse(string s)
    {
        var m = IdPattern().Match(s);
        if (!m.Success || s.Contains("..", StringComparison.Ordinal) || s.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            return null;
        return new HubId(m.Groups["repo"].Value, m.Groups["rev"].Success ? m.Groups["rev"].Value : "main");
    }

    /// <summary>
    /// The snapshot folder of <paramref name="id"/>: from the cache when it holds the revision's complete model, else
    /// downloaded (unless <see cref="HubOptions.Offline"/>). Online, one HEAD request for config.json resolves the
    /// revision to its commit; a cached complete snapshot of that commit makes no further request.
    /// </summary>
    public static string Resolve(HubId id, HubOptions? options = null)
    {
        var o = options ?? new HubOptions();
        string repoDir = Path.Combine(o.CacheDir, id.FolderName);
        if (o.Offline)
            return CachedSnapshot(id, repoDir) ?? throw new LayerPruneException(
                $"{id}: not in the Hugging Face cache {o.CacheDir} and HF_HUB_OFFLINE=1 forbids downloading it " +
                "(resolve it once online to download it)");
        using var http = new Fetcher(id, o);
        Remote config;
        try { config = http.Head("config.json", required: true)!; }
        catch (LayerPruneException e) when (e.InnerException is HttpRequestException && CachedSnapshot(id, repoDir) is { } cached)
        {
            return cached; // the hub cannot be reached: the cached revision, as huggingface_hub falls back to it
        }
        string snapshot = Path.Combine(repoDir, "snapshots", config.Commit);
        if (Complete(snapshot))
        {
            WriteRef(repoDir, id, config.Commit);
            return snapshot;
        }
        // Files in the revision: config + optional tokenizer files + the weights (index + shards, or model.safetensors).
        var files = new List<(string Name, Remote Remote)> { ("config.json", config) };
        foreach (var f in OptionalFiles)
            if (http.Head(f, required: false) is { } r) files.Add((f, r));
        if (http.Head(Checkpoint.IndexFile, required: false) is { } index)
        {
            string indexBlob = http.Fetch(Checkpoint.IndexFile, index, repoDir);
            files.Add((Checkpoint.IndexFile, index));
            foreach (var shard in ShardNames(indexBlob, id))
                files.Add((shard, http.Head(shard, required: true)!));
        }
        else if (http.Head(Checkpoint.SingleFile, required: false) is { } single) files.Add((Checkpoint.SingleFile, single));
        else if (http.Head("pytorch_model.bin", required: false) is not null
                 || http.Head("pytorch_model.bin.index.json", required: false) is not null)
            throw new LayerPruneException(
                $"{id}: the repository has only pickle weights (pytorch_model.bin); LayerPrune never unpickles " +
                "(it can run arbitrary code)");
        else throw new LayerPruneException($"{id}: the repository has no {Checkpoint.SingleFile} or {Checkpoint.IndexFile}");
        foreach (var (name, remote) in files)
            if (remote.Commit != config.Commit)
                throw new LayerPruneException($"{id}: revision moved while downloading ({name} is at {remote.Commit}, config.json at " +
                                              $"{config.Commit}); run again");
        var blobs = files.Select(f => (f.Name, Blob: http.Fetch(f.Name, f.Remote, repoDir))).ToList();
        // Everything is verified in blobs/: now make it visible (snapshot links, then the ref).
        Directory.CreateDirectory(snapshot);
        foreach (var (name, blob) in blobs)
        {
            string link = Path.Combine(snapshot, name);
            if (File.Exists(link) || new FileInfo(link).LinkTarget is not null) continue;
            string tmp = $"{link}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
            File.CreateSymbolicLink(tmp, Path.GetRelativePath(snapshot, blob));
            File.Move(tmp, link, overwrite: true);
        }
        WriteRef(repoDir, id, config.Commit);
        return snapshot;
    }

    /// <summary>The snapshot of <paramref name="id"/> in the cache when it is complete (offline lookup); else null.</summary>
    public static string? CachedSnapshot(HubId id, string repoDir)
    {
        string? commit = CommitPattern().IsMatch(id.Revision) ? id.Revision
            : File.Exists(Path.Combine(repoDir, "refs", id.Revision)) ? File.ReadAllText(Path.Combine(repoDir, "refs", id.Revision)).Trim()
            : null;
        if (commit is null || !CommitPattern().IsMatch(commit)) return null;
        string snapshot = Path.Combine(repoDir, "snapshots", commit);
        return Complete(snapshot) ? snapshot : null;
    }

    /// <summary>config.json and every weights file (single or all shards of the index) are present.</summary>
    static bool Complete(string snapshot)
    {
        if (!File.Exists(Path.Combine(snapshot, "config.json"))) return false;
        string index = Path.Combine(snapshot, Checkpoint.IndexFile);
        if (File.Exists(index))
        {
            try { return ShardNames(index, null).All(s => File.Exists(Path.Combine(snapshot, s))); }
            catch (LayerPruneException) { return false; }
        }
        return File.Exists(Path.Combine(snapshot, Checkpoint.SingleFile));
    }

    static IEnumerable<string> ShardNames(string indexPath, HubId? id)
    {
        var root = JsonInput.ReadObject(indexPath);
        if (root["weight_map"] is not JsonObject wm)
            throw new LayerPruneException($"{id?.ToString() ?? indexPath}: {Checkpoint.IndexFile} has no weight_map");
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (_, v) in wm)
        {
            string s = v is JsonValue jv && jv.TryGetValue<string>(out var t) ? t : "";
            if (s.Length == 0 || s != Path.GetFileName(s) || s is "." or "..")
                throw new LayerPruneException(
                    $"{id?.ToString() ?? indexPath}: {Checkpoint.IndexFile} names a shard '{s}' outside the model");
            names.Add(s);
        }
        return names;
    }

    static void WriteRef(string repoDir, HubId id, string commit)
    {
        if (id.Revision == commit) return;
        string refPath = Path.Combine(repoDir, "refs", id.Revision);
        if (File.Exists(refPath) && File.ReadAllText(refPath).Trim() == commit) return;
        Directory.CreateDirectory(Path.GetDirectoryName(refPath)!);
        string tmp = $"{refPath}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        File.WriteAllText(tmp, commit);
        File.Move(tmp, refPath, overwrite: true);
    }

    /// <summary>A file's resolve headers: etag (LFS sha256 or git blob id), commit, size and where to GET it.</summary>
    internal sealed record Remote(string Etag, string Commit, long? Size, Uri Location);

    /// <summary>The etag as huggingface_hub normalizes it: X-Linked-Etag over ETag, without W/ and quotes.</summary>
    public static string? NormalizeEtag(string? raw)
    {
        if (raw is null) return null;
        string e = raw.Trim();
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        e = e.Trim('"');
        // The etag names a file in blobs/: letters, digits, '-', '_', '.', and never '.' first (".", ".." and hidden names).
        return e.Length is > 0 and <= 128 && char.IsAsciiLetterOrDigit(e[0])
            && e.All(ch => char.IsAsciiLetterOrDigit(ch) || ch is '-' or '_' or '.') ? e : null;
    }

    /// <summary>HTTP against the hub's resolve API for one repository.</summary>
    sealed class Fetcher : IDisposable
    {
        readonly HubId _id;
        readonly HubOptions _o;
        readonly HttpClient _http;
        readonly string _locks;

        public Fetcher(HubId id, HubOptions o)
        {
            _id = id;
            _o = o;
            _http = new HttpClient(o.Handler ?? new SocketsHttpHandler { AllowAutoRedirect = false }, disposeHandler: o.Handler is null)
                { Timeout = Timeout.InfiniteTimeSpan };
            _locks = Path.Combine(o.CacheDir, ".locks", id.FolderName);
        }

        public void Dispose() => _http.Dispose();

        Uri Url(string file) => new($"{_o.Endpoint}/{_id.Repo}/resolve/{Uri.EscapeDataString(_id.Revision)}/{file}");

        HttpRequestMessage Request(HttpMethod method, Uri url)
        {
            var r = new HttpRequestMessage(method, url);
            r.Headers.UserAgent.ParseAdd("layerprune/1.0");
            r.Headers.AcceptEncoding.ParseAdd("identity"); // sizes and Range offsets are of the stored bytes
            // The token goes to the hub only, never to the CDN a download is redirected to.
            if (_o.HfToken is { } t && url.Host == new Uri(_o.Endpoint).Host)
                r.Headers.Authorization = new AuthenticationHeaderValue("Bearer", t);
            return r;
        }

        HttpResponseMessage Send(HttpRequestMessage r, string file)
        {
            try { return _http.Send(r, HttpCompletionOption.ResponseHeadersRead); }
            catch (HttpRequestException e)
            {
                throw new LayerPruneException($"{_id}: cannot reach {_o.Endpoint} for {file} ({JsonInput.FirstLine(e.Message)}); " +
                                              "set HF_HUB_OFFLINE=1 to use the cache only", e);
            }
        }

        /// <summary>HEAD of a file; null for a missing optional file. Errors are one line naming the repository or the file.</summary>
        public Remote? Head(string file, bool required)
        {
            using var res = Send(Request(HttpMethod.Head, Url(file)), file);
            var code = (int)res.StatusCode;
            string? error = Header(res, "X-Error-Code");
            if (code is 401 or 403 || error == "GatedRepo")
            {
                if (error == "RepoNotFound") throw RepoNotFound();
                throw new LayerPruneException(
                    $"{_id}: HTTP {code}: the model is gated or private; accept its license on {_o.Endpoint}/{_id.Repo} and set HF_TOKEN" +
                    (_o.HfToken is null ? "" : " to a token with access (the one given was refused)"));
            }
            if (code == 404)
            {
                if (error is "RepoNotFound") throw RepoNotFound();
                if (error is "RevisionNotFound")
                    throw new LayerPruneException($"{_id}: revision '{_id.Revision}' not found on {_o.Endpoint}/{_id.Repo}");
                if (!required) return null;
                throw new LayerPruneException($"{_id}: file {file} not found in the repository (revision {_id.Revision})");
            }
            if (code is not (200 or 301 or 302 or 303 or 307 or 308))
                throw new LayerPruneException($"{_id}: HTTP {code} for {file} from {_o.Endpoint}");
            string? commit = Header(res, "X-Repo-Commit");
            string? etag = NormalizeEtag(Header(res, "X-Linked-Etag") ?? Header(res, "ETag"));
            if (commit is null || !CommitPattern().IsMatch(commit) || etag is null)
                throw new LayerPruneException(
                    $"{_id}: {_o.Endpoint} sent no valid X-Repo-Commit / ETag for {file} (not a Hugging Face hub?)");
            long? size = long.TryParse(Header(res, "X-Linked-Size"), out long ls) && ls >= 0 ? ls : res.Content.Headers.ContentLength;
            Uri location = Url(file);
            if (code != 200)
            {
                if (res.Headers.Location is not { } loc)
                    throw new LayerPruneException($"{_id}: HTTP {code} for {file} without a Location header");
                location = loc.IsAbsoluteUri ? loc : new Uri(Url(file), loc);
            }
            return new Remote(etag, commit, size, location);
        }

        LayerPruneException RepoNotFound() => new(
            $"{_id}: repository not found on {_o.Endpoint} (check the name; a private repository needs HF_TOKEN)");

        static string? Header(HttpResponseMessage r, string name) =>
            r.Headers.TryGetValues(name, out var v) || r.Content.Headers.TryGetValues(name, out v) ? v.FirstOrDefault() : null;

        /// <summary>
        /// The verified blob of <paramref name="file"/> (downloaded unless already in blobs/), under the blob's lock so that
        /// concurrent processes download it once.
        /// </summary>
        public string Fetch(string file, Remote remote, string repoDir)
        {
            string blobs = Path.Combine(repoDir, "blobs"), blob = Path.Combine(blobs, remote.Etag);
            if (File.Exists(blob)) return blob;
            Directory.CreateDirectory(blobs);
            Directory.CreateDirectory(_locks);
            using (BlobLock.Acquire(Path.Combine(_locks, remote.Etag + ".lock")))
            {
                if (File.Exists(blob)) return blob; // another process finished it while we waited
                Download(file, remote, blob);
            }
            return blob;
        }

        void Download(string file, Remote remote, string blob)
        {
            string incomplete = blob + ".incomplete";
            bool lfs = Sha256Pattern().IsMatch(remote.Etag);
            for (int attempt = 0; ; attempt++)
            {
                long have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
                if (remote.Size is long total && have > total) { File.Delete(incomplete); have = 0; }
                var req = Request(HttpMethod.Get, remote.Location);
                if (have > 0) req.Headers.Range = new RangeHeaderValue(have, null);
                using var res = Send(req, file);
                if (have > 0 && res.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && attempt == 0)
                {
                    File.Delete(incomplete);
                    continue;
                }
                if (res.StatusCode is not (HttpStatusCode.OK or HttpStatusCode.PartialContent))
                    throw new LayerPruneException($"{_id}: HTTP {(int)res.StatusCode} downloading {file}");
                bool append = res.StatusCode == HttpStatusCode.PartialContent;
                if (append && res.Content.Headers.ContentRange?.From is long from && from != have)
                    throw new LayerPruneException($"{_id}: the server resumed {file} at byte {from}, not {have}");
                if (!append) have = 0;
                long? size = remote.Size ?? (res.Content.Headers.ContentLength is long cl ? cl + have : null);
                var mode = append ? FileMode.Append : FileMode.Create;
                using (var output = new FileStream(incomplete, mode, FileAccess.Write, FileShare.None))
                using (var body = res.Content.ReadAsStream())
                using (var bar = ProgressReporter.Start($"download {file}", size ?? 0, "B", _o.Progress))
                {
                    bar.Advance(have);
                    var buffer = new byte[1 << 20];
                    int n;
                    while ((n = body.Read(buffer)) > 0)
                    {
                        output.Write(buffer, 0, n);
                        bar.Advance(n);
                    }
                }
                break;
            }
            long got = new FileInfo(incomplete).Length;
            if (remote.Size is long expected && got != expected)
                throw new LayerPruneException(
                    $"{_id}: {file} ended after {got} of {expected} bytes (connection lost?); run again to resume");
            if (lfs)
            {
                string sha;
                using (var f = File.OpenRead(incomplete)) sha = Convert.ToHexStringLower(SHA256.HashData(f));
                if (sha != remote.Etag)
                {
                    File.Delete(incomplete);
                    throw new LayerPruneException(
                        $"{_id}: {file} has sha256 {sha} but the hub says {remote.Etag}: corrupt download, not kept; run again");
                }
            }
            File.Move(incomplete, blob, overwrite: true);
        }
    }
}

/// <summary>An exclusive lock file (huggingface_hub's .lock per blob): held while one process downloads the blob.</summary>
sealed class BlobLock : IDisposable
{
    readonly FileStream _fs;
    BlobLock(FileStream fs) => _fs = fs;

    public static BlobLock Acquire(string path)
    {
        for (int waited = 0; ; waited++)
        {
            try { return new BlobLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None)); }
            catch (IOException) when (waited < 36_000) { Thread.Sleep(100); } // another download holds it (up to an hour)
        }
    }

    public void Dispose() => _fs.Dispose();
}
