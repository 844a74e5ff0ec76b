"""certlib: certified attributions of image classifiers (no UI; usable from notebooks and the CLI)."""

__version__ = "0.1.0"

# The public API is imported on first use, so that `import certlib` stays light (no torch).
_LAZY = {"load_model": ("certlib.model_formats", "load_model")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'certlib' has no attribute {name!r}")
