"""pack/unpack: exact inverses for every width 1..32, awkward lengths, documented bit order."""

from __future__ import annotations

import numpy as np
import pytest

from sieve import Format, pack, unpack


def format_of_width(w: int) -> Format:
    """Some legal format of exactly ``w`` bits."""
    if w <= 24:
        return Format(1, w - 1, bias=0, signed=False)
    return Format(8, w - 9, bias=127, signed=True, specials="ieee")


@pytest.mark.parametrize("w", range(1, 33))
@pytest.mark.parametrize("n", [0, 1, 7, 1001])
def test_round_trip(w, n):
    fmt = format_of_width(w)
    assert fmt.width == w
    rng = np.random.default_rng(w * 10_000 + n)
    codes = rng.integers(0, 1 << w, n, dtype=np.uint64).astype(fmt.code_dtype)
    if n:
        codes[0] = (1 << w) - 1  # all ones exercises every bit
    blob = pack(codes, fmt)
    assert isinstance(blob, bytes)
    assert len(blob) == (n * w + 7) // 8
    back = unpack(blob, fmt, n)
    assert back.dtype == fmt.code_dtype
    assert np.array_equal(back, codes)
    if n and (n * w) % 8:
        assert blob[-1] >> ((n * w) % 8) == 0  # padding bits are zero


def test_bit_order_is_lsb_first():
    fmt = format_of_width(3)
    # code0=0b001 -> bits 0..2, code1=0b010 -> bits 3..5, code2=0b101 -> bits 6..8 (crosses a byte)
    assert pack(np.array([1, 2, 5]), fmt) == bytes([0b01_010_001, 0b0000000_1])
    assert list(unpack(bytes([0b01_010_001, 0b1]), fmt, 3)) == [1, 2, 5]
    w12 = format_of_width(12)
    assert pack(np.array([0xABC, 0x123]), w12) == bytes([0xBC, 0x3A, 0x12])
    w16 = format_of_width(16)
    assert pack(np.array([0x1234]), w16) == bytes([0x34, 0x12])


def test_unpack_errors():
    fmt = format_of_width(5)
    with pytest.raises(ValueError, match="10 codes of 5 bits need 7 bytes, got 3"):
        unpack(b"abc", fmt, 10)
    with pytest.raises(ValueError, match="count must be >= 0"):
        unpack(b"", fmt, -1)
    with pytest.raises(TypeError, match="codes must be an integer array"):
        pack(np.zeros(3, np.float32), fmt)
