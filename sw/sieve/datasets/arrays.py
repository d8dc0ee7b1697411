"""Data given as arrays: an ``.npz`` with ``x`` (N×C×H×W float32, already preprocessed for the
model) and ``y`` (integer labels), optionally ``classes`` (N_classes strings).

This is the form for data SIEVE has no reader for: the user preprocesses it their way and
saves it with ``numpy.savez(path, x=x, y=y)``.  The file is read with ``allow_pickle=False``
(object arrays are refused, never unpickled).  Splits follow the test-only rule of
:mod:`sieve.data` (even/odd halves, interleaved by class).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import Dataset, split_test_only, to_split
from ..errors import SieveError
from .identity import check_name, known_classes

__all__ = ["load_npz", "check_fits"]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SieveError(f"data file {path} does not exist; pass an .npz with x (N x C x H x W float32) and y (labels)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: np.asarray(archive[k]) for k in archive.files if k in ("x", "y", "classes")} | \
                {"_files": np.asarray(archive.files)}
    except Exception as exc:  # noqa: BLE001 - not a zip, object arrays, truncation: one problem
        raise SieveError(f"cannot read {path} as an .npz of arrays ({_one_line(exc)}); "
                         "save it with numpy.savez(path, x=x, y=y)") from None


def load_npz(data: str | Path, dataset: str | None = None) -> Dataset:
    """The :class:`Dataset` of an ``.npz`` (whole splits); ``dataset`` names it (class names too)."""
    path = Path(data)
    check_name(dataset)
    arrays = _read(path)
    if "x" not in arrays or "y" not in arrays:
        held = ", ".join(str(f) for f in arrays["_files"]) or "nothing"
        raise SieveError(f"{path} holds {held}; it needs arrays x (N x C x H x W float32, preprocessed) "
                         "and y (integer labels)")
    x, y = arrays["x"], arrays["y"]
    if x.dtype != np.float32:
        raise SieveError(f"{path}: x is {x.dtype}; save it as float32 (x.astype(numpy.float32)), already preprocessed")
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or len(y) < 2:
        raise SieveError(f"{path}: x has shape {x.shape} and y {y.shape}; need x N x C x H x W and y N labels, N >= 2")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise SieveError(f"{path}: y must hold integer class indices >= 0, got {y.dtype} from {y.min()} to {y.max()}")
    if not np.isfinite(x).all():
        raise SieveError(f"{path}: x holds {int(np.size(x) - np.isfinite(x).sum())} NaN/Inf values; "
                         "preprocess to finite numbers")
    classes = _classes(arrays.get("classes"), int(y.max()) + 1, dataset, path)
    y = y.astype(np.int64)
    val_idx, test_idx = split_test_only(y, class_ordered=True)
    return Dataset(dataset or path.stem, classes, to_split(x[val_idx], y[val_idx]),
                   to_split(x[test_idx], y[test_idx]), str(path))


def _classes(names: np.ndarray | None, count: int, dataset: str | None, path: Path) -> list[str]:
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) < count:
            raise SieveError(f"{path}: classes must be a 1-D string array with at least {count} names, "
                             f"got {names.dtype} {names.shape}")
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    known = known_classes(dataset) if dataset else None
    return known if known is not None and len(known) >= count else [str(c) for c in range(count)]


@torch.no_grad()
def check_fits(model: torch.nn.Module, dataset: Dataset, name: str) -> None:
    """One line if ``model`` cannot take the dataset's inputs or has fewer outputs than classes."""
    shape = "x".join(str(d) for d in dataset.input_shape)
    try:
        logits = model(dataset.val.images[:1])
    except RuntimeError as exc:
        raise SieveError(f"{name} cannot take the {shape} inputs of {dataset.source} "
                         f"({_one_line(exc)[:160]}); preprocess x to the model's input shape") from None
    top = int(max(dataset.val.labels.max(), dataset.test.labels.max()))
    if logits.ndim != 2 or logits.shape[1] <= top:
        raise SieveError(f"{name} gives {tuple(logits.shape[1:])} outputs per image but {dataset.source} "
                         f"has class index {top}; labels must be below the model's number of classes")
