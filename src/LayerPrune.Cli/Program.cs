Console.WriteLine(LayerPrune.Probe.Version);
var a = TorchSharp.torch.randn(512, 512); Console.WriteLine(a.matmul(a).sum().item<float>());
