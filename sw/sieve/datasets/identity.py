"""Which data set a collection is, decided by its content and never by its folder's name.

The name of a data set decides things that change results: the normalisation of idx images
(Fashion-MNIST and MNIST have different means) and the class names.  A byte-identical copy of
Fashion-MNIST in a folder called ``mnist_copy/`` is still Fashion-MNIST, so idx files are
recognised by the SHA-256 of their *decompressed* bytes (a ``.gz`` and a raw copy of the same
file hash alike); CIFAR-10 by its ten class names; the ImageNet layouts by their wnid folders or
their 0..999 class indices.  Idx files nobody knows need the user to say what they are
(``--dataset``), because their name picks the normalisation and class names; other image
collections are labelled by their own class folders and keep their folder's name as a label only
(their preprocessing is the model's or ``--preprocess``, never guessed from a name).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SieveError
from .cifar import CIFAR_CLASSES

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(d) for d in range(10)]

#: the data set names ``--dataset`` accepts, and the file layouts each one comes in
DATASETS = {"fashion-mnist": "idx", "mnist": "idx", "cifar10": "cifar", "imagenet": "images"}

# SHA-256 of the decompressed idx files: Debian's dataset-fashion-mnist
# (/usr/share/datasets/fashion-mnist) and the MNIST t10k files (../shared/data/mnist-test).
IDX_DIGESTS: dict[str, tuple[str, str]] = {
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b": ("fashion-mnist", "t10k-images"),
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34": ("fashion-mnist", "t10k-labels"),
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888": ("fashion-mnist", "train-images"),
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9": ("fashion-mnist", "train-labels"),
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7": ("mnist", "t10k-images"),
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2": ("mnist", "t10k-labels"),
}


def check_name(name: str | None, layout: str | None = None) -> str | None:
    """``name`` when it is a known data set (that comes in ``layout``), else one SieveError line."""
    if name is None:
        return None
    if name not in DATASETS:
        raise SieveError(f"unknown --dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if layout is not None and DATASETS[name] != layout:
        fits = [n for n, lay in DATASETS.items() if lay == layout]
        raise SieveError(f"--dataset {name} does not fit this data ({layout} files); "
                         f"for it choose one of: {', '.join(fits)}")
    return name


def identify_idx(digests: dict[str, str]) -> str | None:
    """The data set whose t10k image *and* label files have these digests (``{part: sha256}``).

    Training files, when present, must not belong to another known set; files nobody knows
    (e.g. a custom training set) do not change what the test set is."""
    images = IDX_DIGESTS.get(digests.get("t10k-images", ""))
    labels = IDX_DIGESTS.get(digests.get("t10k-labels", ""))
    if images is None or labels is None or (images[1], labels) != ("t10k-images", (images[0], "t10k-labels")):
        return None
    name = images[0]
    for part in ("train-images", "train-labels"):
        known = IDX_DIGESTS.get(digests.get(part, ""))
        if known is not None and known[0] != name:
            return None
    return name


def idx_name(digests: dict[str, str], directory, override: str | None) -> str:
    """The data set an idx directory holds: ``override`` (``--dataset``) or its content."""
    if override is not None:
        return check_name(override, "idx")
    name = identify_idx(digests)
    if name is None:
        raise SieveError(f"the idx files in {directory} are neither Fashion-MNIST nor MNIST (by content); "
                         "say which normalisation and class names they need with --dataset fashion-mnist "
                         "or --dataset mnist")
    return name


def idx_classes(name: str) -> list[str]:
    return list(FASHION_CLASSES) if name == "fashion-mnist" else list(DIGIT_CLASSES)


def cifar_name(classes: list[str], source, override: str | None) -> str:
    """``cifar10`` when the classes are CIFAR-10's ten (or ``--dataset cifar10`` says so), else
    the collection's own name (its classes are its folders)."""
    if override is not None:
        return check_name(override, "cifar")
    return "cifar10" if list(classes) == CIFAR_CLASSES else Path(str(source)).stem


def imagenet_name(standard_labels: bool, source, override: str | None) -> str:
    """``imagenet`` for wnid folders or 0..999 labels (or when ``--dataset imagenet`` says so),
    else the collection's own name (its classes are its sorted folders)."""
    if override is not None:
        return check_name(override, "images")
    return "imagenet" if standard_labels else Path(str(source)).stem


def known_classes(name: str) -> list[str]:
    """The class names of a known data set (``--dataset``)."""
    check_name(name)
    if DATASETS[name] == "idx":
        return idx_classes(name)
    if name == "cifar10":
        return list(CIFAR_CLASSES)
    from .imagenet_classes import NAMES

    return list(NAMES)
