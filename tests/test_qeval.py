"""qeval: torch-native quantization == the NumPy golden emulator, bit for bit; plans apply as specified."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import sieve
from sieve import Format
from sieve.errors import SieveError
from sieve.qeval import apply_plan, quantizable_tensors, quantize_tensor


def _corner_values(fmt: Format) -> np.ndarray:
    """Every corner of the contract for ``fmt``, plus neighbours one ulp away."""
    base = [0.0, -0.0, np.inf, -np.inf, np.nan, fmt.max_value, fmt.min_value, fmt.min_normal,
            fmt.min_value / 2, fmt.min_normal / 2, fmt.max_value * 2, 1.0, 1.5, 3.0, 1e-45, 1e-40,
            3.4e38, 1e-30, 1e30]
    with np.errstate(over="ignore"):  # 2 * Max past float32's range is meant to become Inf
        vals = np.array(base, dtype=np.float32)
        up = np.nextafter(vals, np.float32(np.inf))
        down = np.nextafter(vals, np.float32(-np.inf))
    # exact ties between neighbouring representable values
    grid = sieve.decode_table(fmt)[:: max(1, (1 << fmt.width) // 64)] if fmt.width <= 16 else np.zeros(0, np.float32)
    grid = grid[np.isfinite(grid)]
    ties = ((grid[:-1].astype(np.float64) + grid[1:]) / 2).astype(np.float32) if grid.size > 1 else grid
    allv = np.concatenate([vals, up, down, ties, -vals, -ties]).astype(np.float32)
    negnan = np.array([0xFFC00000, 0x7F800001, 0xFF800001], dtype=np.uint32).view(np.float32)
    return np.concatenate([allv, negnan])


def _random_values(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)
    scaled = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
    return np.concatenate([bits.view(np.float32), scaled.astype(np.float32)])


FORMATS = [
    *(Format(e, m) for e, m in itertools.product((1, 2, 3, 4, 5, 7), (0, 1, 2, 3, 6, 10, 23))),
    Format(8, 3, bias=128), Format(8, 0, bias=140),
    *(Format(e, m, signed=False) for e, m in itertools.product((1, 2, 3, 5), (0, 1, 4))),
    Format(3, 2, bias=-2), Format(2, 1, bias=8, signed=False), Format(4, 3, bias=20), Format(5, 2, bias=-40),
    Format(4, 3, subnormals=True), Format(3, 4, subnormals=True, rounding="truncate"),
    Format(4, 3, rounding="truncate"), Format(2, 0, rounding="truncate", signed=False),
    Format(3, 0, subnormals=True), Format(4, 3, bias=11, subnormals=True, specials="ieee"),
    Format(5, 2, specials="ieee", overflow="inf", subnormals=True),
    Format(4, 3, specials="fn", overflow="nan", subnormals=True),
    Format(4, 3, specials="fn", overflow="saturate"), Format(3, 0, specials="fn", overflow="nan"),
    Format(4, 3, specials="fnuz", overflow="nan", subnormals=True), Format(5, 2, specials="fnuz"),
    Format(4, 3, specials="ieee", signed=False), Format(3, 2, specials="fn", overflow="nan", signed=False),
    Format(8, 23, specials="ieee", overflow="inf", subnormals=True),
    Format(8, 7, specials="ieee", overflow="inf", subnormals=True, bias=127),
    *sieve.PRESETS.values(),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_quantize_tensor_bit_identical_to_emulator(fmt: Format) -> None:
    x = np.concatenate([_corner_values(fmt), _random_values(3000, hash(str(fmt)) % 2**32)])
    want = sieve.quantize(x, fmt).view(np.uint32)
    got = quantize_tensor(torch.from_numpy(x.copy()), fmt).numpy().view(np.uint32)
    bad = np.flatnonzero(want != got)
    assert bad.size == 0, f"{fmt}: input {x[bad[0]]!r} ({x.view(np.uint32)[bad[0]]:#x}) -> {got[bad[0]]:#x}, emulator {want[bad[0]]:#x}"


def test_quantize_tensor_keeps_shape_and_input() -> None:
    x = torch.randn(2, 3, 4, 5)
    before = x.clone()
    y = quantize_tensor(x, Format(3, 2, signed=False))
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.equal(x, before)
    assert (y >= 0).all()


def test_quantize_tensor_rejects_integer_tensor() -> None:
    with pytest.raises(TypeError):
        quantize_tensor(torch.arange(4), Format(4, 3))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_quantizable_tensors_names_and_sizes() -> None:
    infos = quantizable_tensors(Tiny(), (1, 8, 8))
    assert [(i.name, i.kind, i.elements) for i in infos] == [
        ("conv.input", "activation", 64), ("conv.weight", "weight", 36),
        ("fc.input", "activation", 144), ("fc.weight", "weight", 720)]


def test_apply_plan_matches_emulator_layer_by_layer() -> None:
    torch.manual_seed(0)
    model = Tiny().eval()
    x = torch.randn(3, 1, 8, 8)
    plan = {"conv.input": Format(3, 2), "conv.weight": Format(2, 1, bias=3), "fc.input": Format(2, 2, signed=False),
            "fc.weight": Format(4, 0)}
    q = apply_plan(model, plan)
    # reference computed with the NumPy emulator
    w1 = torch.from_numpy(sieve.quantize(model.conv.weight.detach().numpy(), plan["conv.weight"]))
    w2 = torch.from_numpy(sieve.quantize(model.fc.weight.detach().numpy(), plan["fc.weight"]))
    a1 = torch.from_numpy(sieve.quantize(x.numpy(), plan["conv.input"]))
    h = torch.relu(nn.functional.conv2d(a1, w1, model.conv.bias)).flatten(1)
    a2 = torch.from_numpy(sieve.quantize(h.detach().numpy(), plan["fc.input"]))
    want = nn.functional.linear(a2, w2, model.fc.bias)
    with torch.no_grad():
        got = q(x)
    assert torch.equal(got, want)
    assert not torch.equal(model.conv.weight, q.conv.weight)  # the original is untouched


def test_apply_plan_rejects_unknown_tensor() -> None:
    with pytest.raises(SieveError, match="nope.weight"):
        apply_plan(Tiny(), {"nope.weight": Format(4, 3)})
    with pytest.raises(SieveError, match="not a sieve.Format"):
        apply_plan(Tiny(), {"fc.weight": "e4m3"})


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.specials == "none" and not f.subnormals], ids=str)
def test_fast_path_bit_identical_on_finite_inputs(fmt: Format) -> None:
    """Finite tensors take the search's fast path: it must agree with the emulator too."""
    x = np.concatenate([_corner_values(fmt), _random_values(3000, 7)])
    x = x[np.isfinite(x)]
    want = sieve.quantize(x, fmt).view(np.uint32)
    n = len(x) // 7 * 7
    got = quantize_tensor(torch.from_numpy(x[:n].copy()).reshape(-1, 7), fmt).numpy().reshape(-1).view(np.uint32)
    bad = np.flatnonzero(want[:n] != got)
    assert bad.size == 0, f"{fmt}: {x[bad[0]]!r} -> {got[bad[0]]:#x}, emulator {want[bad[0]]:#x}"
