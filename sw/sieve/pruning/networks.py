"""The pruning benchmarks, sized for 1×28×28 Fashion-MNIST, and SNIP's initialisation.

The dissertation (Table 7.1) prunes LeNet-300-100 and LeNet-5 on MNIST at 98 % global
sparsity and AlexNet/VGG variants on CIFAR-10 at 90 % / 95 %.  Here every net reads
Fashion-MNIST: ``lenet5`` is the zoo's Caffe LeNet (:class:`~sieve.models.caffe_lenet.CaffeLeNet`),
``vgg_s`` the zoo's :class:`~sieve.models.fashion.MiniVGG` at a quarter of its width, and
``lenet300`` / ``alexnet_s`` are defined here because the zoo has no such nets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SieveError
from ..models.caffe_lenet import CaffeLeNet
from ..models.fashion import MiniVGG


class LeNet300(nn.Module):
    """LeNet-300-100: fully connected 784 → 300 → 100 → 10 with ReLUs."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(self.flatten(x))))))


class AlexNetS(nn.Module):
    """A small AlexNet-style net for 28×28 (SNIP's "AlexNet-s" idea, scaled down): three
    convolutions (16, 32, 64 channels) with ReLU and max-pools (28 → 14 → 7 → 3), then two fully connected
    layers (256, 256) before the classifier — most weights sit in the FC layers, as in AlexNet."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),      # 28 -> 14
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),     # 14 -> 7
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),     # 7 -> 3
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(64 * 3 * 3, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                        nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


@dataclass(frozen=True)
class Benchmark:
    name: str
    sparsity: float      # global sparsity of the dissertation's Table 7.1 for this kind of net
    lr: float
    description: str


BENCHMARKS = {
    "lenet300": Benchmark("lenet300", 0.98, 1e-3, "LeNet-300-100 (fc 784-300-100-10)"),
    "lenet5": Benchmark("lenet5", 0.98, 1e-3, "Caffe's LeNet-5 (the zoo's lenet5)"),
    "alexnet_s": Benchmark("alexnet_s", 0.90, 1e-3, "AlexNet-style: 3 conv + fc 256-256-10"),
    "vgg_s": Benchmark("vgg_s", 0.95, 2e-3, "VGG-style: the zoo's minivgg at widths 8-16-32, batch norm"),
}


def build(name: str) -> nn.Module:
    """A fresh (PyTorch-default initialised) instance of benchmark ``name``."""
    if name == "lenet300":
        return LeNet300()
    if name == "lenet5":
        return CaffeLeNet()
    if name == "alexnet_s":
        return AlexNetS()
    if name == "vgg_s":
        return MiniVGG(widths=(8, 16, 32))
    raise SieveError(f"unknown pruning network '{name}'; choose from {', '.join(BENCHMARKS)}")


def variance_scaling_init(model: nn.Module) -> nn.Module:
    """SNIP's initialisation: every Conv2d/Linear weight ~ N(0, 1/fan_in) (TensorFlow's
    ``variance_scaling_initializer`` with scale 1, fan-in mode), biases 0.  SNIP's sensitivities
    are computed on these weights, so they must not depend on PyTorch's layer defaults."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def initialised(name: str, seed: int) -> nn.Module:
    """Benchmark ``name`` with its variance-scaling initial weights ``w_i`` for ``seed``."""
    torch.manual_seed(seed)
    return variance_scaling_init(build(name))
