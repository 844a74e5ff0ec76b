"""TorchScript source of hostile models for tests/test_sandbox.py (torch.jit.script needs them in a real file)."""
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
