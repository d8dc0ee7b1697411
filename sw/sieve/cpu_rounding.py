"""The search's rounding on the CPU as one fused loop (numba): every element read once, written once.

Why: the search rounds every planned activation on every evaluation.  Written as PyTorch
operations, the rounding of :func:`sieve.qeval.quantize_tensor`'s plain path is about a dozen
whole-tensor sweeps and two int32 temporaries; on ResNet-20 (one thread, 5,000 validation
images) that was ~15 s of an 84 s search, beside 62 s of convolutions.  Fused into one loop that
LLVM vectorizes it costs about a fifth of that (a 100 x 16 x 32 x 32 activation: 0.27 ms
against 1.1 ms with warm memory, 6.5 ms when the temporaries are page-faulted in afresh), and
the search ran 73 s instead of 84-88 s.  numba rather than a C extension or ``torch.compile``:
it needs no compiler on the user's machine.  The loop is compiled once per process (about 0.4 s)
and not cached on disk: numba's cache files are pickles, and SIEVE unpickles nothing.

The loop works on int32 bit patterns and is the exact integer recipe of the plain path (see
:func:`sieve.qeval._round_plain_torch`): nearest-even (or truncating) rounding of the mantissa with
an unbounded exponent, saturation to ``max``, the no-subnormal underflow rule, the sign copied
from the input.  Its parameters come from :func:`plain_parameters`, which the PyTorch path uses
too, so both paths read the format the same way; ``tests/test_cpu_rounding.py`` checks the loop
against that path and against the emulator.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["PlainParameters", "plain_parameters", "round_plain", "SPECIAL_BITS", "float32_bits"]

SPECIAL_BITS = 0x7F800000  # a magnitude pattern at or above it is +-Inf or NaN


class PlainParameters(NamedTuple):
    """A format's plain-path rounding as int32 constants (:func:`plain_parameters`)."""

    magnitude_mask: int  # 0x7FFFFFFF (signed: drop the sign), or -1 (unsigned: negatives clamp to +0)
    sign_mask: int       # int32 min (signed: copy the input's sign bit), or 0
    shift: int           # mantissa bits dropped: 23 - man_bits
    half: int            # nearest-even: (1 << (shift - 1)) - 1, added before the mantissa is cut
    lsb: int             # nearest-even: 1 (the kept mantissa's last bit breaks ties), else 0
    keep: int            # mask of the kept bits
    low: int             # smallest nonzero magnitude pattern after rounding (nearest: min normal)
    high: int            # largest magnitude pattern: the format's max value
    zero_below: int      # a magnitude pattern below it becomes zero (the underflow rule)


def float32_bits(value: float) -> int:
    """int32 bit pattern of a value known to be an exact float32."""
    return int(np.array(value, dtype=np.float32).view(np.int32))


def plain_parameters(fmt) -> PlainParameters:
    """The constants of ``fmt``'s plain-path rounding (a :class:`sieve.Format` without special
    codes or subnormals).  Nearest-even: magnitudes in [min/2, min) round up to min (a power of
    two, so every rounding below it lands at or under min) and those below min/2 to zero;
    truncation: everything below min is zero."""
    shift = 23 - fmt.man_bits
    nearest = fmt.rounding == "nearest_even"
    rounds = nearest and shift > 0
    return PlainParameters(
        magnitude_mask=0x7FFFFFFF if fmt.signed else -1,
        sign_mask=-(2**31) if fmt.signed else 0,
        shift=shift,
        half=(1 << (shift - 1)) - 1 if rounds else 0,
        lsb=1 if rounds else 0,
        keep=~((1 << shift) - 1) if shift > 0 else -1,
        low=float32_bits(fmt.min_normal) if nearest else 0,
        high=float32_bits(fmt.max_value),
        zero_below=float32_bits(fmt.min_normal / 2) if nearest else float32_bits(fmt.min_normal),
    )


_kernel = None


def _compiled():
    """The numba loop, compiled on first use: importing numba and compiling cost a few tenths
    of a second, which commands that never round should not pay."""
    global _kernel
    if _kernel is None:
        from numba import njit

        @njit(cache=False, nogil=True)
        def kernel(src, dst, p):  # pragma: no cover - compiled; exercised through round_plain
            magnitude_mask, sign_mask, shift, half, lsb, keep, low, high, zero_below = (
                p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8])
            special = False
            for i in range(src.size):
                b = src[i]
                m = max(b & magnitude_mask, 0)
                special |= m >= SPECIAL_BITS
                out = (m + half + ((m >> shift) & lsb)) & keep  # cannot wrap: m < 2**31 - 2**23
                out = min(max(out, low), high)
                out = out if m >= zero_below else 0
                dst[i] = out | (b & sign_mask)
            return special

        _kernel = kernel
    return _kernel


def round_plain(src: np.ndarray, dst: np.ndarray, params: PlainParameters) -> bool:
    """Round the float32 bit patterns ``src`` (1-D int32, contiguous) into ``dst`` (same shape).

    Returns True when ``src`` holds an Inf or NaN (a negative one too, for a signed format); ``dst``
    is then not the contract's answer for those elements and the caller takes the general path.
    An unsigned format maps every negative pattern, -0 and negative NaN included, to +0.
    """
    return bool(_compiled()(src, dst, np.asarray(params, dtype=np.int32)))
