"""Presets are bit-identical to ml_dtypes, a library nobody here wrote, on >= 10^7 values each."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from sieve import PRESETS, decode, encode

N_RANDOM = 10_000_000

SPECIAL_BITS = np.array(
    [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,
     0x7FFFFFFF, 0xFFFFFFFF, 0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF],
    dtype=np.uint32,
)


def inputs(fmt, rng) -> np.ndarray:
    """10^7 uniformly random bit patterns (the whole exponent range, NaN and Inf included), a
    dense band around the format's range, every fp32 that is a midpoint of two codes, and the specials."""
    uniform = rng.integers(0, 2 ** 32, N_RANDOM, dtype=np.uint64).astype(np.uint32)
    lo = max(1, 127 + int(np.log2(fmt.min_value)) - 3)
    hi = min(254, 127 + int(np.log2(fmt.max_value)) + 3)
    band = (rng.integers(lo, hi + 1, 1_000_000, dtype=np.uint32) << 23) | rng.integers(0, 1 << 23, 1_000_000, dtype=np.uint32)
    band |= rng.integers(0, 2, 1_000_000, dtype=np.uint32) << 31
    table = np.sort(decode(np.arange(1 << fmt.width), fmt).astype(np.float64))
    table = table[np.isfinite(table)]
    mids = ((table[1:] + table[:-1]) / 2).astype(np.float32).view(np.uint32)
    return np.concatenate([uniform, band, mids, mids ^ np.uint32(1), SPECIAL_BITS]).view(np.float32)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_matches_ml_dtypes(name):
    fmt = PRESETS[name]
    T = getattr(ml_dtypes, name)
    x = inputs(fmt, np.random.default_rng(abs(hash(name)) % 2 ** 32))
    with np.errstate(all="ignore"):
        ref = x.astype(T)
    view = np.uint8 if fmt.width <= 8 else np.uint16
    ref_codes = ref.view(view)
    got = encode(x, fmt)
    bad = np.nonzero(ref_codes != got)[0]
    assert bad.size == 0, f"{name}: {bad.size} codes differ, first x=0x{x.view(np.uint32)[bad[0]]:08X}: ml_dtypes {ref_codes[bad[0]]:#x}, sieve {got[bad[0]]:#x}"
    ref_values = ref.astype(np.float32)
    values = decode(got, fmt)
    same = (ref_values.view(np.uint32) == values.view(np.uint32)) | (np.isnan(ref_values) & np.isnan(values))
    assert same.all(), f"{name}: decoded values differ"
    # every code decodes like ml_dtypes
    all_codes = np.arange(1 << fmt.width, dtype=view)
    ref_all = all_codes.view(T).astype(np.float32)
    ours = decode(all_codes, fmt)
    assert (np.isnan(ref_all) == np.isnan(ours)).all()
    ok = ~np.isnan(ours)
    assert np.array_equal(ref_all[ok].view(np.uint32), ours[ok].view(np.uint32))
