using LayerPrune.Modeling;

namespace LayerPrune.Tests.Modeling;

/// <summary>Library errors speak parameters, not CLI flags (issue 27: TextGenerator named --prompt / --token-ids).</summary>
public class TextGeneratorMessageTests
{
    [Fact]
    public void EmptyPromptNamesTheParameter()
    {
        using var g = new GoldenFixture("llama");
        using var model = CausalLM.Load(g.Dir);
        var e = Assert.Throws<LayerPruneException>(() => TextGenerator.Generate(model, [], new GenerationOptions { MaxNewTokens = 1 }));
        Assert.Equal("prompt", e.ParameterName);
        Assert.DoesNotContain("--", e.Message);
        Assert.Equal("--prompt: is empty: give at least one token id", e.Render(n => "--" + n));
    }
}
