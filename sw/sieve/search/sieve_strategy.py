"""``--strategy sieve``: the dissertation's per-tensor search (§4.4.1), reproduced as written.

For every tensor, alone (all others fp32): start from the deterministic exponent width and bias
that cover every observed binade, then sweep the exponent width down to 2 bits with the
coverage-maximising bias, stopping below 50 % coverage; for each exponent width sweep the
mantissa 6 -> 0, stopping when normalized accuracy drops below 99.8 %.  Each tensor keeps its
cheapest *exact*, *accurate* and *approximate* choice; the choices are combined per variant and
the combined models are measured honestly — they may miss their targets.  Formats are always
signed, as in the dissertation.
"""

from __future__ import annotations

from ..cfloat import Format
from .context import VARIANTS, SearchContext
from .formats import cover_format, coverage_bias

__all__ = ["search_sieve"]

STOP_BELOW = 0.998
MIN_COVERAGE = 0.5


def _meets(ctx: SearchContext, variant: str, outcome) -> bool:
    if variant == "exact":
        return outcome.agree == ctx.full.size
    return outcome.est_correct >= ctx.need(variant)


def search_sieve(ctx: SearchContext, log=None) -> tuple[dict[str, dict[str, Format]], list[dict]]:
    """Per-variant plans and the trace of every evaluated (tensor, format, accuracy)."""
    plans: dict[str, dict[str, Format]] = {v: {} for v in VARIANTS}
    trace: list[dict] = []
    ctx.plan_steps(len(ctx.infos), unit="tensor")
    for info in ctx.infos:
        hist = ctx.histograms[info.name]
        first = cover_format(hist, 0)
        tried: list[tuple[Format, object]] = []
        for exp_bits in range(first.exp_bits, 1, -1) if first.exp_bits >= 2 else [first.exp_bits]:
            if exp_bits == first.exp_bits:
                bias, cov = first.bias, hist.coverage(first.min_exponent, first.max_exponent)
            else:
                bias, cov = coverage_bias(hist, exp_bits)
            if cov < MIN_COVERAGE:
                break
            for man_bits in range(6, -1, -1):
                fmt = Format(exp_bits, man_bits, bias)
                out = ctx.evaluate({info.name: fmt}, ctx.full, "measure", checkpoint=info.name, early=False)
                norm = ctx.normalized(out.est_correct)  # None: fp32 gets nothing right, nothing to drop below
                tried.append((fmt, out))
                trace.append({"tensor": info.name, "format": str(fmt), "coverage": cov,
                              "normalized_val_accuracy": norm, "agreement": out.agree / ctx.full.size})
                if norm is not None and norm < STOP_BELOW:
                    break
        for variant in VARIANTS:
            ok = [(fmt.width, -out.est_correct, -out.agree, str(fmt), fmt) for fmt, out in tried
                  if _meets(ctx, variant, out)]
            if ok:
                plans[variant][info.name] = min(ok)[-1]
        ctx.step()
        if log is not None:
            log(f"{info.name}: " + ", ".join(f"{v}={plans[v].get(info.name, 'fp32')}" for v in VARIANTS))
    return plans, trace
