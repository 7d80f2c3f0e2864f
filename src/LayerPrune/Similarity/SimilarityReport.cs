using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using LayerPrune.Reporting;

namespace LayerPrune.Similarity;

/// <summary>similarity.json / similarity.csv / similarity.png for a result.</summary>
public static class SimilarityReport
{
    /// <summary>similarity.json: the angular matrix and its l*(n); the all-token matrices, the chosen metric's blocks and the bootstrap
    /// when present.</summary>
    /// <param name="metric">The metric the block choice ("chosen") is made by.</param>
    /// <param name="protectLast">Whether "chosen" keeps the final layer.</param>
    /// <param name="r">The similarity pass.</param>
    /// <param name="model">The model's path (recorded).</param>
    /// <param name="data">The data's path (recorded).</param>
    /// <param name="seqLen">Tokens per sample (recorded).</param>
    /// <param name="bootstrap">Bootstrap intervals of the block choice; null when not computed.</param>
    public static JsonObject ToJson(SimilarityResult r, string model, string data, int seqLen,
                                    SimilarityMetric metric = SimilarityMetric.Angular,
                                    bool protectLast = false, SimilarityBootstrap? bootstrap = null)
    {
        int n = r.Layers + 1;
        var json = new JsonObject
        {
            ["indexing"] = "0-based: matrix[a][b] = mean angular distance arccos(cos(x_a, x_b))/pi at the last real token, x_0 = " +
                "embeddings (input of layer 0), x_i = input of layer i, x_L = last layer output before the final norm; best: removing " +
                "layers start..end_exclusive-1 (0-based, end exclusive) minimises matrix[start][start+n]",
            ["model"] = model, ["data"] = data, ["samples"] = r.Samples, ["seq_len"] = seqLen, ["layers"] = r.Layers,
            ["matrix"] = new JsonArray(Enumerable.Range(0, n)
                .Select(a => (JsonNode?)new JsonArray(Enumerable.Range(0, n).Select(b => (JsonNode?)r.Matrix[a, b]).ToArray())).ToArray()),
            ["best"] = new JsonArray(r.Best().Select(b => (JsonNode?)new JsonObject
            {
                ["n"] = b.N, ["start"] = b.Start, ["end_exclusive"] = b.EndExclusive, ["distance"] = b.Distance,
            }).ToArray()),
        };
        if (r.BlockInfluence is { } bi)
            json["block_influence"] = new JsonObject
            {
                ["definition"] = "ShortGPT Block Influence of layer i: mean over all non-padding tokens of 1 - cos(input of layer i, " +
                    "output of layer i)",
                ["values"] = new JsonArray(bi.Select(v => (JsonNode?)v).ToArray()),
                ["lowest_first"] = new JsonArray(bi.Select((v, i) => (v, i)).OrderBy(x => x.v).Select(x => (JsonNode?)x.i).ToArray()),
            };
        if (r.BlockInfluenceMatrix is { } bim)
            json["bi_matrix"] = MatrixSection(bim, r, SimilarityMetric.BlockInfluence,
                "matrix[a][b] = mean over all non-padding tokens of 1 - cos(x_a, x_b) (a distance; its superdiagonal is block_influence)");
        if (r.CkaDistance is { } cka)
            json["cka"] = MatrixSection(cka, r, SimilarityMetric.Cka,
                "matrix[a][b] = 1 - linear CKA(x_a, x_b) (Kornblith et al. 2019), the examples being all non-padding tokens: holds 1 - " +
                    "CKA, a distance (0 = identical up to rotation and isotropic scale)");
        json["chosen"] = new JsonObject
        {
            ["metric"] = SimilarityMetrics.Name(metric),
            ["protect_last"] = protectLast,
            ["best"] = BestArray(r.BestAll(metric, protectLast)),
        };
        if (bootstrap is not null) json["bootstrap"] = bootstrap.ToJson();
        return json;
    }

    static JsonObject MatrixSection(double[,] m, SimilarityResult r, SimilarityMetric metric, string definition) => new()
    {
        ["definition"] = definition,
        ["matrix"] = MatrixJson(m),
        ["best"] = BestArray(r.BestAll(metric)),
    };

    static JsonArray MatrixJson(double[,] m) => new(Enumerable.Range(0, m.GetLength(0))
        .Select(a => (JsonNode?)new JsonArray(Enumerable.Range(0, m.GetLength(1)).Select(b => (JsonNode?)m[a, b]).ToArray())).ToArray());

    static JsonArray BestArray(IEnumerable<BestBlock> best) => new(best.Select(b => (JsonNode?)new JsonObject
    {
        ["n"] = b.N, ["start"] = b.Start, ["end_exclusive"] = b.EndExclusive, ["distance"] = b.Distance,
    }).ToArray());

    /// <summary>similarity.csv: the angular matrix of <paramref name="r"/>, one row per layer index.</summary>
    public static string ToCsv(SimilarityResult r)
    {
        var sb = new StringBuilder("n,start,end_exclusive,distance,is_best\n");
        var best = r.Best().ToDictionary(b => b.N, b => b.Start);
        for (int n = 1; n < r.Layers; n++)
            for (int l = 0; l + n <= r.Layers; l++)
                sb.Append(CultureInfo.InvariantCulture, $"{n},{l},{l + n},{r.Matrix[l, l + n]:R},{(best[n] == l ? 1 : 0)}\n");
        return sb.ToString();
    }

    /// <summary>Writes similarity.json, .csv and .png into <paramref name="dir"/> (which must exist), plus similarity_bi.png and
    /// similarity_cka.png for the all-token matrices that were computed; the bootstrap's unstable choices are marked on
    /// similarity.png.</summary>
    public static void Write(string dir, SimilarityResult r, string model, string data, int seqLen,
                             SimilarityMetric metric = SimilarityMetric.Angular,
                             bool protectLast = false, SimilarityBootstrap? bootstrap = null)
    {
        File.WriteAllText(Path.Combine(dir, "similarity.json"),
            ToJson(r, model, data, seqLen, metric, protectLast, bootstrap)
                .ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        File.WriteAllText(Path.Combine(dir, "similarity.csv"), ToCsv(r));
        string name = Path.GetFileName(Path.GetFullPath(model).TrimEnd('/'));
        if (bootstrap is null)
            Plots.SimilarityHeatmap(r.Matrix, Path.Combine(dir, "similarity.png"),
                $"{name}: angular distance of blocks ({r.Samples} samples)");
        else
            SimilarityFigures.HeatmapWithBootstrap(r.Matrix, bootstrap, Path.Combine(dir, "similarity.png"),
                $"{name}: angular distance of blocks ({r.Samples} samples, {bootstrap.Resamples} bootstrap resamples)");
        if (r.BlockInfluenceMatrix is { } bi)
            SimilarityFigures.Heatmap(bi, Path.Combine(dir, "similarity_bi.png"),
                $"{name}: all-token 1 - cos of blocks ({r.Samples} samples)",
                                      "mean over tokens of 1 - cos(x_l, x_{l+n})");
        if (r.CkaDistance is { } cka)
            SimilarityFigures.Heatmap(cka, Path.Combine(dir, "similarity_cka.png"),
                $"{name}: 1 - linear CKA of blocks ({r.Samples} samples)",
                                      "1 - CKA(x_l, x_{l+n})");
    }
}
