"""ImageNet networks with torchvision's definitions and parameter names (``features.0.weight``
… ``classifier.6.weight`` for AlexNet; ``features.N.squeeze/expand1x1/expand3x3`` and
``classifier.1`` for SqueezeNet 1.0), so torchvision state dicts load as they are — without
depending on torchvision.  SqueezeNet 1.0 also accepts the Caffe Deep-Compression weights
(``.npz`` with ``conv1/w``, ``fire2/conv1x1_1/w`` …, ``conv_final/w``): the architecture is
the same (ceil-mode pooling included); only the preprocessing differs (see
:mod:`sieve.datasets.imagenet`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import SieveError
from .weights import load_into, read_state_dict

HUB_FILES = {"alexnet": "alexnet-owt-7be5be79.pth", "squeezenet1_0": "squeezenet1_0-b66bff10.pth"}


class AlexNet(nn.Module):
    """torchvision's AlexNet (the "one weird trick" variant: 64-192-384-256-256)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


class Fire(nn.Module):
    """SqueezeNet's fire module: 1×1 squeeze, then 1×1 and 3×3 expands concatenated."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet1_0(nn.Module):
    """torchvision's ``squeezenet1_0``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Conv2d(512, num_classes, kernel_size=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.classifier(self.features(x)))


BUILDERS = {"alexnet": AlexNet, "squeezenet1_0": SqueezeNet1_0}

# Caffe SqueezeNet 1.0 layer -> torchvision module.  Both the Deep-Compression names
# (conv1x1_1 / conv1x1_2 / conv3x3_2, conv_final) and the DeepScale release's names
# (squeeze1x1 / expand1x1 / expand3x3, conv10) are accepted.
_FIRE_INDEX = {2: 3, 3: 4, 4: 5, 5: 7, 6: 8, 7: 9, 8: 10, 9: 12}
_FIRE_PART = {"conv1x1_1": "squeeze", "squeeze1x1": "squeeze", "conv1x1_2": "expand1x1",
              "expand1x1": "expand1x1", "conv3x3_2": "expand3x3", "expand3x3": "expand3x3"}


def _caffe_squeezenet_name(key: str, source: str) -> str:
    layer, _, kind = key.rpartition("/")
    suffix = {"w": "weight", "b": "bias"}.get(kind)
    if suffix is None:
        raise SieveError(f"weights {source}: key '{key}' is not of the Caffe form '<layer>/w' or '<layer>/b'")
    if layer == "conv1":
        return f"features.0.{suffix}"
    if layer in ("conv_final", "conv10"):
        return f"classifier.1.{suffix}"
    fire, _, part = layer.partition("/")
    if fire.startswith("fire") and fire[4:].isdigit() and int(fire[4:]) in _FIRE_INDEX and part in _FIRE_PART:
        return f"features.{_FIRE_INDEX[int(fire[4:])]}.{_FIRE_PART[part]}.{suffix}"
    raise SieveError(f"weights {source}: Caffe layer '{layer}' has no place in squeezenet1_0")


def is_caffe_weights(path: str | Path) -> bool:
    """Whether a weights file is a Caffe-layout ``.npz`` (preprocessing follows Caffe then)."""
    return Path(path).suffix == ".npz"


def default_weights(name: str) -> str:
    """The torch hub checkpoint cache file of ``name``, or a SieveError saying what to pass."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[name]
    if not path.is_file():
        extra = (" or a Caffe Deep-Compression .npz such as ../shared/models/squeezenet1.0-deepcompression/"
                 "squeezenet1.0_deepcompression_decoded.npz" if name == "squeezenet1_0" else "")
        raise SieveError(f"{name} needs ImageNet weights: pass --weights FILE (a torchvision state dict such as "
                         f"{HUB_FILES[name]}{extra}) or place that file at {path}; nothing is downloaded")
    return str(path)


def load_model(name: str, weights: str) -> nn.Module:
    """``name`` with ``weights`` (torchvision state dict, or Caffe .npz for squeezenet1_0)."""
    model = BUILDERS[name]()
    state = read_state_dict(weights)
    if is_caffe_weights(weights):
        if name != "squeezenet1_0":
            raise SieveError(f"Caffe .npz weights are supported for squeezenet1_0 only; "
                             f"pass a torchvision state dict (.pth) for {name}")
        state = {_caffe_squeezenet_name(k, weights): v.to(torch.float32) for k, v in state.items()}
    return load_into(model, state, weights, name)
