"""``sieve.encode / decode / quantize``: one entry point for every format SIEVE knows.

Why a module of its own: the scalar emulator (:mod:`sieve.emulator`) is the golden model that
:mod:`sieve.blockfmt` builds its block-scaled and per-channel layouts on.  Choosing between the
two here keeps that dependency one-way (blockfmt -> emulator) instead of a circle.
"""

from __future__ import annotations

import numpy as np

from . import blockfmt, emulator
from .cfloat import Format

__all__ = ["encode", "decode", "quantize"]


def _layout(fmt):
    """The block/channel layout format ``fmt`` names, or None for a scalar one."""
    if isinstance(fmt, Format):
        return None
    if isinstance(fmt, str):
        fmt = blockfmt.parse_format(fmt)
    return fmt if blockfmt.is_layout_format(fmt) else None


def encode(x, fmt) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Encode floats into ``fmt`` codes (:func:`sieve.emulator.encode`); a block or channel
    layout (``mx32:fp8_e4m3``, ``ch4:e4m3``) gives ``(codes, scale codes)`` or
    ``(codes, per-channel biases)`` (:func:`sieve.blockfmt.encode`)."""
    layout = _layout(fmt)
    return emulator.encode(x, fmt) if layout is None else blockfmt.encode(x, layout)


def decode(codes, fmt) -> np.ndarray:
    """Decode what :func:`encode` returned for ``fmt`` to float32 values."""
    layout = _layout(fmt)
    return emulator.decode(codes, fmt) if layout is None else blockfmt.decode(codes, layout)


def quantize(x, fmt) -> np.ndarray:
    """Round floats to the nearest ``fmt`` value: ``decode(encode(x, fmt), fmt)``."""
    layout = _layout(fmt)
    return emulator.quantize(x, fmt) if layout is None else blockfmt.quantize(x, layout)
