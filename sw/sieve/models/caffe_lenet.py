"""Caffe's MNIST LeNet, layer for layer: conv1 20@5×5 → maxpool 2/2 → conv2 50@5×5 →
maxpool 2/2 → ip1 500 → ReLU → ip2 10.  No ReLU after the convolutions (Caffe's
``lenet_train_test.prototxt`` has none).  Module names follow the prototxt so that the
Caffe weights map by name and the per-layer reports read like the SIEVE evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import SieveError
from .weights import read_state_dict


def scaled_width(channels: int, alpha: float) -> int:
    """``channels × alpha`` rounded, at least one (MobileNet's width multiplier)."""
    return max(1, int(round(channels * alpha)))


class CaffeLeNet(nn.Module):
    """LeNet as in Caffe's MNIST example (input 1×28×28, 10 classes).

    ``alpha`` (MobileNet's width multiplier) scales every layer's width and ``input_px`` the
    input side the layers are built for; the defaults give Caffe's LeNet unchanged (M&MNet's
    Minions, :mod:`sieve.runtime.minions`, use the others)."""

    def __init__(self, num_classes: int = 10, alpha: float = 1.0, input_px: int = 28) -> None:
        super().__init__()
        c1, c2, f1 = (scaled_width(c, alpha) for c in (20, 50, 500))
        side = ((input_px - 4) // 2 - 4) // 2
        self.conv1 = nn.Conv2d(1, c1, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.ip1 = nn.Linear(c2 * side * side, f1)
        self.relu1 = nn.ReLU()
        self.ip2 = nn.Linear(f1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.ip2(self.relu1(self.ip1(self.flatten(x))))


def caffe_npz_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Map a Caffe-layout ``.npz`` (``<layer>/w``, ``<layer>/b``) to CaffeLeNet names."""
    raw = read_state_dict(path)
    if not any(key.endswith("/w") for key in raw):
        return raw  # already torch names; the caller's shape check does the rest
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        layer, _, kind = key.rpartition("/")
        if kind not in ("w", "b"):
            raise SieveError(f"weights {path}: key '{key}' is not of the Caffe form '<layer>/w' or '<layer>/b'")
        state[f"{layer}.{'weight' if kind == 'w' else 'bias'}"] = value.to(torch.float32)
    return state


# Caffe's MNIST example scales pixels by 1/256 (``scale: 0.00390625``) and nothing else.
CAFFE_MNIST_SCALE = np.float32(0.00390625)
