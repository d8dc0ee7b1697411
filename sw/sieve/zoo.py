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

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cache import shared_path
from .data import Dataset, Split, split_test_only, to_split
from .datasets.identity import check_name
from .errors import SieveError
from .preprocess import PRESETS, Preprocess, preset, with_overrides

DEFAULT_FASHION = "/usr/share/datasets/fashion-mnist"
FASHION_TRAIN = 55000

# pixel/255 then (x - mean) / std, with the mean and standard deviation of the full 60,000-image
# training set (the usual published constants); fixed so that a model's input never depends on the
# data it sees.  The presets of the same names (sieve.preprocess) hold them.
NORMALISATION = {name: (PRESETS[name].mean[0], PRESETS[name].std[0]) for name in ("fashion-mnist", "mnist")}


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


def default_preprocess(name: str, weights: str | None = None) -> Preprocess:
    """The preprocessing ``name`` gets unless told otherwise: its data set's, and for ImageNet
    models the one its weights were trained with (Caffe ``.npz`` → ``caffe-imagenet``)."""
    s = spec(name)
    if s.family == "imagenet":
        from .models.imagenet import is_caffe_weights

        return PRESETS["caffe-imagenet" if weights is not None and is_caffe_weights(weights) else "imagenet"]
    return PRESETS[{"caffe_lenet": "caffe-mnist"}.get(s.family, s.dataset)]


def input_shape(name: str, weights: str | None = None) -> tuple[int, int, int]:
    """(C, H, W) of ``name``'s input with ``weights`` (SqueezeNet's Caffe weights take 227×227)."""
    s = spec(name)
    crop = default_preprocess(name, weights).crop
    return s.input_shape if crop is None else (s.input_shape[0], crop, crop)


def weights_input_shapes(name: str) -> list[dict]:
    """Each kind of weights ``name`` accepts, with the preprocessing and input shape it implies."""
    s = spec(name)
    sources = [("torchvision state dict (.pth)", None)] if s.family == "imagenet" else [("default", None)]
    if name == "squeezenet1_0":
        sources.append(("Caffe Deep-Compression .npz", "weights.npz"))
    return [{"weights": label, "preprocess": default_preprocess(name, w).name, "input_shape": list(input_shape(name, w))}
            for label, w in sources]


def load(name: str, data: str | None = None, weights: str | None = None,
         val: int | None = None, test: int | None = None, dataset: str | None = None,
         preprocess: str | Preprocess | None = None,
         preprocess_overrides: dict | None = None, workers: int | None = None) -> tuple[torch.nn.Module, Dataset]:
    """The model ``name`` (fp32, CPU, eval mode) and its dataset, splits cut to ``val``/``test``.

    ``dataset`` names the data set when its content does not (``--dataset``); ``preprocess`` (a
    preset name or a :class:`~sieve.preprocess.Preprocess`) and ``preprocess_overrides`` (fields of
    :func:`sieve.preprocess.with_overrides`) replace the model's default preprocessing.  ``data``
    may also be an ``.npz`` of already preprocessed ``x`` and labels ``y``.  ``workers``
    (``--workers``): processes for the first decode of image files (None: min(4, cores); 0: this
    process; :func:`sieve.datasets.workers.check_workers`).
    """
    s = spec(name)
    check_name(dataset)
    from .datasets.workers import check_workers

    workers = check_workers(workers)
    data = None if data is None else str(data)
    weights = None if weights is None else str(weights)
    overrides = {k: v for k, v in (preprocess_overrides or {}).items() if v is not None}

    def choose(default: str) -> Preprocess:
        return with_overrides(preset(preprocess or default), **overrides)

    if data is not None and data.lower().endswith(".npz"):
        if preprocess is not None or overrides:
            raise SieveError(f"--preprocess and its overrides do not apply to {data}: an .npz holds x already "
                             "preprocessed; drop them or pass the images instead")
        from .datasets.arrays import load_npz, check_fits

        ds = load_npz(data, dataset)     # first: a bad file fails before any model is loaded or trained
        model = _MODEL_LOADERS[s.family](s, weights).float().eval()
        check_fits(model, ds, name)
        return model, ds.truncated(val, test)
    if s.family in ("cifar_resnet", "imagenet"):   # image files: decoded by ``workers`` processes
        loader = {"cifar_resnet": _load_cifar_resnet, "imagenet": _load_imagenet}[s.family]
        model, ds = loader(s, data, weights, dataset, choose, workers)
    else:   # idx files: nothing to decode
        model, ds = {"fashion": _load_fashion, "caffe_lenet": _load_lenet_caffe}[s.family](s, data, weights,
                                                                                          dataset, choose)
    model = model.float().eval()
    return model, ds.truncated(val, test)


def _arrays_only(prep: Preprocess, source) -> Preprocess:
    """``prep`` for data stored as fixed-size arrays (idx, CIFAR): no resize or crop."""
    if prep.has_geometry:
        raise SieveError(f"{source} holds fixed-size images; --resize/--crop (preprocessing '{prep.name}') "
                         "apply to image files only, pass a preset without them such as the model's default")
    return prep


@torch.no_grad()
def forward_logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500,
                   device="cpu") -> torch.Tensor:
    """``model``'s float32 logits of ``images`` on the host, computed in batches on ``device``
    (a copy of the model goes there; ``model`` itself stays where it is)."""
    from .device import check_batch_size, resolve_device, to_device

    device, batch_size = resolve_device(device), check_batch_size(batch_size)
    run = model if all(p.device == device for p in model.parameters()) else copy.deepcopy(model).to(device)
    if device.type == "cuda":
        images = images.pin_memory()
    chunks = [run(to_device(images[i:i + batch_size], device)).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).float()


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int = 500,
             device="cpu") -> tuple[float, torch.Tensor]:
    """Top-1 accuracy of ``model`` on ``split`` and the logits (N×K, on the host), under no_grad.

    ``device`` (``cpu|cuda|cuda:N|auto``): where the forward passes run (a copy of the model
    goes there; ``model`` itself is left where it is)."""
    if len(split) == 0:
        raise SieveError("cannot evaluate on an empty split; pass a larger val/test count")
    was_training = model.training
    model.eval()
    try:
        logits = forward_logits(model, split.images, batch_size, device)
    finally:
        if was_training:
            model.train()
    accuracy = float((logits.argmax(dim=1) == split.labels).double().mean())
    return accuracy, logits


# --------------------------------------------------------------------------- idx (MNIST-style)

def _train_count(idx) -> int:
    """Training images of an idx directory: the first 55,000 (Fashion-MNIST/MNIST have 60,000);
    a smaller custom training set keeps its last twelfth for validation."""
    return min(FASHION_TRAIN, len(idx.train_labels) * 11 // 12)


def _idx_dataset(idx, preprocess, name: str | None = None, prep: Preprocess | None = None) -> Dataset:
    """Splits of an idx directory: train[55000:]/t10k with a training set, else even/odd t10k."""
    if idx.has_train:
        first = _train_count(idx)
        val = to_split(preprocess(idx.train_images[first:]), idx.train_labels[first:])
        test = to_split(preprocess(idx.test_images), idx.test_labels)
    else:
        val_idx, test_idx = split_test_only(idx.test_labels, class_ordered=False)
        val = to_split(preprocess(idx.test_images[val_idx]), idx.test_labels[val_idx])
        test = to_split(preprocess(idx.test_images[test_idx]), idx.test_labels[test_idx])
    from .datasets.identity import idx_classes

    name = name or idx.name
    return Dataset(name, idx_classes(name), val, test, str(idx.directory), prep)


def _idx_data(data: str | None, dataset: str | None, choose, default: str | None = None):
    """``(idx files, data set name, preprocessing)`` of an idx directory; the name comes from
    the files' content (or ``--dataset``), the default preprocessing from the name."""
    from .datasets.identity import idx_name
    from .datasets.idx import load_idx_dir

    idx = load_idx_dir(data or DEFAULT_FASHION)
    name = idx_name(idx.digests, idx.directory, dataset)
    return idx, name, _arrays_only(choose(default or name), idx.directory)


def _normalisation_key(prep: Preprocess, fingerprint: str) -> tuple[str, float, float]:
    """``(data fingerprint, mean, std)`` for the training recipe: the plain /255 mean/std
    presets keep the recipe (and so the cached weights) they always had."""
    if prep.scale == 255.0 and len(prep.mean) == len(prep.std) == 1 and not prep.bgr:
        return fingerprint, prep.mean[0], prep.std[0]
    arithmetic = {k: v for k, v in prep.to_json().items() if k != "name"}
    return f"{fingerprint}|{sorted(arithmetic.items())}", 0.0, 1.0


def _fashion_model(s: ModelSpec, weights: str | None) -> torch.nn.Module:
    """A Fashion pool model without data of its own (an .npz): given weights or the default training."""
    from .models import fashion
    from .models.weights import load_into, read_state_dict

    if weights is not None:
        return load_into(fashion.build(s.name), read_state_dict(weights), weights, s.name)
    return _load_fashion(s, None, None, None, preset)[0]


def _load_fashion(s: ModelSpec, data: str | None, weights: str | None, dataset_name: str | None = None,
                  choose=preset):
    from .models import fashion, training
    from .models.weights import load_into, read_state_dict

    model = fashion.build(s.name)
    if weights is not None:   # before the data: a bad weights file fails before any reading
        model = load_into(model, read_state_dict(weights), weights, s.name)
    idx, name, prep = _idx_data(data, dataset_name, choose)
    preprocess = prep.to_tensor
    dataset = _idx_dataset(idx, preprocess, name, prep)
    if weights is not None:
        return model, dataset
    if not idx.has_train:
        raise SieveError(f"{s.name} is trained on the train-* idx files, and {idx.directory} has none; "
                         f"pass a directory with train-images-idx3-ubyte[.gz] (default {DEFAULT_FASHION}) "
                         "or trained --weights")
    first = _train_count(idx)
    fingerprint, mean, std = _normalisation_key(prep, idx.fingerprint("train"))
    rec = training.recipe(s.name, fingerprint, mean, std, first)

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


def fashion_record(name: str, data: str | None = None, dataset: str | None = None) -> dict | None:
    """The cached training record (accuracies, seconds) of a Fashion model, or None."""
    from .models import training

    idx, _, prep = _idx_data(data, dataset, preset)
    if not idx.has_train:
        return None
    fingerprint, mean, std = _normalisation_key(prep, idx.fingerprint("train"))
    return training.read_record(training.recipe(name, fingerprint, mean, std, _train_count(idx)))


def fashion_training_data(data: str | None = None) -> tuple[Split, Dataset, str]:
    """The images the Fashion-MNIST pool trains on (``train[:55000]``), the validation/test
    :class:`Dataset` and the training data's fingerprint, preprocessed exactly as the pool's,
    for networks trained outside the zoo (:mod:`sieve.multidsnn`)."""
    idx, name, prep = _idx_data(data, None, preset)
    if not idx.has_train:
        raise SieveError(f"{idx.directory} has no train-* idx files; pass a Fashion-MNIST directory "
                         f"with train-images-idx3-ubyte[.gz] (default {DEFAULT_FASHION})")
    preprocess = prep.to_tensor
    first = _train_count(idx)
    train = to_split(preprocess(idx.train_images[:first]), idx.train_labels[:first])
    return train, _idx_dataset(idx, preprocess, name, prep), idx.fingerprint("train")


def _lenet_caffe_model(s: ModelSpec, weights: str | None) -> torch.nn.Module:
    from .models.caffe_lenet import CaffeLeNet, caffe_npz_state
    from .models.weights import load_into

    weights = weights or _shared_default(
        "models/lenet-caffe-mnist/lenet_caffe_mnist.npz", "lenet_caffe",
        "the Caffe LeNet weights (.npz with conv1/w, conv1/b, ... ip2/b) via --weights")
    return load_into(CaffeLeNet(), caffe_npz_state(weights), weights, s.name)


def _load_lenet_caffe(s: ModelSpec, data: str | None, weights: str | None, dataset_name: str | None = None,
                      choose=preset):
    model = _lenet_caffe_model(s, weights)
    data = data or _shared_default("data/mnist-test", "lenet_caffe",
                                   "a directory of MNIST idx files (t10k-images-idx3-ubyte[.gz] ...) via --data")
    idx, name, prep = _idx_data(data, dataset_name, choose, "caffe-mnist")
    return model, _idx_dataset(idx, prep.to_tensor, name, prep)


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

def _cifar_resnet_model(s: ModelSpec, weights: str | None) -> torch.nn.Module:
    from .models.cifar_resnet import build
    from .models.weights import load_into, read_state_dict

    if weights is None:
        found = _shared_glob(f"models/cifar10-resnet/{s.name}-*.th")
        if found is None:
            raise SieveError(f"{s.name} needs CIFAR-10 weights (akamaster {s.name}-*.th) via --weights; "
                             f"none found in {shared_path('models/cifar10-resnet')}")
        weights = str(found)
    return load_into(build(s.name), read_state_dict(weights), weights, s.name)


def _load_cifar_resnet(s: ModelSpec, data: str | None, weights: str | None, dataset_name: str | None = None,
                       choose=preset, workers: int | None = None):
    from .datasets.cifar import load_cifar10
    from .datasets.identity import cifar_name

    model = _cifar_resnet_model(s, weights)   # before the data: a bad weights file fails before any decoding
    data = data or _shared_default("data/cifar10-test-jpeg.tar", s.name,
                                   "CIFAR-10 test images via --data (a .tar of test/<class>/*.jpg, "
                                   "a folder of class subfolders, or cifar-10-batches-py)")
    raw = load_cifar10(data, workers)
    name = cifar_name(raw.classes, raw.source, dataset_name)
    prep = _arrays_only(choose("cifar10"), raw.source)
    val_idx, test_idx = split_test_only(raw.labels, class_ordered=raw.class_ordered)
    dataset = Dataset(name, raw.classes, to_split(prep.to_tensor(raw.images[val_idx]), raw.labels[val_idx]),
                      to_split(prep.to_tensor(raw.images[test_idx]), raw.labels[test_idx]), raw.source, prep)
    return model, dataset


# --------------------------------------------------------------------------- ImageNet

def _imagenet_model(s: ModelSpec, weights: str | None) -> torch.nn.Module:
    from .models import imagenet

    return imagenet.load_model(s.name, weights or imagenet.default_weights(s.name))


def _load_imagenet(s: ModelSpec, data: str | None, weights: str | None, dataset_name: str | None = None,
                   choose=preset, workers: int | None = None):
    from .datasets.imagenet import load_imagenet
    from .models import imagenet

    weights = weights or imagenet.default_weights(s.name)
    if data is None:
        sample = shared_path("data/imagenet-sample/imagenet-sample-images.tar")
        if not sample.exists():
            raise SieveError(f"{s.name} needs ImageNet images via --data: a folder of class subfolders "
                             "named by wnid, a folder of images with a labels.csv, or a .tar with labels.csv "
                             f"beside it (e.g. ../shared/data/imagenet-sample/imagenet-sample-images.tar)")
        data = str(sample)
    model = imagenet.load_model(s.name, weights)
    dataset = load_imagenet(data, choose(default_preprocess(s.name, weights).name), dataset_name, workers)
    return model, dataset


# model without data (for an .npz of preprocessed inputs), per family
_MODEL_LOADERS = {"fashion": _fashion_model, "caffe_lenet": _lenet_caffe_model,
                  "cifar_resnet": _cifar_resnet_model, "imagenet": _imagenet_model}
