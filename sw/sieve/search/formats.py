"""Candidate formats for one tensor, derived from its exponent histogram (no model runs).

Two families: the dissertation's (:func:`cover_format`, :func:`coverage_bias`: exponent width
and bias from how many observed binades they cover) and the default strategy's ladder
(:func:`ladder`: for every code width, the exponent width and bias that minimise an analytic
estimate of the relative quantization error).  Also the memory accounting of a plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from ..blockfmt import BlockFormat, ChannelFormat, is_layout_format, layout_bits
from ..cfloat import Format, FormatError
from ..histograms import EXP_OFFSET, ExponentHistogram
from ..sparse_storage import stored_bits
from ..qeval import TensorInfo

__all__ = ["cover_format", "coverage_bias", "format_range", "Candidate", "ladder", "relative_error",
           "plan_bits", "plan_key", "MAX_BIAS", "FAMILIES", "family_ladder"]

MAX_BIAS = 127  # keeps Min >= 2^-126 (a normal fp32), where every engine works on plain bit patterns


def format_range(fmt: Format) -> tuple[int, int]:
    """Binade exponents a format represents as normals: ``[1 - bias, top - bias]``."""
    return fmt.min_exponent, fmt.max_exponent


def _legal_bias(exp_bits: int, bias: int) -> int:
    top = (1 << exp_bits) - 1
    return int(min(max(bias, top - 127), MAX_BIAS))


def cover_format(hist: ExponentHistogram, man_bits: int, signed: bool = True) -> Format:
    """The deterministic format covering every observed binade: the smallest exponent width whose
    ``2^E - 1`` normal binades span ``[min_exp, max_exp]``, bias putting ``max_exp`` at the top."""
    lo, hi = hist.exponent_range()
    span = hi - lo + 1
    exp_bits = min(7, max(1, math.ceil(math.log2(span + 1))))  # 8 bits would need bias > MAX_BIAS
    bias = _legal_bias(exp_bits, (1 << exp_bits) - 1 - hi)
    return Format(exp_bits, man_bits, bias, signed=signed)


def coverage_bias(hist: ExponentHistogram, exp_bits: int) -> tuple[int, float]:
    """The bias maximising the fraction of elements whose binade is representable, and that fraction.

    Ties go to the window reaching the largest values (the dissertation keeps large values).
    """
    top = (1 << exp_bits) - 1
    lo, hi = hist.exponent_range()
    best_bias, best_cov = _legal_bias(exp_bits, top - hi), -1.0
    for t in range(hi, lo - 1, -1):  # t: the largest representable binade
        bias = _legal_bias(exp_bits, top - t)
        cov = hist.coverage(1 - bias, top - bias)
        if cov > best_cov + 1e-12:
            best_bias, best_cov = bias, cov
    return best_bias, best_cov


def relative_error(hist: ExponentHistogram, fmt: Format) -> float:
    """Analytic estimate of ``E[(q(x) - x)^2] / E[x^2]`` over the histogram's elements.

    Per binade ``e``: in range, uniform rounding noise ``4^(e-M)/12``; the binade just below Min
    rounds to 0 or Min (``Min^2/12``); lower binades flush to zero (their energy); binades above
    Max saturate (``(1.5*2^e - Max)^2``).  Coarse, but it ranks formats of one width well.
    """
    e = np.arange(hist.counts.size) - EXP_OFFSET
    c = hist.counts.astype(np.float64)
    if c.sum() == 0:
        return 0.0
    energy = (7.0 / 3.0) * np.ldexp(1.0, 2 * e)
    lo, hi = format_range(fmt)
    err = np.where(e > hi, (1.5 * np.ldexp(1.0, e) - fmt.max_value) ** 2,
                   np.where(e >= lo, np.ldexp(1.0, 2 * (e - fmt.man_bits)) / 12.0,
                            np.where(e == lo - 1, fmt.min_normal ** 2 / 12.0, energy)))
    return float((c * err).sum() / (c * energy).sum())


@dataclass(frozen=True)
class Candidate:
    fmt: Format
    rel_error: float

    @property
    def width(self) -> int:
        return self.fmt.width


def ladder(hist: ExponentHistogram, signed: bool, max_width: int = 16) -> list[Candidate]:
    """One candidate per code width (ascending): the (E, M, bias) with the least relative error."""
    lo, hi = hist.exponent_range()
    out: list[Candidate] = []
    for width in range(2 if signed else 1, max_width + 1):
        best: Candidate | None = None
        for exp_bits in range(1, min(8, width - int(signed)) + 1):
            man_bits = width - int(signed) - exp_bits
            if man_bits > 23:
                continue
            top = (1 << exp_bits) - 1
            biases = sorted({_legal_bias(exp_bits, top - t) for t in range(lo - 1, hi + 2)})
            for bias in biases:
                try:
                    fmt = Format(exp_bits, man_bits, bias, signed=signed)
                except FormatError:
                    continue
                cand = Candidate(fmt, relative_error(hist, fmt))
                if best is None or cand.rel_error < best.rel_error - 1e-15:
                    best = cand
        if best is not None:
            out.append(best)
    return out


FAMILIES = ("scalar", "channel", "block", "all")


def family_ladder(hist: ExponentHistogram, signed: bool, family: str = "scalar", max_width: int = 16,
                  block: int = 32) -> list[Candidate]:
    """The candidates of a ``--family`` (issue 16), by element width: ``scalar`` is :func:`ladder`;
    ``channel`` (weights) its formats with one bias per output channel (``ch4:``); ``block`` the
    signed elements with subnormals whose exponent width fits the histogram best once a block
    scale (E8M0, ``block`` elements) puts each block's largest binade at the top (``mx<k>:``);
    ``all`` every one of them.  ``rel_error`` is the per-tensor estimate with the range the
    layout adapts put at the observed top: a ranking aid, the model runs decide."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    scalar = ladder(hist, signed, max_width)
    out = list(scalar) if family in ("scalar", "all") else []
    if family in ("channel", "all") and hist.kind == "weight":
        out += [Candidate(ChannelFormat(c.fmt.with_(signed=True)), c.rel_error) for c in ladder(hist, True, max_width)]
    if family in ("block", "all"):
        hi = hist.exponent_range()[1]
        for width in range(3, min(max_width, 9) + 1):
            best: Candidate | None = None
            for exp_bits in range(1, min(6, width - 1) + 1):
                element = Format(exp_bits, width - 1 - exp_bits, subnormals=True)
                shifted = element.with_(bias=_legal_bias(exp_bits, element.max_exponent + element.bias - hi))
                cand = Candidate(BlockFormat(element, block), relative_error(hist, shifted))
                if best is None or cand.rel_error < best.rel_error - 1e-15:
                    best = cand
            out.append(best)
    return sorted(out, key=lambda c: (c.width, c.rel_error))


def plan_bits(plan: Mapping[str, Format], infos: Iterable[TensorInfo]) -> dict:
    """Memory of a plan: weights weighted by parameter count, activations by elements per image.

    A pruned weight (an info carrying a ``sparse`` layout, :mod:`sieve.sparse_storage`) counts
    only its kept values plus the cheaper of a bitmap and relative indices; the mean stays per
    *original* element."""
    sums = {"weight": [0, 0], "activation": [0, 0]}
    for info in infos:
        fmt = plan.get(info.name)
        if is_layout_format(fmt):  # block scales / per-channel biases counted (dense storage)
            sums[info.kind][0] += layout_bits(fmt, info)
        else:
            sums[info.kind][0] += stored_bits(getattr(info, "sparse", None), info.elements, fmt.width if fmt is not None else 32)
        sums[info.kind][1] += info.elements
    bits_w, n_w = sums["weight"]
    bits_a, n_a = sums["activation"]
    mean = (bits_w + bits_a) / max(1, n_w + n_a)
    return {
        "mean_bits_weights": bits_w / max(1, n_w),
        "mean_bits_activations": bits_a / max(1, n_a),
        "mean_bits": mean,
        "compression_ratio": 32.0 / mean if mean else float("inf"),
        "total_bits": bits_w + bits_a,
    }


def plan_key(plan: Mapping[str, Format]) -> str:
    """Canonical text of a plan (sorted ``name=format`` pairs): the identity used by every cache."""
    return ";".join(f"{k}={plan[k]}" for k in sorted(plan))
