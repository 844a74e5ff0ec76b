"""The pixel certificate: decision, anytime and progressive runs, per-pixel radii, the prediction certificate,
guarantee and advice in words, the empirical check, figures.

Every certificate here is decided from `TopKCounts`, the votes sampled by certlib.smoothing.sampling; the name is
re-exported here (imported on first use, like certlib's top-level API) so that a caller of this package needs no
other."""

_LAZY = {"TopKCounts": ("certlib.smoothing.sampling", "TopKCounts")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'certlib.pixel' has no attribute {name!r}")
