Console.WriteLine("layerprune: under construction");
