"""TorchScript source of hostile models for tests/sandbox/ (torch.jit.script needs them in a real file)."""
import torch


class Honest(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        print("a model may print")              # prim::Print must not corrupt the worker's replies
        return torch.stack([v.mean(1), v.std(1), v[:, 0]], dim=1)


class ReadsFile(torch.nn.Module):
    """Puts the bytes of `path` into its scores (and so into any error or output)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, False, 16, dtype=torch.uint8)
        return x.flatten(1)[:, :2] * 0.0 + t[:2].float()


class WritesFile(torch.nn.Module):
    """Overwrites the first 4 bytes of `path` with 'PPPP' on every forward pass."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.path, True, 4, dtype=torch.uint8)
        t.fill_(80)                                   # used below, so TorchScript keeps it
        return x.flatten(1)[:, :2] + 0.0 * t[0].float()


class WritesOnLoad(torch.nn.Module):
    """Its __setstate__ runs inside torch.jit.load and overwrites `path`."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.marker = 0

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool, int]:
        return (self.path, self.training, self.marker)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool, int]) -> None:
        self.path = state[0]
        self.training = state[1]
        t = torch.from_file(self.path, True, 4, dtype=torch.uint8)
        t.fill_(80)
        self.marker = int(t[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]


class LoopsOnNoise(torch.nn.Module):
    """Fine on pixels in [0,1] (so it loads); loops for ever once an input leaves [0,1], as noisy copies do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :2]
        while bool(x.min() < 0.0):
            y = y + 1.0
        return y


class HugeAllocation(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(1 << 31, dtype=torch.uint8)          # 2 GiB: over a 1 GiB limit, fine without one
        return x.flatten(1)[:, :2] + big[0].float()


class Saves(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return x.flatten(1)[:, :2] + float(len(self.path))


class FailsOnBigBatches(torch.nn.Module):
    """Loads and probes fine (batches of 1-3), then raises on the batches that sampling sends."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 3:
            raise RuntimeError("this model only takes up to 3 images at once")
        v = x.flatten(1)
        return torch.stack([v.mean(1), v.std(1)], dim=1)


class NoGradient(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.detach().flatten(1)
        return torch.stack([v.mean(1), v.std(1)], dim=1)


class LoopsAlways(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :2]
        while bool(y.sum() > -1.0):
            y = y + 1.0
        return y


# ------------------------------------------------------------------------------ torch.export programs (.pt2)

class AsStrided(torch.nn.Module):
    """Reads memory through an unchecked view: aten.as_strided is not on the .pt2 allow-list."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return torch.as_strided(v, (v.shape[0], 2), (v.shape[1], 1))


def export_pt2(module: torch.nn.Module, x: torch.Tensor, dynamic_batch: bool = True) -> bytes:
    """torch.export.save of `module` exported on x (batch dimension dynamic unless asked otherwise)."""
    import io

    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None   # by position
    ep = torch.export.export(module, (x,), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def rewrite_zip(data: bytes, edit) -> bytes:
    """The zip `data` with each member's bytes replaced by edit(name, bytes) (None drops the member)."""
    import io
    import zipfile

    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            new = edit(info.filename, src.read(info))
            if new is not None:
                dst.writestr(info.filename, new)
    return out.getvalue()


def pt2_with_pickled_weight(data: bytes) -> bytes:
    """Marks the first weight `use_pickle`: torch.export.load would torch.load it with weights_only=False."""
    import json

    def edit(name: str, raw: bytes) -> bytes:
        if name.endswith("_weights_config.json"):
            config = json.loads(raw)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        return raw

    return rewrite_zip(data, edit)


def pt2_with_expression(data: bytes, expression: str) -> bytes:
    """Replaces every symbolic size expression by `expression` (which torch's deserializer passes to sympify)."""
    import json

    def edit(name: str, raw: bytes) -> bytes:
        if "/models/" in name and name.endswith(".json"):
            text = raw.decode()
            doc = json.loads(text)
            stack = [doc]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    if "expr_str" in node:
                        node["expr_str"] = expression
                    stack.extend(node.values())
                elif isinstance(node, list):
                    stack.extend(node)
            return json.dumps(doc).encode()
        return raw

    return rewrite_zip(data, edit)


class _Marker:
    """Unpickling this creates the file `path` (a harmless stand-in for code execution)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def pt2_with_sample_inputs_pickle(data: bytes, marker_path: str) -> bytes:
    """Sample inputs that only the full unpickler loads, creating `marker_path` when it does."""
    import io

    buf = io.BytesIO()
    torch.save(((_Marker(marker_path),), {}), buf)          # what torch.export.save writes there, but hostile
    payload = buf.getvalue()
    return rewrite_zip(data, lambda name, raw: payload if "/sample_inputs/" in name else raw)


# ------------------------------------------------------------------- TorchScript archives that attack the check
# (#27: the static check runs in the sandbox worker, and admits only the operators of certlib.sandbox.op_allowlist)

def torchscript_with_code(source: str, compress: bool = True, extra: dict | None = None) -> bytes:
    """A TorchScript-shaped archive (code/ and constants.pkl) holding `source` as its code: what the check reads.
    Nothing here needs to load; the check must refuse it before anything does."""
    import io
    import zipfile

    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method, compresslevel=9 if compress else None) as z:
        z.writestr("archive/code/__torch__/m.py", source)
        z.writestr("archive/constants.pkl", b"\x80\x02).")
        z.writestr("archive/data.pkl", b"\x80\x02).")
        for name, text in (extra or {}).items():
            z.writestr(f"archive/code/__torch__/{name}", text)
    return buf.getvalue()


def _forward(body: str) -> str:
    return ("class M(Module):\n  __parameters__ = []\n  __buffers__ = []\n  training : bool\n"
            "  def forward(self: __torch__.M, x: Tensor) -> Tensor:\n" + body)


def big_generated_code(mib: float = 13.0) -> bytes:
    """~21 KiB of zip holding `mib` MiB of generated code: parsing it held the app's GIL for half a minute."""
    line = "    x = torch.add(x, torch.mul(x, 1.0))\n"
    return torchscript_with_code(_forward(line * int(mib * 2**20 / len(line)) + "    return x\n"))


def heavy_code_under_limits(files: int = 2, mib_each: float = 0.48) -> bytes:
    """Code just under the size limits (512 KiB a file, 1 MiB in all) and barely compressible (distinct names):
    passes every cheap check, so only the worker's parse, under its time and memory limits, reads it."""
    def body(f: int) -> str:
        lines, size, i = [], 0, 0
        while size < mib_each * 2**20:
            lines.append(f"    v{f}_{i} = torch.add(x, {i}.{i % 97})\n")
            size, i = size + len(lines[-1]), i + 1
        return _forward("".join(lines) + "    return x\n").replace("class M(", f"class M{f}(")

    return torchscript_with_code(body(0), extra={f"m{f}.py": body(f) for f in range(1, files)})


def deeply_nested_code(depth: int = 100_000) -> bytes:
    """One expression nested `depth` deep: the parser raises RecursionError or MemoryError on it."""
    return torchscript_with_code(_forward("    return " + "x + " * depth + "x\n"))


RESHAPE_ALIAS_CODE = _forward("    y = torch._reshape_alias(x, [4096, 4096], [1, 1])\n"
                              "    return torch.flatten(y, 1)\n")
AS_STRIDED_METHOD_CODE = _forward("    return (x).as_strided([1, 2], [1, 1])\n")
GETATTR_TORCH_CODE = _forward("    f = getattr(torch, \"from_file\")\n    t = f(\"/etc/passwd\", False, 16)\n"
                              "    return x\n")
SPARSE_UNSAFE_CODE = _forward("    i = torch.zeros([2, 1], dtype=4)\n    v = torch.ones([1])\n"
                              "    s = torch._sparse_coo_tensor_unsafe(i, v, [1000000000, 1000000000])\n"
                              "    return x\n")
SET_STORAGE_CODE = _forward("    y = torch.zeros([1])\n    _0 = (y).set_(x)\n    return x\n")
UNSAFE_VIEW_CODE = _forward("    return ops.aten._unsafe_view(x, [1, 2])\n")


class ReshapeAlias(torch.nn.Module):
    """Reads (and could write) past the input's storage through an unchecked view (what the issue measured)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        return torch.ops.aten._reshape_alias(v, [v.shape[0], 4096], [1, 1])


class SparseUnsafe(torch.nn.Module):
    """Builds a sparse tensor without index checks (crashed the worker)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = torch.tensor([[10**9], [10**9]])
        s = torch.ops.aten._sparse_coo_tensor_unsafe(i, torch.ones(1), [2, 2])
        return x.flatten(1)[:, :2] + s.to_dense()


class GrowsOnNoise(torch.nn.Module):
    """Two scores on pixels in [0,1] (so it loads); 4 M scores per row (16 MB) once inputs leave [0,1]: a reply
    far beyond what the app expects, which must be refused from its length before it is read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :2]
        if bool(x.min() < 0.0):
            y = torch.zeros([x.shape[0], 4_000_000])
        return y


class NaNOnNoise(torch.nn.Module):
    """NaN scores for each input holding a pixel outside [0,1]; fine otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.flatten(1)[:, :2]
        bad = (x.flatten(1).min(1)[0] < 0.0).unsqueeze(1).expand(y.shape[0], 2)
        return torch.where(bad, torch.full_like(y, float("nan")), y)
