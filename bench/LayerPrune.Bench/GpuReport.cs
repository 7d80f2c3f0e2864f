using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;

namespace LayerPrune.Bench;

/// <summary>
/// results.json and results.md of bench/gpu/run.sh from what its steps left in the work folder: STEP.json (GpuBench),
/// peer.json (bench/gpu/peer_hf_llama7b.py), status-NAME.txt ("exit-code seconds"), mem-NAME.txt (peak MiB of GPU memory
/// in use, nvidia-smi, CUDA context included) and skipped-NAME.txt (why a step did not run).
/// </summary>
public static class GpuReport
{
    static readonly string[] Steps = ["parity", "loss", "cloze-requests", "hf-cloze", "cloze", "peer", "race", "qlora", "stream"];

    /// <summary>Writes the two files into <paramref name="outDir"/>; returns 0.</summary>
    public static int Write(TextWriter output, string outDir, string work, string command, string gpu)
    {
        JsonNode? Read(string file) =>
            File.Exists(Path.Combine(work, file)) ? JsonNode.Parse(File.ReadAllText(Path.Combine(work, file))) : null;
        string? Text(string file) => File.Exists(Path.Combine(work, file)) ? File.ReadAllText(Path.Combine(work, file)).Trim() : null;
        var steps = new JsonObject();
        foreach (var s in Steps)
        {
            var e = new JsonObject();
            if (Text($"skipped-{s}.txt") is string why) e["skipped"] = why;
            if (Text($"status-{s}.txt")?.Split(' ') is [var rc, var sec])
            {
                e["exit_code"] = int.Parse(rc, CultureInfo.InvariantCulture);
                e["seconds"] = double.Parse(sec, CultureInfo.InvariantCulture);
            }
            if (Text($"mem-{s}.txt") is string mib && double.TryParse(mib, CultureInfo.InvariantCulture, out var m))
                e["gpu_mem_peak_mib"] = m;
            if (Read(s == "peer" ? "peer.json" : $"{s}.json") is JsonObject result) e["result"] = result;
            steps[s] = e;
        }
        var race = steps["race"]?["result"];
        var peer = steps["peer"]?["result"];
        double? Get(JsonNode? n, params string[] path)
        {
            foreach (var p in path) n = n?[p];
            return n is JsonValue v && v.TryGetValue(out double d) ? d : null;
        }
        double? Ratio(double? a, double? b) => a is double x && b is double y && y > 0 ? Math.Round(x / y, 3) : null;
        var ratios = new JsonObject
        {
            ["similarity_vs_hf_hidden_states"] = Ratio(Get(race, "similarity", "tokens_per_s"), Get(peer, "fwd_hidden", "tokens_per_s")),
            ["forward_vs_hf"] = Ratio(Get(race, "forward", "tokens_per_s"), Get(peer, "fwd", "tokens_per_s")),
            ["lora_train_vs_peft"] = Ratio(Get(race, "lora_train", "tokens_per_s"), Get(peer, "lora_train", "tokens_per_s")),
        };
        bool? Pass(string step) => steps[step]?["result"]?["pass"] is JsonValue v && v.TryGetValue(out bool b) ? b : null;
        bool? AtLeast(string key, double min) => ratios[key] is JsonValue v && v.TryGetValue(out double d) ? d >= min : null;
        var acceptance = new JsonObject
        {
            ["parity_fp32_1e-4_and_greedy_ids"] = Pass("parity"),
            ["loss_bf16_within_0.01_and_fp32_within_1e-3_of_hf"] = Pass("loss"),
            ["cloze_within_1e-3_of_tf32_free_hf"] = Pass("cloze"),
            ["similarity_at_least_1.2x_hf"] = AtLeast("similarity_vs_hf_hidden_states", 1.2),
            ["lora_train_at_least_1.3x_peft"] = AtLeast("lora_train_vs_peft", 1.3),
            ["qlora_70b_step_runs"] = Pass("qlora"),
        };
        var root = new JsonObject
        {
            ["gpu"] = gpu, ["command"] = command, ["date_utc"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture),
            ["acceptance"] = acceptance, ["ratios"] = ratios, ["steps"] = steps,
        };
        GpuBench.WriteJson(Path.Combine(outDir, "results.json"), root);
        File.WriteAllText(Path.Combine(outDir, "results.md"), Markdown(root));
        output.WriteLine($"gpu report: {Path.Combine(outDir, "results.json")}, results.md");
        return 0;
    }

    static string F(JsonNode? n, string format = "G6") => n is JsonValue v && v.TryGetValue(out double d)
        ? d.ToString(format, CultureInfo.InvariantCulture)
        : n is JsonValue s && s.TryGetValue(out string? text) ? text : n?.ToJsonString() ?? "–";

    static string Markdown(JsonObject root)
    {
        var sb = new StringBuilder();
        var steps = root["steps"]!;
        sb.AppendLine(CultureInfo.InvariantCulture, $"# LayerPrune GPU run ({root["date_utc"]} UTC)\n");
        sb.AppendLine(CultureInfo.InvariantCulture, $"GPU: **{root["gpu"]}**  \nCommand: `{root["command"]}`\n");
        sb.AppendLine("| acceptance point | holds |\n|---|---|");
        foreach (var (k, v) in root["acceptance"]!.AsObject())
            sb.AppendLine(CultureInfo.InvariantCulture, $"| {k} | {(v is null ? "not measured" : F(v))} |");
        sb.AppendLine("\n| step | exit | s | GPU MiB peak | result |\n|---|---|---|---|---|");
        foreach (var (name, e) in steps.AsObject())
        {
            string detail = e!["skipped"] is JsonNode why ? "skipped: " + F(why) : Summary(name, e["result"]);
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"| {name} | {F(e["exit_code"])} | {F(e["seconds"], "F1")} | {F(e["gpu_mem_peak_mib"], "F0")} | {detail} |");
        }
        var race = steps["race"]?["result"];
        var peer = steps["peer"]?["result"];
        sb.AppendLine("\n| 7B-shape race (tokens/s) | LayerPrune | HF / PEFT | ratio |\n|---|---|---|---|");
        sb.AppendLine(CultureInfo.InvariantCulture, $"| similarity pass (HF: forward with hidden states) | " +
            $"{F(race?["similarity"]?["tokens_per_s"], "F0")} | " +
            $"{F(peer?["fwd_hidden"]?["tokens_per_s"], "F0")} | {F(root["ratios"]!["similarity_vs_hf_hidden_states"])} |");
        sb.AppendLine(CultureInfo.InvariantCulture, $"| forward | {F(race?["forward"]?["tokens_per_s"], "F0")} | " +
            $"{F(peer?["fwd"]?["tokens_per_s"], "F0")} | {F(root["ratios"]!["forward_vs_hf"])} |");
        sb.AppendLine(CultureInfo.InvariantCulture, $"| LoRA r 64 training, 4 × 1024 | " +
            $"{F(race?["lora_train"]?["tokens_per_s"], "F0")} | " +
            $"{F(peer?["lora_train"]?["tokens_per_s"], "F0")} | {F(root["ratios"]!["lora_train_vs_peft"])} |");
        sb.AppendLine(CultureInfo.InvariantCulture, $"| TFLOP/s forward / similarity / train | {F(race?["forward"]?["tflops"])} / " +
            $"{F(race?["similarity"]?["tflops"])} / {F(race?["lora_train"]?["tflops"])} | {F(peer?["fwd"]?["tflops"])} / " +
            $"{F(peer?["fwd_hidden"]?["tflops"])} / – | |");
        sb.AppendLine(CultureInfo.InvariantCulture, $"| peak GPU memory, MiB (nvidia-smi) | " +
            $"{F(steps["race"]?["gpu_mem_peak_mib"], "F0")} | " +
            $"{F(steps["peer"]?["gpu_mem_peak_mib"], "F0")} (allocated: {F(peer?["max_mem_gb"], "F2")} GiB) | |");
        return sb.ToString();
    }

    static string Summary(string step, JsonNode? r) => r is null ? "no result" : step switch
    {
        "parity" => string.Join(", ", r["architectures"]!.AsArray().Select(a =>
            $"{a!["arch"]} {F(a["logits_row0_max_abs_diff"], "0.0E+0")}/{F(a["padded_batch_max_abs_diff"], "0.0E+0")} " +
            $"{((bool)a["greedy_ids_identical"]! ? "same ids" : "IDS DIFFER")}")),
        "loss" => $"fp32 {F(r["fp32"]?["loss"], "F5")}, bf16 {F(r["bf16"]?["loss"], "F5")} " +
            $"(|Δ| {F(r["bf16_minus_fp32_abs"], "0.0E+0")}), " +
            $"HF {F(r["hf_fp32"], "F5")} (|Δ| {F(r["fp32_minus_hf_abs"], "0.0E+0")}), {r["chunks"]} chunks",
        "cloze" => $"ours vs shared (TF32) {F(r["ours_minus_shared_tf32_max_abs"], "0.0E+0")}; vs TF32-free HF " +
            $"{F(r["ours_minus_hf_tf32_free_max_abs"] ?? r["hf_tf32_free"], "0.0E+0")}",
        "race" => $"{r["shape"]} {r["dtype"]}, {F(r["params"], "E3")} params, load {F(r["load_and_init_s"], "F1")} s",
        "peer" => $"{F(r["params"], "E3")} params" + (r["lora_error"] is JsonNode e ? $"; LoRA failed: {F(e)}" : ""),
        "qlora" => $"{r["shape"]}: {r["layers"]} layers, NF4 load {F(r["load_quantize_s"], "F1")} s, step {F(r["step_s"], "F2")} s " +
            $"({F(r["tokens_per_s"], "F0")} tokens/s, {r["batch"]} × {r["seq_len"]}), loss {F(r["loss_after"], "F3")}",
        "stream" => $"{r["shape"]} streamed, {F(r["checkpoint_gb"], "F1")} GB: {F(r["s"], "F1")} s, " +
            $"{F(r["tokens_per_s"], "F0")} tokens/s, " +
            $"{F(r["weights_gb_per_s"], "F1")} GB/s of weights",
        "hf-cloze" => F(r["produced_with"]),
        _ => "ok",
    };
}
