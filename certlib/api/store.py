"""Results on disk: one `.npz` holding every array of a result and, under the key `__meta__`, a JSON description of
everything else (scalars, tuples, nested dataclasses, the config). Read back with `np.load(allow_pickle=False)`:
nothing in the file is unpickled or imported — the dataclasses it may name are the fixed set in `TYPES`.

Round trips are exact: arrays keep dtype, shape and bytes; floats go through JSON's shortest repr, which Python
reads back to the same double.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from certlib.errors import CertlibError

FORMAT = "certlib-result/1"
TYPES: dict[str, type] = {}           # class name -> dataclass, filled by `storable`


def storable(cls: type) -> type:
    """Register a dataclass that results may contain (decorator, or called on engine classes)."""
    TYPES[cls.__name__] = cls
    return cls


def _pack(value: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """The JSON description of `value`; its arrays go to `arrays` under keys derived from `path`."""
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {"array": path}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if TYPES.get(name) is not type(value):
            raise CertlibError(f"cannot save a {name}: not a result type")
        fields = {f.name: _pack(getattr(value, f.name), f"{path}.{f.name}", arrays)
                  for f in dataclasses.fields(value) if f.init and not f.name.startswith("_")}
        return {"dataclass": name, "fields": fields}
    if isinstance(value, (tuple, list)):
        items = [_pack(v, f"{path}.{i}", arrays) for i, v in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CertlibError(f"cannot save {path}: dictionary keys must be strings")
        return {"dict": {k: _pack(v, f"{path}.{k}", arrays) for k, v in value.items()}}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise CertlibError(f"cannot save {path}: a {type(value).__name__}")


def _unpack(node: dict, arrays) -> Any:
    if "array" in node:
        return arrays[node["array"]]
    if "dataclass" in node:
        cls = TYPES.get(node["dataclass"])
        if cls is None:
            raise CertlibError(f"the file names an unknown result type {node['dataclass']!r}")
        return cls(**{k: _unpack(v, arrays) for k, v in node["fields"].items()})
    if "tuple" in node:
        return tuple(_unpack(v, arrays) for v in node["tuple"])
    if "list" in node:
        return [_unpack(v, arrays) for v in node["list"]]
    if "dict" in node:
        return {k: _unpack(v, arrays) for k, v in node["dict"].items()}
    return node["value"]


def save(result: Any, path: str | os.PathLike) -> str:
    """Write `result` (a registered dataclass) to `path` (.npz is appended by numpy when missing); returns the path."""
    arrays: dict[str, np.ndarray] = {}
    meta = {"format": FORMAT, "result": _pack(result, "r", arrays)}
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    np.savez_compressed(path, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def load(path: str | os.PathLike) -> Any:
    """The result saved at `path`; a CertlibError names a file that is not one."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"][()]))
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise CertlibError(f"{os.fspath(path)!r} is not a saved certlib result: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CertlibError(f"{os.fspath(path)!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return _unpack(meta["result"], arrays)
