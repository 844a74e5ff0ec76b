"""certlib: certified attributions of image classifiers (no UI; usable from notebooks and the CLI)."""

__version__ = "0.1.0"
