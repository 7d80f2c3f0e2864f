using LayerPrune.Data;
using LayerPrune.Tokenization;

namespace LayerPrune.Evaluation;

/// <summary>
/// The token ids of one loglikelihood request: the model scores <see cref="ContinuationIds"/> given
/// <see cref="ContextIds"/> (sum of log P(cont[i] | context, cont[..i])).
/// </summary>
public sealed record LoglikelihoodRequest(int[] ContextIds, int[] ContinuationIds)
{
    /// <summary>
    /// lm-evaluation-harness's TemplateLM.loglikelihood + _encode_pair (lm_eval/api/model.py):
    /// trailing whitespace of the context moves to the front of the continuation; whole = enc(ctx + cont),
    /// ctxIds = enc(ctx); context = whole[:len(ctxIds)], continuation = whole[len(ctxIds):], where
    /// enc = [BOS if <paramref name="addBos"/>] + EncodeRaw. For an empty context the harness uses [prefix token]
    /// (BOS, else EOS) as the context; so do we (and also when the context is only whitespace and
    /// <paramref name="addBos"/> is false, where the harness would produce an empty context the model cannot score).
    /// Deviation: for an empty context the continuation is EncodeRaw(cont), without BOS (HFLM's tok_encode would
    /// prepend BOS when add_bos_token is set, scoring the BOS itself).
    /// </summary>
    public static LoglikelihoodRequest Build(ITextTokenizer tok, string context, string continuation, bool addBos)
    {
        if (context.Length == 0) return WithPrefixToken(tok, continuation);
        var (ctx, cont) = SplitTrailingWhitespace(context, continuation);
        var whole = Encode(tok, ctx + cont, addBos);
        int ctxLen = Encode(tok, ctx, addBos).Count;
        if (ctxLen == 0) return WithPrefixToken(tok, cont);
        if (whole.Count <= ctxLen)
            throw new LayerPruneException($"continuation \"{continuation}\" produced no tokens after context \"{Tail(context)}\"");
        return new LoglikelihoodRequest(whole.Take(ctxLen).ToArray(), whole.Skip(ctxLen).ToArray());
    }

    /// <summary>The harness's whitespace move: <c>n = len(ctx) - len(ctx.rstrip())</c>; cont = ctx[-n:] + cont; ctx = ctx[:-n].</summary>
    public static (string Context, string Continuation) SplitTrailingWhitespace(string context, string continuation)
    {
        var stripped = PyText.RStrip(context);
        int n = context.Length - stripped.Length;
        return n == 0 ? (context, continuation) : (stripped, context[^n..] + continuation);
    }

    private static LoglikelihoodRequest WithPrefixToken(ITextTokenizer tok, string continuation)
    {
        int prefix = tok.BosId ?? (tok.EosIds.Count > 0 ? tok.EosIds[0]
            : throw new LayerPruneException("empty context needs a BOS or EOS token, but the tokenizer has neither"));
        var cont = tok.EncodeRaw(continuation).ToArray();
        if (cont.Length == 0) throw new LayerPruneException($"continuation \"{continuation}\" produced no tokens");
        return new LoglikelihoodRequest([prefix], cont);
    }

    private static List<int> Encode(ITextTokenizer tok, string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos && tok.BosId is int bos) ids.Add(bos);
        ids.AddRange(tok.EncodeRaw(text));
        return ids;
    }

    private static string Tail(string s) => s.Length <= 60 ? s : "..." + s[^60..];
}
