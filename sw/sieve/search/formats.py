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
from ..codec import quantize as _quantize
from ..histograms import EXP_OFFSET, ExponentHistogram
from ..sparse_storage import stored_bits
from ..qeval import TensorInfo

__all__ = ["cover_format", "coverage_bias", "format_range", "Candidate", "ladder", "relative_error",
           "plan_bits", "plan_key", "MAX_BIAS", "FAMILIES", "family_ladder", "bits_per_element",
           "measured_error"]

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
    return _relative_error(_occupied(hist), fmt)


def _occupied(hist: ExponentHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The histogram's occupied binades: exponents, counts, energy per element and the total
    energy — computed once per tensor, since a ladder rates ~2,000 formats against them (over all
    255 binades that was ~1.7 s of a resnet20 search)."""
    occupied = np.flatnonzero(hist.counts)
    e = occupied - EXP_OFFSET
    c = hist.counts[occupied].astype(np.float64)
    energy = (7.0 / 3.0) * np.ldexp(1.0, 2 * e)
    return e, c, energy, float((c * energy).sum())


def _relative_error(occupied, fmt: Format) -> float:
    e, c, energy, total = occupied
    if total == 0:
        return 0.0
    lo, hi = format_range(fmt)
    err = np.where(e > hi, (1.5 * np.ldexp(1.0, e) - fmt.max_value) ** 2,
                   np.where(e >= lo, np.ldexp(1.0, 2 * (e - fmt.man_bits)) / 12.0,
                            np.where(e == lo - 1, fmt.min_normal ** 2 / 12.0, energy)))
    return float((c * err).sum() / total)


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
    occupied = _occupied(hist)
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
                cand = Candidate(fmt, _relative_error(occupied, fmt))
                if best is None or cand.rel_error < best.rel_error - 1e-15:
                    best = cand
        if best is not None:
            out.append(best)
    return out


FAMILIES = ("scalar", "channel", "block", "all")


def bits_per_element(fmt, info=None) -> float:
    """Real stored bits per element of ``fmt`` on the tensor ``info`` (a
    :class:`~sieve.qeval.TensorInfo`): the code width of a scalar format; for a layout its element
    codes *plus* its side information (:func:`sieve.blockfmt.layout_bits`: an E8M0 scale per
    block of k — a 4-bit element with k = 32 is 4.25 bits — or the per-channel biases and their
    base), so that "narrower" means "cheaper" across families.  Without ``info`` (or its shape) a
    layout is charged its element width plus its side bits for a 32-element block / 1 per 64
    elements of a channel: an ordering aid only."""
    if not is_layout_format(fmt):
        return float(fmt.width)
    if info is not None and info.shape:
        return layout_bits(fmt, info) / max(1, info.elements)
    if isinstance(fmt, BlockFormat):
        return fmt.width + fmt.scale_bits / fmt.block
    return fmt.width + fmt.bias_bits / 64.0


def family_ladder(hist: ExponentHistogram, signed: bool, family: str = "scalar", max_width: int = 16,
                  block: int = 32, info: TensorInfo | None = None, weight=None,
                  block_activations: bool = True) -> list[Candidate]:
    """The candidates of a ``--family`` (issue 16), cheapest first: ``scalar`` is :func:`ladder`;
    ``channel`` (weights) its formats with one bias per output channel (``ch4:``); ``block`` the
    signed elements with subnormals whose exponent width fits the histogram best once a block
    scale (E8M0, ``block`` elements) puts each block's largest binade at the top (``mx<k>:``);
    ``all`` every one of them.  ``rel_error`` is the per-tensor estimate with the range the
    layout adapts put at the observed top: a ranking aid, the model runs decide.

    Order: by real stored bits per element (:func:`bits_per_element` on ``info``, scales and
    biases counted), ties by relative error.  ``weight`` (the tensor's values, NumPy or torch):
    each candidate's ``rel_error`` is then *measured* (``sum (q(w) - w)^2 / sum w^2`` with the
    layout applied) instead of estimated from the histogram — the analytic estimate cannot see
    what a per-channel bias or a per-block scale adapts, so it rates ``ch4:e3m2`` exactly like
    ``e3m2`` — and a candidate that costs more bits than another *of its kind* (scalar, channel,
    block) without less error is dropped: within a kind every step down is cheaper and coarser,
    as the width walks assume; across kinds the error does not predict accuracy well enough to
    drop anything, so ``all`` keeps each kind's ladder and merges them by bits.
    ``block_activations=False`` keeps activations scalar (no block candidates for them)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    w = None
    if weight is not None:
        w = np.asarray(weight.detach().cpu().float().numpy() if hasattr(weight, "detach") else weight,
                       dtype=np.float32)
    scalar = ladder(hist, signed, max_width)
    out = list(scalar) if family in ("scalar", "all") else []
    if family in ("channel", "all") and hist.kind == "weight":
        if w is None:
            out += [Candidate(ChannelFormat(c.fmt.with_(signed=True)), c.rel_error) for c in ladder(hist, True, max_width)]
        else:  # the exponent width that rounds the weights best with a bias per channel, measured
            out += [_best_measured(w, [ChannelFormat(Format(e, width - 1 - e)) for e in range(1, min(7, width - 1) + 1)
                                       if width - 1 - e <= 23])
                    for width in range(2, max_width + 1)]
    if family in ("block", "all") and (block_activations or hist.kind == "weight"):
        hi = hist.exponent_range()[1]
        for width in range(3, max_width + 1):
            exps = range(1, min(6, width - 1) + 1)
            if w is not None:
                out.append(_best_measured(w, [BlockFormat(Format(e, width - 1 - e, subnormals=True), block) for e in exps]))
                continue
            best: Candidate | None = None
            for exp_bits in exps:
                element = Format(exp_bits, width - 1 - exp_bits, subnormals=True)
                shifted = element.with_(bias=_legal_bias(exp_bits, element.max_exponent + element.bias - hi))
                cand = Candidate(BlockFormat(element, block), relative_error(hist, shifted))
                if best is None or cand.rel_error < best.rel_error - 1e-15:
                    best = cand
            out.append(best)
    if not out:  # an activation under ``channel``: channel formats are for weights, so scalar
        out = list(scalar)
    if w is not None:
        out = [c if is_layout_format(c.fmt) else Candidate(c.fmt, measured_error(w, c.fmt)) for c in out]
    key = lambda c: (bits_per_element(c.fmt, info), c.rel_error)  # noqa: E731
    if weight is not None:
        # dominated candidates go *within* a family: the measured error ranks formats of one
        # kind well, but not across kinds (lenet5's ip1.weight: the 3-bit block format with
        # subnormals keeps accuracy where 3-bit scalar and channel formats of lower error fail)
        out = [c for kind in (Format, ChannelFormat, BlockFormat)
               for c in _monotone(sorted((c for c in out if type(c.fmt) is kind), key=key))]
    return sorted(out, key=key)


def measured_error(w: np.ndarray, fmt) -> float:
    """``sum (q(w) - w)^2 / sum w^2`` of the weight ``w`` rounded to ``fmt`` (layout included);
    saturation and NaN/Inf from overflow count as the whole energy of the element."""
    energy = float(np.square(w, dtype=np.float64).sum())
    if energy == 0.0:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        q = _quantize(w, fmt).astype(np.float64)
        err = np.where(np.isfinite(q), (q - w) ** 2, np.square(w, dtype=np.float64) + 1.0)
    return float(err.sum() / energy)


def _best_measured(w: np.ndarray, formats: list) -> Candidate:
    """The format of ``formats`` (one width) that rounds ``w`` with the least measured error."""
    return min((Candidate(f, measured_error(w, f)) for f in formats), key=lambda c: c.rel_error)


def _monotone(cands: list[Candidate]) -> list[Candidate]:
    """Keep, of candidates sorted cheapest first, those with less error than every cheaper one."""
    kept: list[Candidate] = []
    for c in cands:
        if not kept or c.rel_error < kept[-1].rel_error * (1 - 1e-9):
            kept.append(c)
    return kept


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
