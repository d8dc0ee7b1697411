"""The model zoo: every network SIEVE evaluates, with the data it is evaluated on.

``load(name)`` returns an fp32 CPU model in ``eval()`` mode and its :class:`~sieve.data.Dataset`
(validation and held-out test split, preprocessed for that model).  The Fashion-MNIST pool
(``lenet5``, ``convnet``, ``minivgg``) is trained here once, deterministically, and cached;
the others load pretrained weights (``../shared`` or files the user passes).

| model | dataset | weights |
|---|---|---|
| lenet5, convnet, minivgg | Fashion-MNIST idx files | trained and cached on first use |
| lenet_caffe | MNIST t10k idx files | Caffe ``.npz`` (``<layer>/w``, ``<layer>/b``) |
| resnet20/32/44/56 | CIFAR-10 (JPEG tar, class folders, python pickles) | akamaster ``.th`` |
| alexnet, squeezenet1_0 | ImageNet images (class folders, images + labels.csv, tar) | torchvision state dicts (squeezenet1_0 also a Caffe Deep-Compression ``.npz``) |
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import shared_path
from .data import Dataset, Split, split_test_only, to_split
from .errors import SieveError

DEFAULT_FASHION = "/usr/share/datasets/fashion-mnist"
FASHION_TRAIN = 55000

# pixel/255 then (x - mean) / std, with the mean and standard deviation of the full 60,000-image
# training set (the usual published constants); fixed so that a model's input never depends on the data it sees.
NORMALISATION = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about a model before loading anything."""

    name: str
    family: str
    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str


_SPECS = [
    ModelSpec("lenet5", "fashion", "fashion-mnist", (1, 28, 28), 10, "Caffe's LeNet trained on Fashion-MNIST"),
    ModelSpec("convnet", "fashion", "fashion-mnist", (1, 28, 28), 10, "CIFAR-quick style 3-conv net with BN, Fashion-MNIST"),
    ModelSpec("minivgg", "fashion", "fashion-mnist", (1, 28, 28), 10, "6-conv VGG-style net with BN, Fashion-MNIST"),
    ModelSpec("lenet_caffe", "caffe_lenet", "mnist", (1, 28, 28), 10, "Caffe's pretrained MNIST LeNet"),
    *[ModelSpec(f"resnet{d}", "cifar_resnet", "cifar10", (3, 32, 32), 10, f"CIFAR-10 ResNet-{d} (akamaster)")
      for d in (20, 32, 44, 56)],
    ModelSpec("alexnet", "imagenet", "imagenet", (3, 224, 224), 1000, "torchvision AlexNet"),
    ModelSpec("squeezenet1_0", "imagenet", "imagenet", (3, 224, 224), 1000, "torchvision SqueezeNet 1.0"),
]
SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def known_models() -> list[str]:
    """Names :func:`load` accepts."""
    return list(SPECS)


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` or a SieveError listing the known models."""
    if name not in SPECS:
        raise SieveError(f"unknown model '{name}'; known models: {', '.join(known_models())}")
    return SPECS[name]


def model_info(name: str) -> dict:
    """``{"dataset", "input_shape", "num_classes", "description"}`` without loading anything."""
    s = spec(name)
    return {"dataset": s.dataset, "input_shape": s.input_shape, "num_classes": s.num_classes,
            "description": s.description}


def architecture(name: str) -> torch.nn.Module:
    """The model's layers, freshly initialised: no data, no weights file, no training.

    For checks that need only the tensor names and shapes (does a plan fit the model?), so
    that they run in a moment before :func:`load` reads data or trains a pool model.  The
    caller's random-number state is left as it was (initialisation draws from it).
    """
    s = spec(name)
    with torch.random.fork_rng(devices=[]):
        if s.family == "fashion":
            from .models import fashion
            model = fashion.build(name)
        elif s.family == "caffe_lenet":
            from .models.caffe_lenet import CaffeLeNet
            model = CaffeLeNet(s.num_classes)
        elif s.family == "cifar_resnet":
            from .models import cifar_resnet
            model = cifar_resnet.build(name)
        else:
            from .models import imagenet
            model = imagenet.BUILDERS[name]()
    return model.float().eval()


def load(name: str, data: str | None = None, weights: str | None = None,
         val: int | None = None, test: int | None = None) -> tuple[torch.nn.Module, Dataset]:
    """The model ``name`` (fp32, CPU, eval mode) and its dataset, splits cut to ``val``/``test``."""
    s = spec(name)
    loaders = {"fashion": _load_fashion, "caffe_lenet": _load_lenet_caffe,
               "cifar_resnet": _load_cifar_resnet, "imagenet": _load_imagenet}
    model, dataset = loaders[s.family](s, None if data is None else str(data),
                                       None if weights is None else str(weights))
    model = model.float().eval()
    return model, dataset.truncated(val, test)


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int = 500) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy of ``model`` on ``split`` and the logits (N×K), under no_grad."""
    if len(split) == 0:
        raise SieveError("cannot evaluate on an empty split; pass a larger val/test count")
    was_training = model.training
    model.eval()
    chunks = [model(split.images[i:i + batch_size]) for i in range(0, len(split), batch_size)]
    if was_training:
        model.train()
    logits = torch.cat(chunks).float()
    accuracy = float((logits.argmax(dim=1) == split.labels).double().mean())
    return accuracy, logits


# --------------------------------------------------------------------------- idx (MNIST-style)

def _train_count(idx) -> int:
    """Training images of an idx directory: the first 55,000 (Fashion-MNIST/MNIST have 60,000);
    a smaller custom training set keeps its last twelfth for validation."""
    return min(FASHION_TRAIN, len(idx.train_labels) * 11 // 12)


def _idx_dataset(idx, preprocess) -> Dataset:
    """Splits of an idx directory: train[55000:]/t10k with a training set, else even/odd t10k."""
    if idx.has_train:
        first = _train_count(idx)
        val = to_split(preprocess(idx.train_images[first:]), idx.train_labels[first:])
        test = to_split(preprocess(idx.test_images), idx.test_labels)
    else:
        val_idx, test_idx = split_test_only(idx.test_labels, class_ordered=False)
        val = to_split(preprocess(idx.test_images[val_idx]), idx.test_labels[val_idx])
        test = to_split(preprocess(idx.test_images[test_idx]), idx.test_labels[test_idx])
    return Dataset(idx.name, idx.classes, val, test, str(idx.directory))


def _normaliser(mean: float, std: float):
    def preprocess(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(images, copy=True)).to(torch.float32).div_(255.0)
        return x.sub_(mean).div_(std).unsqueeze(1)
    return preprocess


def _load_fashion(s: ModelSpec, data: str | None, weights: str | None):
    from .datasets.idx import load_idx_dir
    from .models import fashion, training
    from .models.weights import load_into, read_state_dict

    idx = load_idx_dir(data or DEFAULT_FASHION)
    mean, std = NORMALISATION[idx.name]
    preprocess = _normaliser(mean, std)
    dataset = _idx_dataset(idx, preprocess)
    model = fashion.build(s.name)
    if weights is not None:
        return load_into(model, read_state_dict(weights), weights, s.name), dataset
    if not idx.has_train:
        raise SieveError(f"{s.name} is trained on the train-* idx files, and {idx.directory} has none; "
                         f"pass a directory with train-images-idx3-ubyte[.gz] (default {DEFAULT_FASHION}) "
                         "or trained --weights")
    first = _train_count(idx)
    rec = training.recipe(s.name, idx.fingerprint("train"), mean, std, first)

    def train_fn():
        images = preprocess(idx.train_images[:first])
        labels = torch.from_numpy(np.array(idx.train_labels[:first]))
        return training.train(s.name, rec, images, labels)

    def evaluate_fn(trained):
        return {"val_accuracy": round(evaluate(trained, dataset.val)[0], 6),
                "test_accuracy": round(evaluate(trained, dataset.test)[0], 6),
                "val_images": len(dataset.val), "test_images": len(dataset.test)}

    state = training.trained_state(s.name, rec, train_fn, evaluate_fn)
    return load_into(model, state, str(training.cache_paths(rec)[0]), s.name), dataset


def fashion_record(name: str, data: str | None = None) -> dict | None:
    """The cached training record (accuracies, seconds) of a Fashion model, or None."""
    from .datasets.idx import load_idx_dir
    from .models import training

    idx = load_idx_dir(data or DEFAULT_FASHION)
    if not idx.has_train:
        return None
    mean, std = NORMALISATION[idx.name]
    return training.read_record(training.recipe(name, idx.fingerprint("train"), mean, std, _train_count(idx)))


def fashion_training_data(data: str | None = None) -> tuple[Split, Dataset, str]:
    """The images the Fashion-MNIST pool trains on (``train[:55000]``), the validation/test
    :class:`Dataset` and the training data's fingerprint, preprocessed exactly as the pool's,
    for networks trained outside the zoo (:mod:`sieve.multidsnn`)."""
    from .datasets.idx import load_idx_dir

    idx = load_idx_dir(data or DEFAULT_FASHION)
    if not idx.has_train:
        raise SieveError(f"{idx.directory} has no train-* idx files; pass a Fashion-MNIST directory "
                         f"with train-images-idx3-ubyte[.gz] (default {DEFAULT_FASHION})")
    mean, std = NORMALISATION[idx.name]
    preprocess = _normaliser(mean, std)
    first = _train_count(idx)
    train = to_split(preprocess(idx.train_images[:first]), idx.train_labels[:first])
    return train, _idx_dataset(idx, preprocess), idx.fingerprint("train")


def _load_lenet_caffe(s: ModelSpec, data: str | None, weights: str | None):
    from .datasets.idx import load_idx_dir
    from .models.caffe_lenet import CAFFE_MNIST_SCALE, CaffeLeNet, caffe_npz_state
    from .models.weights import load_into

    weights = weights or _shared_default(
        "models/lenet-caffe-mnist/lenet_caffe_mnist.npz", "lenet_caffe",
        "the Caffe LeNet weights (.npz with conv1/w, conv1/b, ... ip2/b) via --weights")
    data = data or _shared_default("data/mnist-test", "lenet_caffe",
                                   "a directory of MNIST idx files (t10k-images-idx3-ubyte[.gz] ...) via --data")
    idx = load_idx_dir(data)

    def preprocess(images: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.array(images, copy=True)).to(torch.float32) * float(CAFFE_MNIST_SCALE)).unsqueeze(1)

    dataset = _idx_dataset(idx, preprocess)
    dataset.name, dataset.classes = "mnist", [str(d) for d in range(10)]
    model = load_into(CaffeLeNet(), caffe_npz_state(weights), weights, s.name)
    return model, dataset


def _shared_default(relative: str, name: str, what: str) -> str:
    """A default under ../shared, or a SieveError saying what to pass instead."""
    path = shared_path(relative)
    if not path.exists():
        raise SieveError(f"{name} needs {what}; the default {path} does not exist")
    return str(path)


def _shared_glob(pattern: str) -> Path | None:
    parent = shared_path(str(Path(pattern).parent))
    matches = sorted(parent.glob(Path(pattern).name)) if parent.is_dir() else []
    return matches[0] if matches else None


# --------------------------------------------------------------------------- CIFAR-10 ResNets

def _load_cifar_resnet(s: ModelSpec, data: str | None, weights: str | None):
    from .datasets.cifar import CIFAR_MEAN, CIFAR_STD, load_cifar10
    from .models.cifar_resnet import build
    from .models.weights import load_into, read_state_dict

    if weights is None:
        found = _shared_glob(f"models/cifar10-resnet/{s.name}-*.th")
        if found is None:
            raise SieveError(f"{s.name} needs CIFAR-10 weights (akamaster {s.name}-*.th) via --weights; "
                             f"none found in {shared_path('models/cifar10-resnet')}")
        weights = str(found)
    state = read_state_dict(weights)   # before the data: a bad weights file fails before any decoding
    data = data or _shared_default("data/cifar10-test-jpeg.tar", s.name,
                                   "CIFAR-10 test images via --data (a .tar of test/<class>/*.jpg, "
                                   "a folder of class subfolders, or cifar-10-batches-py)")
    raw = load_cifar10(data)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def preprocess(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return ((x - mean) / std).contiguous()

    val_idx, test_idx = split_test_only(raw.labels, class_ordered=raw.class_ordered)
    dataset = Dataset("cifar10", raw.classes, to_split(preprocess(raw.images[val_idx]), raw.labels[val_idx]),
                      to_split(preprocess(raw.images[test_idx]), raw.labels[test_idx]), raw.source)
    model = load_into(build(s.name), state, weights, s.name)
    return model, dataset


# --------------------------------------------------------------------------- ImageNet

def _load_imagenet(s: ModelSpec, data: str | None, weights: str | None):
    from .datasets.imagenet import CAFFE_PREPROCESS, TORCH_PREPROCESS, load_imagenet
    from .models import imagenet

    weights = weights or imagenet.default_weights(s.name)
    caffe = imagenet.is_caffe_weights(weights)
    if data is None:
        sample = shared_path("data/imagenet-sample/imagenet-sample-images.tar")
        if not sample.exists():
            raise SieveError(f"{s.name} needs ImageNet images via --data: a folder of class subfolders "
                             "named by wnid, a folder of images with a labels.csv, or a .tar with labels.csv "
                             f"beside it (e.g. ../shared/data/imagenet-sample/imagenet-sample-images.tar)")
        data = str(sample)
    model = imagenet.load_model(s.name, weights)
    dataset = load_imagenet(data, CAFFE_PREPROCESS if caffe else TORCH_PREPROCESS)
    return model, dataset
