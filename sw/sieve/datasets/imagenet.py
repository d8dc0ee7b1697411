"""ImageNet-style image collections and their preprocessing.

Accepted layouts (``data=``):

* a folder of class subfolders — named by wnid (``n01440764/…``) they map to the standard
  sorted-wnid index; otherwise the sorted folder order is the class index;
* a folder of images with a ``labels.csv`` (``filename`` plus ``class_index_sorted_wnid``,
  ``class_index``, ``label`` or ``wnid``), like ``../shared/data/imagenet-sample``;
* a ``.tar`` of images with such a ``labels.csv`` beside it (or inside it), or the folder
  holding that ``.tar`` and its ``labels.csv``.

Preprocessing is a :class:`sieve.preprocess.Preprocess`: the ``imagenet`` preset (torchvision's:
resize the short side to 256, centre-crop 224, mean/std normalised) or, for Caffe weights,
``caffe-imagenet`` (resize to 256×256, centre-crop 227, BGR minus the mean pixel (104, 117, 123)).
Decoded crops are cached as uint8.
"""

from __future__ import annotations

import csv
import io
import tarfile
from functools import partial
from pathlib import Path

import numpy as np

from ..data import Dataset, split_test_only, to_split
from ..errors import SieveError
from ..preprocess import PRESETS, Preprocess
from .identity import imagenet_name
from .images import CACHE_MIN_IMAGES, ImageRef, cached_arrays, is_image, source_key, tar_image_members
from .imagenet_classes import NAMES, WNIDS
from .workers import check_workers, decode_into

_WNID_INDEX = {w: i for i, w in enumerate(WNIDS)}
_LABEL_COLUMNS = ("class_index_sorted_wnid", "class_index", "label", "wnid")


TORCH_PREPROCESS = PRESETS["imagenet"]
CAFFE_PREPROCESS = PRESETS["caffe-imagenet"]


def _read_labels_csv(csv_path: Path) -> dict[str, int]:
    """``{file basename: class index}`` from a labels CSV file."""
    try:
        text = csv_path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SieveError(f"cannot read labels {csv_path}: {exc}") from None
    return _parse_labels(text, str(csv_path))


def _parse_labels(text: str, where: str) -> dict[str, int]:
    """``{file basename: class index}`` from the text of a labels CSV."""
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise SieveError(f"cannot parse labels {where}: {exc}") from None
    if not rows or "filename" not in rows[0]:
        raise SieveError(f"labels {where} need a header with 'filename' and one of {', '.join(_LABEL_COLUMNS)}")
    column = next((c for c in _LABEL_COLUMNS if c in rows[0]), None)
    if column is None:
        raise SieveError(f"labels {where} have no label column; expected one of {', '.join(_LABEL_COLUMNS)}")
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        value = (row.get(column) or "").strip()
        try:
            label = _WNID_INDEX[value] if column == "wnid" else int(value)
        except (KeyError, ValueError):
            raise SieveError(f"labels {where} line {line}: '{value}' is not a valid {column}") from None
        if not 0 <= label < 1000:
            raise SieveError(f"labels {where} line {line}: class index {label} is outside 0..999")
        labels[Path((row.get("filename") or "").strip()).name] = label
    return labels


def _labelled(refs: list[ImageRef], labels: dict[str, int], where: str) -> list[tuple[int, ImageRef]]:
    out = []
    for ref in refs:
        base = Path(ref.relname).name
        if base not in labels:
            raise SieveError(f"image {ref.display} has no row in {where}; add it or remove the image")
        out.append((labels[base], ref))
    return out


def _tar_with_labels(path: Path) -> list[tuple[int, ImageRef]]:
    members = tar_image_members(path)
    csv_path = path.parent / "labels.csv"
    if csv_path.is_file():
        return _labelled([ImageRef(path, m) for m in members], _read_labels_csv(csv_path), str(csv_path))
    try:
        with tarfile.open(path) as tar:
            inner = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == "labels.csv"), None)
            handle = tar.extractfile(inner) if inner is not None else None
            text = handle.read().decode() if handle is not None else None
    except (tarfile.TarError, OSError, UnicodeDecodeError) as exc:
        raise SieveError(f"cannot read labels.csv inside {path}: {exc}") from None
    if text is None:
        raise SieveError(f"no labels for {path}: put a labels.csv (filename,class_index_sorted_wnid) "
                         "beside the tar or inside it")
    where = f"{path}:{inner.name}"
    return _labelled([ImageRef(path, m) for m in members], _parse_labels(text, where), where)


def _folder(path: Path) -> tuple[list[tuple[int, ImageRef]], list[str], bool]:
    """``(labelled refs, class names, whether the labels are ImageNet's standard indices)``."""
    csv_path = path / "labels.csv"
    if csv_path.is_file():
        refs = [ImageRef(p) for p in sorted(path.rglob("*")) if p.is_file() and is_image(p.name)]
        if not refs:   # the sample's layout: the folder holding images.tar and its labels.csv
            refs = [ImageRef(t, m) for t in sorted(path.glob("*.tar")) if t.is_file() for m in tar_image_members(t)]
        return _labelled(refs, _read_labels_csv(csv_path), str(csv_path)), list(NAMES), True
    subdirs = sorted(d for d in path.iterdir() if d.is_dir())
    standard = bool(subdirs) and all(d.name in _WNID_INDEX for d in subdirs)
    if standard:
        index, classes = {d.name: _WNID_INDEX[d.name] for d in subdirs}, list(NAMES)
    else:
        index, classes = {d.name: i for i, d in enumerate(subdirs)}, [d.name for d in subdirs]
    items = [(index[d.name], ImageRef(p)) for d in subdirs for p in sorted(d.rglob("*"))
             if p.is_file() and is_image(p.name)]
    return items, classes, standard


def _crop(prep: Preprocess, ref: ImageRef, img) -> np.ndarray:
    """One decoded image's uint8 crop (module-level so decode workers can unpickle it)."""
    return prep.crop_image(img)


def load_imagenet(data: str | Path, prep: Preprocess, dataset: str | None = None,
                  workers: int | None = None) -> Dataset:
    """The ImageNet-style dataset at ``data`` preprocessed with ``prep`` (val even, test odd).

    ``dataset`` (``--dataset``) names the set when its layout does not say it is ImageNet.
    ``workers`` (``--workers``): processes for the first, uncached decode (None: min(4, cores);
    0: this process); the crops are the same whatever the number."""
    workers = check_workers(workers)
    path = Path(data)
    if not path.exists():
        raise SieveError(f"ImageNet data {path} does not exist; pass a folder of class subfolders, "
                         "a folder of images with labels.csv, or a .tar with labels.csv beside it")
    if prep.crop is None:
        raise SieveError(f"images of different sizes need a fixed model input: preprocessing '{prep.name}' has no "
                         "centre crop; pass --crop N or a preset such as --preprocess imagenet")
    if path.is_dir():
        items, classes, standard = _folder(path)
    else:
        items, classes, standard = _tar_with_labels(path), list(NAMES), True
    if not items:
        raise SieveError(f"no images found in {path}: expected class subfolders (<wnid>/<image>.JPEG), "
                         "images with a labels.csv, or a .tar with labels.csv beside it")
    name = imagenet_name(standard, path, dataset)
    items.sort(key=lambda t: (t[0], t[1].relname))
    refs = [ref for _, ref in items]
    labels = np.asarray([label for label, _ in items], dtype=np.int64)

    def build() -> dict[str, np.ndarray]:
        crops = np.empty((len(refs), prep.crop, prep.crop, 3), dtype=np.uint8)
        return {"crops": decode_into(crops, refs, partial(_crop, prep), workers, f"decode {path.name}")}

    # the cached crops depend on the geometry only; the arithmetic runs on every load
    key = source_key(path, f"imagenet-v2|{prep.resize}|{prep.square}|{prep.crop}")
    crops = cached_arrays("imagenet", key, build, enabled=len(refs) >= CACHE_MIN_IMAGES)["crops"]
    val_idx, test_idx = split_test_only(labels, class_ordered=True)
    return Dataset(name, classes, to_split(prep.to_tensor(crops[val_idx]), labels[val_idx]),
                   to_split(prep.to_tensor(crops[test_idx]), labels[test_idx]), str(path), prep)
