"""certlib: certified attributions of image classifiers (no UI; usable from notebooks and the CLI)."""

__version__ = "0.1.0"

# The public API is imported on first use, so that `import certlib` stays light (no torch).
_LAZY = {"load_model": ("certlib.models.formats", "load_model"),
         # the top-level API (design §12): one call per certificate, results that show, re-decide and save
         "certify_pixels": ("certlib.api", "certify_pixels"),
         "certify_uniform": ("certlib.api", "certify_uniform"),
         "certify_topk": ("certlib.api", "certify_topk"),
         "load": ("certlib.api", "load"),
         "PixelResult": ("certlib.api", "PixelResult"),
         "UniformResult": ("certlib.api", "UniformResult"),
         "TopKResult": ("certlib.api", "TopKResult"),
         # the errors every caller may meet: the library's own, and those an app shows the user in words
         "CertlibError": ("certlib.errors", "CertlibError"),
         "SHOWN_ERRORS": ("certlib.errors", "SHOWN_ERRORS"),
         "describe_error": ("certlib.errors", "describe_error")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'certlib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
