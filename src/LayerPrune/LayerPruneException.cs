namespace LayerPrune;

/// <summary>A user-facing failure: bad input, missing file, impossible request. The CLI prints only the message.</summary>
public sealed class LayerPruneException(string message, Exception? inner = null) : Exception(message, inner);
