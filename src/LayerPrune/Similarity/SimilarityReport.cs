using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Reporting;

namespace LayerPrune.Similarity;

/// <summary>similarity.json / similarity.csv / similarity.png for a result.</summary>
public static class SimilarityReport
{
    public static JsonObject ToJson(SimilarityResult r, string model, string data, int seqLen)
    {
        int n = r.Layers + 1;
        var json = new JsonObject
        {
            ["indexing"] = "0-based: matrix[a][b] = mean angular distance arccos(cos(x_a, x_b))/pi at the last real token, x_0 = embeddings (input of layer 0), x_i = input of layer i, x_L = last layer output before the final norm; best: removing layers start..end_exclusive-1 (0-based, end exclusive) minimises matrix[start][start+n]",
            ["model"] = model, ["data"] = data, ["samples"] = r.Samples, ["seq_len"] = seqLen, ["layers"] = r.Layers,
            ["matrix"] = new JsonArray(Enumerable.Range(0, n).Select(a => (JsonNode?)new JsonArray(Enumerable.Range(0, n).Select(b => (JsonNode?)r.Matrix[a, b]).ToArray())).ToArray()),
            ["best"] = new JsonArray(r.Best().Select(b => (JsonNode?)new JsonObject
            {
                ["n"] = b.N, ["start"] = b.Start, ["end_exclusive"] = b.EndExclusive, ["distance"] = b.Distance,
            }).ToArray()),
        };
        if (r.BlockInfluence is { } bi)
            json["block_influence"] = new JsonObject
            {
                ["definition"] = "ShortGPT Block Influence of layer i: mean over all non-padding tokens of 1 - cos(input of layer i, output of layer i)",
                ["values"] = new JsonArray(bi.Select(v => (JsonNode?)v).ToArray()),
                ["lowest_first"] = new JsonArray(bi.Select((v, i) => (v, i)).OrderBy(x => x.v).Select(x => (JsonNode?)x.i).ToArray()),
            };
        return json;
    }

    public static string ToCsv(SimilarityResult r)
    {
        var sb = new StringBuilder("n,start,end_exclusive,distance,is_best\n");
        var best = r.Best().ToDictionary(b => b.N, b => b.Start);
        for (int n = 1; n < r.Layers; n++)
            for (int l = 0; l + n <= r.Layers; l++)
                sb.Append(CultureInfo.InvariantCulture, $"{n},{l},{l + n},{r.Matrix[l, l + n]:R},{(best[n] == l ? 1 : 0)}\n");
        return sb.ToString();
    }

    /// <summary>Writes the three files into <paramref name="dir"/> (which must exist).</summary>
    public static void Write(string dir, SimilarityResult r, string model, string data, int seqLen)
    {
        File.WriteAllText(Path.Combine(dir, "similarity.json"), ToJson(r, model, data, seqLen).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(dir, "similarity.csv"), ToCsv(r));
        Plots.SimilarityHeatmap(r.Matrix, Path.Combine(dir, "similarity.png"),
            $"{Path.GetFileName(Path.GetFullPath(model).TrimEnd('/'))}: angular distance of blocks ({r.Samples} samples)");
    }
}
