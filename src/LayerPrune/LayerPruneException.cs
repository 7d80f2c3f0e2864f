namespace LayerPrune; public sealed class LayerPruneException(string message, Exception? inner = null) : Exception(message, inner);
