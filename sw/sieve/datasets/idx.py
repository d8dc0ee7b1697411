"""MNIST-style idx files (``train-images-idx3-ubyte[.gz]`` …), the format of MNIST and
Fashion-MNIST.  A directory may hold the training files, the ``t10k`` test files or both.

Which data set the files are is decided by their content (:mod:`sieve.datasets.identity`):
every file's decompressed bytes are hashed while it is read."""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SieveError
from .identity import DIGIT_CLASSES, FASHION_CLASSES, identify_idx, idx_classes

__all__ = ["read_idx", "load_idx_dir", "IdxData", "FASHION_CLASSES", "DIGIT_CLASSES"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Decode one idx file (gzip-compressed or not)."""
    return _read_idx(path)[0]


def _read_idx(path: Path) -> tuple[np.ndarray, str]:
    """One idx file's array and the SHA-256 of its decompressed bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise SieveError(f"cannot read idx file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise SieveError(f"{path} is not an idx file (bad magic number); expected MNIST-style idx data")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise SieveError(f"idx file {path} is truncated (header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header < count * dtype.itemsize:
        raise SieveError(f"idx file {path} is truncated: header promises shape {shape}")
    return (np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape),
            hashlib.sha256(raw).hexdigest())


def _find(directory: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``directory`` (also the dotted variant ``…idx3.ubyte``)."""
    for name in (stem, stem + ".gz", stem.replace("-ubyte", ".ubyte"), stem.replace("-ubyte", ".ubyte") + ".gz"):
        cand = directory / name
        if cand.is_file():
            return cand
    return None


@dataclass
class IdxData:
    """Raw uint8 images (N×28×28) and labels of whatever parts a directory holds."""

    train_images: np.ndarray | None
    train_labels: np.ndarray | None
    test_images: np.ndarray
    test_labels: np.ndarray
    directory: Path
    digests: dict[str, str] = dataclasses.field(default_factory=dict)   # "t10k-images" -> SHA-256

    @property
    def has_train(self) -> bool:
        return self.train_images is not None

    def fingerprint(self, part: str = "train") -> str:
        """SHA-256 (prefix) of the decoded images and labels of one part (memoised)."""
        memo = self.__dict__.setdefault("_fingerprints", {})
        if part not in memo:
            memo[part] = self._fingerprint(part)
        return memo[part]

    def _fingerprint(self, part: str) -> str:
        h = hashlib.sha256()
        imgs, labs = ((self.train_images, self.train_labels) if part == "train"
                      else (self.test_images, self.test_labels))
        if imgs is None:
            return "none"
        h.update(np.ascontiguousarray(imgs).tobytes())
        h.update(np.ascontiguousarray(labs).tobytes())
        return h.hexdigest()[:16]

    @property
    def name(self) -> str | None:
        """``fashion-mnist`` or ``mnist`` when the files are a known set (by content), else None."""
        return identify_idx(self.digests)

    @property
    def classes(self) -> list[str]:
        return idx_classes(self.name or "mnist")


def _pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray, dict[str, str]] | None:
    img_path = _find(directory, f"{prefix}-images-idx3-ubyte")
    lab_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if img_path is None and lab_path is None:
        return None
    if img_path is None or lab_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise SieveError(f"{directory} has only half of the {prefix} set: {missing}[.gz] is missing")
    (images, image_digest), (labels, label_digest) = _read_idx(img_path), _read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise SieveError(f"{img_path} and {lab_path} do not match: images {images.shape}, labels {labels.shape}")
    if images.dtype != np.uint8:
        raise SieveError(f"{img_path} holds {images.dtype} pixels; expected uint8 idx images")
    labels = labels.astype(np.int64)
    labels.flags.writeable = False      # shared by the memo below: nobody may change it
    return images, labels, {f"{prefix}-images": image_digest, f"{prefix}-labels": label_digest}


def load_idx_dir(directory: str | Path) -> IdxData:
    """Read the ``train-*`` (optional) and ``t10k-*`` idx files of ``directory``.

    The decoded arrays are read-only, so the last few directories are memoised (keyed by
    every file's name, size and mtime): the search loads the same model many times.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SieveError(f"data directory {directory} does not exist; pass a directory of MNIST-style idx files")
    stamp = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()))
    return _load_idx_dir(directory, stamp)


@functools.lru_cache(maxsize=4)
def _load_idx_dir(directory: Path, stamp: tuple) -> IdxData:
    test = _pair(directory, "t10k")
    train = _pair(directory, "train")
    if test is None:
        raise SieveError(f"no MNIST-style test set in {directory}: expected t10k-images-idx3-ubyte[.gz] "
                         "and t10k-labels-idx1-ubyte[.gz] (train-* files optional)")
    return IdxData(train[0] if train else None, train[1] if train else None, test[0], test[1], directory,
                   {**test[2], **(train[2] if train else {})})
