"""The fused CPU rounding loop (``sieve.cpu_rounding``) is the plain path's integer recipe, bit for
bit: against the emulator on every corner of the contract, against the PyTorch sweeps (the GPU
path) on 2**24 bit patterns spread over every exponent, and it reports exactly the inputs the
general path must take (Inf and NaN)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import sieve
from sieve import Format
from sieve.cpu_rounding import plain_parameters, round_plain
from sieve.qeval import _round_plain_torch, quantize_tensor

from .test_qeval import _corner_values, _random_values

# the plain path's formats: signed/unsigned, nearest/truncate, no/one/several mantissa bits,
# any bias (one that puts min normal at the bottom of float32's normal range too)
PLAIN_FORMATS = [Format(e, m, signed=s, rounding=r)
                 for e, m, s, r in itertools.product((1, 2, 4, 5, 7), (0, 1, 3, 7, 23), (True, False),
                                                     ("nearest_even", "truncate"))]
PLAIN_FORMATS += [Format(4, 3, bias=20), Format(5, 2, bias=-40), Format(7, 3, bias=127), Format(3, 4, bias=-100, signed=False)]
assert all(f.specials == "none" and not f.subnormals and f.min_normal >= 2.0**-126 for f in PLAIN_FORMATS)


def _round(x: np.ndarray, fmt: Format) -> tuple[np.ndarray, bool]:
    src = np.ascontiguousarray(x, dtype=np.float32).view(np.int32)
    dst = np.empty_like(src)
    special = round_plain(src, dst, plain_parameters(fmt))
    return dst.view(np.uint32), special


@pytest.mark.parametrize("fmt", PLAIN_FORMATS, ids=str)
def test_the_loop_matches_the_emulator_on_every_finite_corner(fmt) -> None:
    x = np.concatenate([_corner_values(fmt), _random_values(20000, 7)])
    x = x[np.isfinite(x)]
    got, special = _round(x, fmt)
    want = sieve.quantize(x, fmt).view(np.uint32)
    bad = np.flatnonzero(want != got)
    assert not special
    assert bad.size == 0, f"{fmt}: {x.view(np.uint32)[bad[0]]:#x} -> {got[bad[0]]:#x}, emulator {want[bad[0]]:#x}"


@pytest.mark.parametrize("fmt", [Format(4, 3), Format(2, 0, signed=False), Format(5, 2, rounding="truncate"),
                                 Format(7, 7, bias=40, signed=False, rounding="truncate")], ids=str)
def test_the_loop_matches_the_pytorch_sweeps_on_every_exponent(fmt) -> None:
    """2**24 patterns: every sign and exponent field, with 2**15 mantissas each (the low bits,
    where ties and carries happen, run through all values; the high bits are random)."""
    rng = np.random.default_rng(24)
    low = np.arange(2**15, dtype=np.uint32)
    high = rng.integers(0, 2**8, size=2**9, dtype=np.uint32) << np.uint32(15)
    sign_exponent = np.arange(2**9, dtype=np.uint32) << np.uint32(23)
    bits = (sign_exponent[:, None] | high[:, None] | low[None, :]).reshape(-1)
    finite = (bits & 0x7F800000) != 0x7F800000
    bits = bits[finite]
    got, special = _round(bits.view(np.float32), fmt)
    t = torch.from_numpy(bits.view(np.int32).copy())
    want = _round_plain_torch(t.view(torch.float32), t, fmt).numpy().view(np.uint32)
    assert not special
    bad = np.flatnonzero(want != got)
    assert bad.size == 0, f"{fmt}: {bits[bad[0]]:#x} -> {got[bad[0]]:#x}, sweeps {want[bad[0]]:#x}"


@pytest.mark.parametrize("value, signed, flagged", [
    (np.inf, True, True), (-np.inf, True, True), (np.nan, True, True),
    (np.inf, False, True), (np.nan, False, True),
    (-np.inf, False, False), (-np.nan, False, False),  # unsigned: every negative pattern is +0, no special case
])
def test_inf_and_nan_send_the_tensor_to_the_general_path(value, signed, flagged) -> None:
    fmt = Format(4, 3, signed=signed)
    x = np.array([1.0, value, 2.0], dtype=np.float32)
    got, special = _round(x, fmt)
    assert special is flagged
    # whatever the loop reports, quantize_tensor gives the contract's answer
    want = sieve.quantize(x, fmt).view(np.uint32)
    assert (quantize_tensor(torch.from_numpy(x), fmt).numpy().view(np.uint32) == want).all()
    if not flagged:
        assert (got == want).all() and got[1] == 0


def test_channels_last_and_empty_tensors_keep_their_layout() -> None:
    fmt = Format(3, 2, signed=False)
    x = torch.randn(3, 5, 4, 6).relu()
    cl = x.contiguous(memory_format=torch.channels_last)
    got = quantize_tensor(cl, fmt)
    assert got.stride() == cl.stride()
    assert torch.equal(got.contiguous().view(torch.int32), quantize_tensor(x, fmt).view(torch.int32))
    empty = quantize_tensor(torch.zeros(0, 4), fmt)
    assert empty.shape == (0, 4)


def test_a_weight_that_needs_grad_rounds_without_copying_the_graph() -> None:
    w = torch.nn.Parameter(torch.randn(8, 3))
    with torch.no_grad():
        got = quantize_tensor(w, Format(4, 3))
    assert torch.equal(got, torch.from_numpy(sieve.quantize(w.detach().numpy(), Format(4, 3))))


def test_the_compiled_loop_is_not_cached_on_disk() -> None:
    """numba's on-disk cache is pickled; SIEVE never unpickles, so the loop compiles per process."""
    from numba.core.caching import NullCache

    from sieve.cpu_rounding import _compiled

    assert isinstance(_compiled()._cache, NullCache)
