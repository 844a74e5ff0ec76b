"""Reproduce the bundled digits checkpoints: `python -m certlib.models.train_digits [--out assets]`.

One checkpoint per training noise level sigma_train in {0, 0.25, 0.5}. Training adds N(0, sigma_train^2) noise in
[0, 1] pixel space to every training image (Cohen et al. 2019): randomized smoothing certifies little on a model that
never saw noise, and the three checkpoints let users see that. A fixed seed and deterministic kernels make the run
reproducible on the same machine and library versions (a few minutes on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from certlib import resources
from certlib.models.digits_cnn import DigitsCNN
from certlib.data.digits import SPLIT_SEED, load_split

SIGMAS_TRAIN = (0.0, 0.25, 0.5)
EVAL_SIGMAS = (0.0, 0.25, 0.5)
SEED = 0
ASSETS = resources.assets_dir()
META_FILE = "digits_cnn.json"


@dataclass(frozen=True)
class TrainConfig:
    sigma_train: float
    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    max_shift: int = 2  # random translation in pixels: the digits are centred, grids are not
    seed: int = SEED
    max_train: int | None = None  # use only the first images (tests check determinism on a small run)


def checkpoint_name(sigma_train: float) -> str:
    return f"digits_cnn_sigma{sigma_train:.2f}.pt"


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to max_shift pixels with zero fill (background is 0)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train(config: TrainConfig, log=print) -> DigitsCNN:
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(config.seed)
    images, labels = load_split("train")
    x_all, y_all = torch.from_numpy(images)[:config.max_train], torch.from_numpy(labels)[:config.max_train]
    model = DigitsCNN(mean=float(x_all.mean()), std=float(x_all.std()))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = config.epochs * ((len(x_all) + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            x = _random_shift(x_all[idx], config.max_shift, gen)
            if config.sigma_train > 0:
                x = x + config.sigma_train * torch.randn(x.shape, generator=gen)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % 10 == 9 or epoch == config.epochs - 1:
            log(f"  sigma_train={config.sigma_train:.2f} epoch {epoch + 1}/{config.epochs} loss {total / len(order):.4f}")
    return model.eval()


@torch.no_grad()
def evaluate(model: torch.nn.Module, sigma: float, seed: int = 1, repeats: int = 8) -> float:
    """Held-out accuracy; under noise, the mean over `repeats` independent noise draws per image."""
    images, labels = load_split("held_out")
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    if sigma == 0:
        return float((model(x).argmax(1) == y).float().mean())
    gen = torch.Generator().manual_seed(seed)
    hits = [(model(x + sigma * torch.randn(x.shape, generator=gen)).argmax(1) == y).float().mean()
            for _ in range(repeats)]
    return float(torch.stack(hits).mean())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="directory for checkpoints and metadata")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"seed": SEED, "torch": torch.__version__, "python": platform.python_version(),
            "held_out_images": int(len(load_split("held_out")[1])), "checkpoints": []}
    for sigma_train in SIGMAS_TRAIN:
        config = TrainConfig(sigma_train=sigma_train, epochs=args.epochs)
        t0 = time.perf_counter()
        model = train(config)
        seconds = time.perf_counter() - t0
        path = args.out / checkpoint_name(sigma_train)
        torch.save(model.state_dict(), path)
        accuracy = {f"{s:.2f}": round(evaluate(model, s), 4) for s in EVAL_SIGMAS}
        print(f"sigma_train={sigma_train:.2f}: held-out accuracy by test noise {accuracy}  ({seconds:.0f} s)")
        meta["checkpoints"].append({
            "file": path.name, "sigma_train": sigma_train, "sha256": sha256_file(path),
            "held_out_accuracy": accuracy, "train_seconds": round(seconds, 1),
            "config": config.__dict__,
        })
    (args.out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (args.out / "README.md").write_text(assets_readme(meta))
    print(f"wrote {args.out / META_FILE} and {args.out / 'README.md'}")


def assets_readme(meta: dict) -> str:
    """The accuracy table of assets/README.md, generated so it can never disagree with the checkpoints."""
    rows = "\n".join(
        f"| `{c['file']}` | {c['sigma_train']:g} | {c['held_out_accuracy']['0.00']:.2%} | "
        f"{c['held_out_accuracy']['0.25']:.2%} | {c['held_out_accuracy']['0.50']:.2%} | `{c['sha256'][:16]}…` |"
        for c in meta["checkpoints"])
    return f"""# assets

Bundled, offline defaults of certexplorer. Everything here is reproducible from this repository.

## Digits CNN checkpoints

A small fully-convolutional CNN (`certlib/models/digits_cnn.py`: five 3×3 conv layers, global average pooling, linear head;
normalisation inside, pixels in [0, 1]) trained on scikit-learn's `load_digits`, upsampled bilinearly from 8×8 to
32×32. The split is fixed (`certlib/data/digits.py`, seed {SPLIT_SEED}): {meta['held_out_images']} held-out digits
are never seen in training, and only they appear in the app's digit gallery and 2×2 grids.

Each checkpoint adds Gaussian noise N(0, σ_train²) in pixel space to every training image (plus random shifts of up
to 2 pixels). Held-out accuracy, clean and under Gaussian noise of the given σ (mean over 8 noise draws per image):

| file | σ_train | clean | σ = 0.25 | σ = 0.5 | sha256 |
|---|---|---|---|---|---|
{rows}

Reproduce: `python -m certlib.models.train_digits` (seed {meta['seed']}, torch {meta['torch']}; a few minutes on 2 CPU cores;
bit-identical on the same machine and library versions). `digits_cnn.json` holds the same numbers and the training
configuration. `tests/test_models.py` re-checks the hashes and the clean accuracy of the shipped files.

## Other files

- `logo.png`, drawn by `make_logo.py`.
- Photos for ImageNet models come from scikit-image's bundled sample data, not from here.
"""


if __name__ == "__main__":
    main()
