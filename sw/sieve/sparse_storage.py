"""What a pruned weight tensor costs in memory: the kept values plus where they are.

For each tensor the cheapest of three encodings is counted (the choice depends on the value
width the search gives the tensor, so it is made per tensor and per plan):

* ``dense``  – every element, zeros included: ``elements · width``;
* ``bitmap`` – one presence bit per *original* element plus the kept values:
  ``elements + nonzero · width``;
* ``relative`` – Deep Compression's CSR-style relative indices: each kept value carries the
  distance to the previous one (row-major order) in ``b`` bits; a distance above ``2^b`` costs
  filler entries (a stored zero and its index), so ``entries_b · (width + b)`` with ``b`` from 1
  to 8 chosen per tensor.

Zeros are exact in every Format (a quantized 0 stays 0), so a pruned model keeps its sparsity
through the search.  :func:`stored_bits` is what ``sieve.search.formats.plan_bits`` uses; the
mean bits of a plan stay *per original weight* (the denominator is the dense element count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .qeval import TensorInfo

MAX_INDEX_BITS = 8


@dataclass(frozen=True)
class SparseLayout:
    """Where a tensor's non-zero values are, reduced to what the encodings' costs need."""

    elements: int
    nonzero: int
    relative_entries: tuple[int, ...]    # [b - 1] → entries (kept + fillers) with b-bit indices


def relative_entries(positions: np.ndarray, index_bits: int) -> int:
    """Entries of a relative-index encoding of sorted flat ``positions`` with ``index_bits``-bit
    distances (a distance d ≥ 1 is stored as d − 1, so one entry reaches ``2^b`` positions on)."""
    if positions.size == 0:
        return 0
    gaps = np.diff(positions, prepend=-1).astype(np.int64)
    reach = 1 << index_bits
    return int(((gaps + reach - 1) // reach).sum())


def sparse_layout(weight: torch.Tensor) -> SparseLayout | None:
    """The layout of ``weight`` (None when it has no zero: nothing to gain)."""
    flat = weight.detach().reshape(-1)
    positions = torch.nonzero(flat).reshape(-1).numpy()
    if positions.size == flat.numel():
        return None
    entries = tuple(relative_entries(positions, b) for b in range(1, MAX_INDEX_BITS + 1))
    return SparseLayout(int(flat.numel()), int(positions.size), entries)


def encodings(layout: SparseLayout, width: int) -> dict[str, int]:
    """Bits of every encoding of ``layout`` with ``width``-bit values (``relative`` at its best b)."""
    best_b = min(range(1, MAX_INDEX_BITS + 1), key=lambda b: layout.relative_entries[b - 1] * (width + b))
    return {"dense": layout.elements * width,
            "bitmap": layout.elements + layout.nonzero * width,
            f"relative{best_b}": layout.relative_entries[best_b - 1] * (width + best_b)}


def stored_bits(layout: SparseLayout | None, elements: int, width: int) -> int:
    """Bits of the cheapest encoding (plain ``elements · width`` for a dense tensor)."""
    if layout is None:
        return elements * width
    return min(encodings(layout, width).values())


def cheapest(layout: SparseLayout | None, elements: int, width: int) -> tuple[str, int]:
    """(encoding name, bits) of the cheapest encoding."""
    if layout is None:
        return "dense", elements * width
    return min(encodings(layout, width).items(), key=lambda kv: kv[1])


@dataclass(frozen=True)
class SparseTensorInfo(TensorInfo):
    """A weight's :class:`~sieve.qeval.TensorInfo` plus where its non-zero values are."""

    sparse: SparseLayout | None = None


def with_sparse_layouts(model: torch.nn.Module, infos: list) -> list:
    """``infos`` (:class:`sieve.qeval.TensorInfo`) with the :class:`SparseLayout` of every weight
    that has zeros attached (as :class:`SparseTensorInfo`), so that the plan's memory counts
    only the kept values plus their index (:func:`stored_bits`)."""
    modules = dict(model.named_modules())
    out = []
    for info in infos:
        module = modules.get(info.module_name) if info.kind == "weight" else None
        layout = sparse_layout(module.weight) if module is not None else None
        out.append(info if layout is None else SparseTensorInfo(info.name, info.kind, info.elements,
                                                                info.module_name, info.shape, sparse=layout))
    return out

