namespace LayerPrune;
public static class Probe { public static string Version => TorchSharp.torch.__version__; }
