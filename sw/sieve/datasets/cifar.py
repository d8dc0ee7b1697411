"""CIFAR-10 test images from a tar of ``test/<class>/NNNN.jpg`` (the shared JPEG copy), a
folder of class subfolders, or the standard ``cifar-10-batches-py`` pickles (``test_batch``).
Class index = alphabetical folder order, which is the standard CIFAR-10 order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SieveError
from ..safe_pickle import read_data_pickle
from .images import CACHE_MIN_IMAGES, ImageRef, cached_arrays, is_image, source_key, tar_image_members
from .workers import check_workers, decode_into

CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class CifarRaw:
    """uint8 N×32×32×3 RGB images, int64 labels, class names, where they came from, and
    whether the list is ordered by class (then the splits are interleaved by class)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str
    class_ordered: bool


def _class_refs(path: Path) -> tuple[list[ImageRef], list[int], list[str]]:
    """Images grouped by their parent folder name (tar members or files), class-sorted."""
    if path.is_dir():
        items = [(p.parent.name, str(p.relative_to(path)), ImageRef(p))
                 for p in path.rglob("*") if p.is_file() and is_image(p.name) and p.parent != path]
    else:
        items = [(Path(m).parent.name, m, ImageRef(path, m)) for m in tar_image_members(path)
                 if Path(m).parent.name]
    if not items:
        raise SieveError(f"no CIFAR-10 images found in {path}: expected <class>/<image>.jpg entries "
                         "(e.g. test/airplane/0000.jpg) or a cifar-10-batches-py directory")
    classes = sorted({cls for cls, _, _ in items})
    items.sort(key=lambda t: (t[0], t[1]))
    index = {c: i for i, c in enumerate(classes)}
    return [ref for _, _, ref in items], [index[c] for c, _, _ in items], classes


def _pixels(ref: ImageRef, img) -> np.ndarray:
    """One decoded CIFAR image as 32x32x3 uint8 (module-level so decode workers can unpickle it)."""
    if img.size != (32, 32):
        raise SieveError(f"image {ref.display} is {img.size[0]}x{img.size[1]}; CIFAR-10 images must be 32x32")
    return np.asarray(img, dtype=np.uint8)


def _decode_all(refs: list[ImageRef], desc: str, workers: int | None = None) -> np.ndarray:
    return decode_into(np.empty((len(refs), 32, 32, 3), dtype=np.uint8), refs, _pixels, workers, desc)


def _pickles(path: Path) -> Path | None:
    """The ``test_batch`` file when ``path`` is (or contains) cifar-10-batches-py."""
    for cand in (path, path / "test_batch", path / "cifar-10-batches-py" / "test_batch"):
        if cand.is_file() and cand.name == "test_batch":
            return cand
    return None


def _load_pickle(batch: Path) -> CifarRaw:
    """A ``cifar-10-batches-py`` batch, read by the restricted unpickler (a data file runs no code)."""
    obj = read_data_pickle(batch, "CIFAR-10 batch")
    try:
        data = np.asarray(obj[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(obj[b"labels"], dtype=np.int64)
    except Exception as exc:  # noqa: BLE001 - any failure means the same: not a CIFAR batch
        raise SieveError(f"cannot read CIFAR-10 batch {batch}: {exc}") from None
    classes = CIFAR_CLASSES
    meta = batch.parent / "batches.meta"
    if meta.is_file():
        names = read_data_pickle(meta, "CIFAR-10 batches.meta")
        names = names.get(b"label_names") if isinstance(names, dict) else None
        if names:
            classes = [n.decode() for n in names]
    return CifarRaw(np.ascontiguousarray(data), labels, classes, str(batch), class_ordered=False)


def load_cifar10(path: str | Path, workers: int | None = None) -> CifarRaw:
    """Raw CIFAR-10 test images from any of the accepted layouts (decoded once, cached).

    ``workers`` (``--workers``): processes for the first decode of JPEG/PNG files (None:
    min(4, cores); 0: this process); the pixels are the same whatever the number."""
    workers = check_workers(workers)
    path = Path(path)
    if not path.exists():
        raise SieveError(f"CIFAR-10 data {path} does not exist; pass a .tar of test/<class>/*.jpg, "
                         "a folder of class subfolders, or a cifar-10-batches-py directory")
    batch = _pickles(path)
    if batch is not None:
        return _load_pickle(batch)
    refs, labels, classes = _class_refs(path)

    def build() -> dict[str, np.ndarray]:
        return {"images": _decode_all(refs, f"decode {path.name}", workers), "labels": np.asarray(labels, dtype=np.int64),
                "classes": np.asarray(classes)}

    arrays = cached_arrays("cifar10", source_key(path, "cifar10-v1"), build, enabled=len(refs) >= CACHE_MIN_IMAGES)
    return CifarRaw(arrays["images"], arrays["labels"].astype(np.int64), [str(c) for c in arrays["classes"]],
                    str(path), class_ordered=True)
