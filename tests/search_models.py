"""Tiny real models and data for the search tests (seconds, not minutes).

A random-but-fixed CNN labels random images; 20 % of the labels are then replaced at random,
so the model's accuracy is ~80 % with many low-margin images: quantization visibly moves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(6 * 4 * 4, 24)
        self.fc2 = nn.Linear(24, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        y = self.conv2(h)
        h = torch.relu(y + h) if self.residual else torch.relu(y)
        h = self.pool(h).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


@dataclass
class Split:
    images: torch.Tensor
    labels: torch.Tensor


@dataclass
class Data:
    name: str
    val: Split
    test: Split
    classes: list
    source: str = "synthetic"


def tiny_problem(residual: bool = False, n_val: int = 600, n_test: int = 400, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinyNet(residual).eval()
    images = torch.randn(n_val + n_test, 1, 8, 8, generator=g)
    with torch.no_grad():
        labels = model(images).argmax(1)
    flip = torch.rand(len(labels), generator=g) < 0.2
    labels[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    data = Data("synthetic", Split(images[:n_val], labels[:n_val]), Split(images[n_val:], labels[n_val:]),
                [str(i) for i in range(10)])
    return model, data
