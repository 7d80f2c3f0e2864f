using LayerPrune.Data;
using LayerPrune.Evaluation;
using Parquet;
using Parquet.Schema;
using Xunit;

namespace LayerPrune.Tests.Evaluation;

public sealed class DataAndMmluTests : IDisposable
{
    private readonly string _tmp = Directory.CreateTempSubdirectory("lp-eval-").FullName;
    public void Dispose() => Directory.Delete(_tmp, recursive: true);

    private static List<Csv.Record> ParseCsv(string text) => Csv.Read(new StringReader(text), "t.csv").ToList();

    [Fact]
    public void Csv_QuotedCommasDoubledQuotesNewlinesAndCrlf()
    {
        var recs = ParseCsv("a,\"b, c\",\"say \"\"hi\"\"\"\r\n\"multi\nline\",,\"\"\r\n\n" + "x,y\"z,w");
        Assert.Equal(3, recs.Count);
        Assert.Equal(["a", "b, c", "say \"hi\""], recs[0].Fields);
        Assert.Equal(["multi\nline", "", ""], recs[1].Fields);
        Assert.Equal(["x", "y\"z", "w"], recs[2].Fields);        // a quote inside an unquoted field is literal (Python csv)
        Assert.Equal([1, 2, 5], recs.Select(r => r.Line));          // record 2 spans lines 2–3; line 4 is empty
    }

    [Fact]
    public void Csv_Errors_NameFileAndLine()
    {
        var e = Assert.Throws<LayerPruneException>(() => ParseCsv("a,b\n\"open,c\n"));
        Assert.Equal("t.csv:2: quoted field is not closed before the end of the file", e.Message);
        e = Assert.Throws<LayerPruneException>(() => ParseCsv("a,b\n\"q\"x,c\n"));
        Assert.StartsWith("t.csv:2: unexpected character 'x'", e.Message);
    }

    private static string Quote(string f) => "\"" + f.Replace("\"", "\"\"") + "\"";

    [Fact]
    public void Mmlu_HendrycksAndExportLayouts_GiveIdenticalDocs()
    {
        var src = Path.Combine(TestPaths.Fixtures, "benchmarks", "mmlu");
        // Rewrite the header-row export as original Hendrycks files: no header, every field quoted, answer letter.
        foreach (var split in new[] { "dev", "test" })
        {
            Directory.CreateDirectory(Path.Combine(_tmp, split));
            foreach (var f in Directory.GetFiles(Path.Combine(src, split)))
            {
                var rows = Csv.ReadFile(f).Skip(1).Select(r =>
                    string.Join(",", r.Fields.Take(5).Select(Quote).Append("ABCD"[int.Parse(r.Fields[5])].ToString())));
                File.WriteAllText(Path.Combine(_tmp, split, Path.GetFileName(f)), string.Join("\r\n", rows) + "\r\n");
            }
        }
        var a = MmluTask.Load(src);
        var b = MmluTask.Load(_tmp);
        Assert.Equal(a.Count, b.Count);
        Assert.True(a.Count > 10);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Context, b[i].Context);
            Assert.Equal(a[i].Continuations, b[i].Continuations);
            Assert.Equal(a[i].Gold, b[i].Gold);
            Assert.Equal(a[i].Subject, b[i].Subject);
        }
    }

    [Fact]
    public void Mmlu_JsonlExport_MatchesCsv()
    {
        var src = Path.Combine(TestPaths.Fixtures, "benchmarks", "mmlu");
        var (test, dev) = MmluTask.ReadItems(src);
        string Line(MmluItem it) => System.Text.Json.JsonSerializer.Serialize(new { question = it.Question, choices = it.Choices, answer = it.Answer, subject = it.Subject });
        File.WriteAllLines(Path.Combine(_tmp, "test.jsonl"), test.Select(Line));
        File.WriteAllLines(Path.Combine(_tmp, "dev.jsonl"), dev.Select(Line));
        var a = MmluTask.Load(src);
        var b = MmluTask.Load(_tmp);
        Assert.Equal(a.Select(d => d.Context), b.Select(d => d.Context));
        Assert.Equal(a.Select(d => d.Gold), b.Select(d => d.Gold));
    }

    [Fact]
    public void Mmlu_KjvCloze_SinglePairLoads()
    {
        var spec = TaskSpec.Parse("mmlu:" + Path.Combine(TestPaths.Samples, "data", "kjv-cloze"));
        var docs = spec.LoadDocs();
        Assert.Equal(500, docs.Count);                        // test.csv has 500 rows, dev.csv 5
        Assert.All(docs, d => Assert.Equal("kjv-cloze", d.Subject));
        Assert.Equal(3, docs[0].Gold);                        // first row's answer is D
        Assert.StartsWith("The following are multiple choice questions (with answers) about kjv-cloze.\n\n", docs[0].Context);
        Assert.EndsWith("Complete the verse: For Christ is the end of the law for righteousness to every one that ____\nA. woman\nB. gavest\nC. like\nD. believeth\nAnswer:", docs[0].Context);
        Assert.Equal(6, docs[0].Context.Split("\nAnswer:").Length - 1);  // 5 shots + the question
    }

    [Fact]
    public void Mmlu_BadRows_AreReportedWithLine()
    {
        File.WriteAllText(Path.Combine(_tmp, "test.csv"), "q1,a,b,c,d,A\nq2,a,b,c,d,E\n");
        var e = Assert.Throws<LayerPruneException>(() => MmluTask.Load(_tmp, numFewshot: 0));
        Assert.Equal($"{Path.Combine(_tmp, "test.csv")}:2: answer must be A–D or 0–3, got \"E\"", e.Message);
        e = Assert.Throws<LayerPruneException>(() => MmluTask.Load(_tmp, numFewshot: 5));
        Assert.Contains("answer must be", e.Message);
        File.WriteAllText(Path.Combine(_tmp, "test.csv"), "q1,a,b,c,d,A\n");
        e = Assert.Throws<LayerPruneException>(() => MmluTask.Load(_tmp, numFewshot: 5));
        Assert.Contains("needs 5 dev items", e.Message);
    }

    [Fact]
    public void TaskSpec_ParsesAndRejects()
    {
        var gsm = TaskSpec.Parse("gsm8k:" + Path.Combine(TestPaths.Fixtures, "benchmarks", "gsm8k") + ",shots=3");
        Assert.Equal(3, gsm.NumFewshot);
        Assert.EndsWith("train.jsonl", gsm.TrainPath);
        Assert.True(gsm.IsGeneration);
        Assert.Equal(5, TaskSpec.Parse("mmlu:" + Path.Combine(TestPaths.Fixtures, "benchmarks", "mmlu")).NumFewshot);
        var e = Assert.Throws<LayerPruneException>(() => TaskSpec.Parse("arc:foo.jsonl"));
        Assert.Equal("task \"arc:foo.jsonl\": unknown kind \"arc\" (supported: loss, mc, mmlu, boolq, hellaswag, gsm8k, arc_easy, arc_challenge, piqa, openbookqa, winogrande, "
            + "lambada_openai, wikitext, qmsum)", e.Message);
        e = Assert.Throws<LayerPruneException>(() => TaskSpec.Parse("boolq:/nope/validation.jsonl"));
        Assert.Equal("task \"boolq:/nope/validation.jsonl\": file not found: /nope/validation.jsonl", e.Message);
        Assert.Throws<LayerPruneException>(() => TaskSpec.Parse("nocolon"));
        Assert.Throws<LayerPruneException>(() => TaskSpec.Parse("mmlu:" + TestPaths.Fixtures + ",shots=x"));
    }

    [Fact]
    public void TextCorpus_Txt_SkipsEmptyLines()
    {
        var p = Path.Combine(_tmp, "a.txt");
        File.WriteAllText(p, "one\n\ntwo  \r\n\n");
        Assert.Equal(["one", "two  "], TextCorpus.Read(p));
        File.WriteAllText(p, "\n\n");
        var e = Assert.Throws<LayerPruneException>(() => TextCorpus.Read(p).ToList());
        Assert.Contains("no documents", e.Message);
    }

    [Fact]
    public void TextCorpus_Jsonl_ReadsTextAndReportsBadLine()
    {
        var p = Path.Combine(TestPaths.Fixtures, "benchmarks", "text", "c4-first50.jsonl");
        var docs = TextCorpus.Read(p).ToList();
        Assert.Equal(50, docs.Count);
        Assert.StartsWith("Beginners BBQ Class Taking Place in Missoula!\nDo you want", docs[0]);
        var bad = Path.Combine(_tmp, "b.jsonl");
        File.WriteAllText(bad, "{\"text\":\"ok\"}\n\n{\"txt\":\"x\"}\n");
        var e = Assert.Throws<LayerPruneException>(() => TextCorpus.Read(bad).ToList());
        Assert.Equal($"{bad}:3: missing string field \"text\"", e.Message);
        File.WriteAllText(bad, "{\"text\":\"ok\"}\n{broken\n");
        e = Assert.Throws<LayerPruneException>(() => TextCorpus.Read(bad).ToList());
        Assert.StartsWith($"{bad}:2: invalid JSON", e.Message);
    }

    [Fact]
    public async Task TextCorpus_Parquet_ReadsAllRowGroups()
    {
        var p = Path.Combine(_tmp, "c.parquet");
        var text = new DataField<string>("text");
        var schema = new ParquetSchema(new DataField<int>("id"), text);
        await using (var fs = File.Create(p))
        await using (var w = await ParquetWriter.CreateAsync(schema, fs))
        {
            foreach (var (ids, texts) in new[] { (new[] { 1, 2 }, new[] { "alpha", "" }), (new[] { 3 }, new[] { "gamma" }) })
            {
                using var rg = w.CreateRowGroup();
                await rg.WriteAsync(schema.DataFields[0], (ReadOnlyMemory<int>)ids);
                await rg.WriteAsync(text, texts);
            }
        }
        Assert.Equal(["alpha", "gamma"], TextCorpus.Read(p));
        var e = Assert.Throws<LayerPruneException>(() => TextCorpus.Read(p, "body").ToList());
        Assert.Equal($"{p}: no column \"body\" (columns: id, text)", e.Message);
    }
}
