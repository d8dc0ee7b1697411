"""Datasets as the rest of SIEVE sees them: a validation split the search may look at and a
held-out test split every reported accuracy is also given on, already preprocessed for the
model that will consume them.

Readers for the individual formats live in :mod:`sieve.datasets`; this module holds the
containers and the split rules that every dataset shares:

* datasets with a training set (Fashion-MNIST): the model trains on ``train[:55000]``,
  ``val = train[55000:]``, ``test = t10k``;
* datasets with only a test set (MNIST t10k, the CIFAR-10 JPEG tar, an ImageNet folder):
  ``val`` = even indices, ``test`` = odd indices of the class-ordered list, so both halves
  are stratified.  When the source is ordered *by class*, each half is then interleaved
  class by class (k-th image of every class, then the (k+1)-th ...) so that a truncated
  prefix (``val=``/``test=``) still covers every class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import SieveError

if TYPE_CHECKING:
    from .preprocess import Preprocess


@dataclass
class Split:
    """Preprocessed images (float32, N×C×H×W) and their int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, count: int | None) -> "Split":
        """The first ``count`` images (all of them when ``count`` is None)."""
        if count is None or count >= len(self):
            return self
        if count < 0:
            raise SieveError(f"cannot keep {count} images of a split; pass a count >= 0")
        return Split(self.images[:count], self.labels[:count])


@dataclass
class Dataset:
    """A named dataset with its class names, a validation and a disjoint test split, and the
    preprocessing that made them (None when unknown, e.g. arrays given already preprocessed)."""

    name: str
    classes: list[str]
    val: Split
    test: Split
    source: str
    preprocess: "Preprocess | None" = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one model input, as the data has it."""
        return tuple(int(d) for d in self.val.images.shape[1:])

    def truncated(self, val: int | None = None, test: int | None = None) -> "Dataset":
        """The same dataset with each split cut to a deterministic prefix."""
        return dataclasses.replace(self, val=self.val.head(val), test=self.test.head(test))


def even_odd(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the validation (even) and test (odd) halves of a test-only dataset."""
    idx = np.arange(count)
    return idx[0::2], idx[1::2]


def interleave_by_class(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Reorder ``indices`` round-robin over classes (stable inside each class).

    A class-sorted half becomes ``[c0[0], c1[0], …, c0[1], c1[1], …]`` so that any prefix is
    as balanced as it can be.
    """
    labels_here = labels[indices]
    rank = np.zeros(len(indices), dtype=np.int64)
    for cls in np.unique(labels_here):
        where = np.flatnonzero(labels_here == cls)
        rank[where] = np.arange(len(where))
    order = np.lexsort((labels_here, rank))
    return indices[order]


def split_test_only(labels: np.ndarray, class_ordered: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test indices of a dataset that only has a test set (see module doc)."""
    val_idx, test_idx = even_odd(len(labels))
    if class_ordered:
        val_idx = interleave_by_class(val_idx, labels)
        test_idx = interleave_by_class(test_idx, labels)
    return val_idx, test_idx


def to_split(images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> Split:
    """A :class:`Split` from arrays (images already preprocessed float32 N×C×H×W)."""
    img = torch.as_tensor(images, dtype=torch.float32).contiguous()
    lab = torch.tensor(np.asarray(labels), dtype=torch.int64)   # a copy: never alias cached arrays
    return Split(img, lab)

