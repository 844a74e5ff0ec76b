"""Models: the registry, the bundled architectures and their weights, the loaders of every file format, CAM layers and
LRP canonizers, precision."""
