using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace LayerPrune.Tests.Hub;

/// <summary>
/// A loopback imitation of the Hugging Face Hub's resolve API (huggingface_hub file_download.py reads these headers):
/// HEAD/GET /{org}/{name}/resolve/{rev}/{file} answer with X-Repo-Commit and ETag; LFS files (*.safetensors,
/// tokenizer.model) answer 302 to a "CDN" path /cdn/{sha256} with X-Linked-Etag (the sha256) and X-Linked-Size; the CDN
/// honours Range (206). Errors carry X-Error-Code (RepoNotFound, EntryNotFound, GatedRepo) as the hub does. Every request
/// is counted; <see cref="Throttle"/> slows file bodies down (to kill a client mid-download).
/// </summary>
public sealed class FakeHub : IDisposable
{
    public const string Commit = "0123456789abcdef0123456789abcdef01234567";
    public const string GoodToken = "hf_test_token";

    sealed record Repo(Dictionary<string, byte[]> Files, bool Gated, HashSet<string> Corrupt);
    readonly ConcurrentDictionary<string, Repo> _repos = new();
    readonly ConcurrentDictionary<string, byte[]> _cdn = new();
    readonly TcpListener _listener;
    readonly CancellationTokenSource _stop = new();
    readonly Task _loop;

    public ConcurrentQueue<(string Method, string Path, string? Range)> Requests { get; } = new();
    /// <summary>Bytes of file bodies sent so far, per CDN sha256 or file name.</summary>
    public ConcurrentDictionary<string, long> Sent { get; } = new();
    /// <summary>When set, a file body pauses this long after every 256 KiB.</summary>
    public TimeSpan? Throttle { get; set; }
    /// <summary>When set, a body longer than 256 KiB stops after its first 256 KiB until the gate opens (up to 5 minutes).</summary>
    public ManualResetEventSlim? BodyGate { get; set; }

    public string Endpoint { get; }

    public FakeHub()
    {
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Endpoint = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";
        _loop = Task.Run(Accept);
    }

    public static bool IsLfs(string file) => file.EndsWith(".safetensors", StringComparison.Ordinal) || file == "tokenizer.model";
    public static string Sha256(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

    /// <summary>Serves every file of <paramref name="dir"/> as <paramref name="repo"/>; <paramref name="corrupt"/> files are
    /// sent with one byte flipped while their headers announce the true sha256.</summary>
    public void AddRepo(string repo, string dir, bool gated = false, params string[] corrupt) =>
        AddRepo(repo, Directory.GetFiles(dir).ToDictionary(Path.GetFileName, File.ReadAllBytes)!, gated, corrupt);

    public void AddRepo(string repo, Dictionary<string, byte[]> files, bool gated = false, params string[] corrupt) =>
        _repos[repo] = new Repo(files, gated, [.. corrupt]);

    public int Gets(Func<string, bool>? path = null) => Requests.Count(r => r.Method == "GET" && (path?.Invoke(r.Path) ?? true));

    async Task Accept()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient c;
            try { c = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch { return; }
            _ = Task.Run(() => { try { Serve(c); } catch (IOException) { } catch (ObjectDisposedException) { } finally { c.Dispose(); } });
        }
    }

    void Serve(TcpClient c)
    {
        var s = c.GetStream();
        var head = new StringBuilder();
        while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
        {
            int b = s.ReadByte();
            if (b < 0) return;
            head.Append((char)b);
        }
        var lines = head.ToString().Split("\r\n");
        var parts = lines[0].Split(' ');
        string method = parts[0], path = Uri.UnescapeDataString(parts[1]);
        var headers = lines.Skip(1).Where(l => l.Contains(':'))
            .ToDictionary(l => l[..l.IndexOf(':')].Trim().ToLowerInvariant(), l => l[(l.IndexOf(':') + 1)..].Trim());
        headers.TryGetValue("range", out var range);
        Requests.Enqueue((method, path, range));
        if (path.StartsWith("/cdn/", StringComparison.Ordinal))
        {
            string sha = path[5..];
            var data = _cdn.TryGetValue(sha, out var d) ? d : null;
            if (data is null) { Write(s, 404, [], null, method); return; }
            Body(s, method, data, range, sha);
            return;
        }
        // /{org}/{name}/resolve/{rev}/{file}
        var seg = path.TrimStart('/').Split('/', 5);
        if (seg.Length != 5 || seg[2] != "resolve") { Write(s, 404, [], null, method); return; }
        string repoName = $"{seg[0]}/{seg[1]}", file = seg[4];
        if (!_repos.TryGetValue(repoName, out var repo))
        {
            Write(s, 404, [("X-Error-Code", "RepoNotFound")], null, method);
            return;
        }
        if (repo.Gated && !(headers.TryGetValue("authorization", out var auth) && auth == $"Bearer {GoodToken}"))
        {
            Write(s, 401, [("X-Error-Code", "GatedRepo")], null, method);
            return;
        }
        if (seg[3] != "main" && seg[3] != Commit)
        {
            Write(s, 404, [("X-Error-Code", "RevisionNotFound")], null, method);
            return;
        }
        if (!repo.Files.TryGetValue(file, out var bytes))
        {
            Write(s, 404, [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", Commit)], null, method);
            return;
        }
        if (IsLfs(file))
        {
            string sha = Sha256(bytes);
            var served = bytes;
            if (repo.Corrupt.Contains(file)) { served = (byte[])bytes.Clone(); served[served.Length / 2] ^= 0xFF; }
            string cdnKey = repo.Corrupt.Contains(file) ? sha + "-corrupt" : sha;
            _cdn[cdnKey] = served;
            Write(s, 302, [("X-Repo-Commit", Commit), ("ETag", $"\"{Convert.ToHexStringLower(SHA1.HashData(bytes))}\""),
                ("X-Linked-Etag", $"\"{sha}\""), ("X-Linked-Size", bytes.Length.ToString()), ("Location", $"{Endpoint}/cdn/{cdnKey}")],
                null, method);
            return;
        }
        string etag = Convert.ToHexStringLower(SHA1.HashData(bytes));
        Body(s, method, bytes, null, file, [("X-Repo-Commit", Commit), ("ETag", $"\"{etag}\"")]);
    }

    void Body(Stream s, string method, byte[] data, string? range, string key, (string, string)[]? extra = null)
    {
        long from = 0;
        int code = 200;
        var h = new List<(string, string)>(extra ?? []) { ("Accept-Ranges", "bytes") };
        if (range is not null && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
        {
            from = long.Parse(range[6..^1]);
            if (from >= data.Length) { Write(s, 416, h, null, method); return; }
            code = 206;
            h.Add(("Content-Range", $"bytes {from}-{data.Length - 1}/{data.Length}"));
        }
        Write(s, code, h, data.AsMemory((int)from), method, key);
    }

    void Write(Stream s, int code, IEnumerable<(string, string)> headers, ReadOnlyMemory<byte>? body, string method, string? key = null)
    {
        var sb = new StringBuilder($"HTTP/1.1 {code} {(code is 200 or 206 ? "OK" : "X")}\r\nConnection: close\r\n");
        foreach (var (k, v) in headers) sb.Append($"{k}: {v}\r\n");
        sb.Append($"Content-Length: {body?.Length ?? 0}\r\n\r\n");
        s.Write(Encoding.ASCII.GetBytes(sb.ToString()));
        if (body is not { } b || method == "HEAD") { s.Flush(); return; }
        const int Chunk = 256 * 1024;
        for (int i = 0; i < b.Length; i += Chunk)
        {
            var part = b.Slice(i, Math.Min(Chunk, b.Length - i));
            s.Write(part.Span);
            s.Flush();
            if (key is not null) Sent.AddOrUpdate(key, part.Length, (_, v) => v + part.Length);
            if (Throttle is { } t) Thread.Sleep(t);
            if (i == 0 && b.Length > Chunk && key is not null && BodyGate is { } gate) gate.Wait(TimeSpan.FromMinutes(5));
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try { _loop.Wait(2000); } catch (AggregateException) { }
    }
}
