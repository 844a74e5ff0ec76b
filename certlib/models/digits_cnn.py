"""The bundled model: a small fully-convolutional CNN for scikit-learn's digits, upsampled to 32x32.

Global average pooling before the linear head makes it accept any input size that is a multiple of 4, so it also
scores 2x2 grids of digits (64x64), the input of the certified-localization metric. It takes pixels in [0, 1]
and normalises inside, so noise for randomized smoothing is always added in pixel space.
"""
from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10
# Name of the module whose output the CAM family explains (last conv block, after its ReLU).
CAM_LAYER = "features.11"


class DigitsCNN(nn.Module):
    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        # Normalisation constants are buffers: they travel with the state_dict.
        self.register_buffer("mean", torch.tensor([mean], dtype=torch.float32).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor([std], dtype=torch.float32).view(1, 1, 1, 1))
        # No in-place ReLUs: several attribution libraries hook module outputs and break on in-place ops.
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        z = self.pool(self.features(z)).flatten(1)
        return self.classifier(z)
