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
