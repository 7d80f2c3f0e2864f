using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;

namespace LayerPrune.Evaluation.Suite;

/// <summary>
/// Per-document records in lm-evaluation-harness's samples layout (evaluator.py + EvaluationTracker): doc_id, doc,
/// target, arguments (the requests' [context, continuation] pairs, or [context, generation kwargs]), resps (per request,
/// the list of the model's responses), filtered_resps (per request, the response after the "none" filter), filter,
/// metrics (the names), prompt_hash and target_hash (sha256 hex of arguments[0][0] and of str(target)), then each
/// metric's value. As the harness's sanitize_list does, the responses are written as strings (Python's str of a
/// float and of a bool: "-12.5", "True").
/// </summary>
public static class SampleRecords
{
    /// <summary>A record of loglikelihood requests (multiple_choice, loglikelihood): resps [[ll, is_greedy]] per request.</summary>
    public static JsonObject Loglikelihood(int docId, JsonObject doc, JsonNode? target,
        IReadOnlyList<(string Context, string Continuation)> arguments, IReadOnlyList<Evaluation.Loglikelihood> resps,
        IReadOnlyDictionary<string, double> metrics)
    {
        var args = new JsonArray();
        foreach (var (c, k) in arguments) args.Add(new JsonArray(c, k));
        var r = new JsonArray();
        var f = new JsonArray();
        foreach (var x in resps)
        {
            r.Add(new JsonArray(new JsonArray(PyFloat(x.LogProb), x.IsGreedy ? "True" : "False")));
            f.Add(new JsonArray(PyFloat(x.LogProb), x.IsGreedy ? "True" : "False"));
        }
        return Build(docId, doc, target, args, r, f, arguments.Count > 0 ? arguments[0].Context : "", metrics);
    }

    /// <summary>A record with one response per request given as is (rolling log-likelihood, generation).</summary>
    public static JsonObject Build(int docId, JsonObject doc, JsonNode? target, JsonArray arguments, JsonArray resps,
        JsonArray filteredResps, string prompt, IReadOnlyDictionary<string, double> metrics)
    {
        var o = new JsonObject
        {
            ["doc_id"] = docId,
            ["doc"] = doc.DeepClone(),
            ["target"] = target?.DeepClone(),
            ["arguments"] = arguments,
            ["resps"] = resps,
            ["filtered_resps"] = filteredResps,
            ["filter"] = "none",
            ["metrics"] = new JsonArray(metrics.Keys.Select(k => (JsonNode?)k).ToArray()),
            ["prompt_hash"] = Sha256(prompt),
            ["target_hash"] = Sha256(target is JsonValue tv && tv.TryGetValue<string>(out var ts) ? ts : target?.ToJsonString() ?? "None"),
        };
        foreach (var (k, v) in metrics) o[k] = double.IsFinite(v) ? v : null;
        return o;
    }

    /// <summary>Python's repr of a float for the usual range (shortest round-trip digits).</summary>
    public static string PyFloat(double x)
    {
        if (double.IsNegativeInfinity(x)) return "-inf";
        if (double.IsPositiveInfinity(x)) return "inf";
        if (double.IsNaN(x)) return "nan";
        var s = x.ToString("R", CultureInfo.InvariantCulture);
        if (s.Contains('E')) s = s.Replace("E", "e", StringComparison.Ordinal);
        else if (!s.Contains('.')) s += ".0";
        return s;
    }

    /// <summary>The harness's hash_string: sha256 of the UTF-8 text, lower-case hex.</summary>
    public static string Sha256(string text) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)));
}
