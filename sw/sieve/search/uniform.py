"""``--strategy uniform``: the best single format for every tensor (the baseline to beat).

One signed format ``e<E>m<M>`` for every conv/linear weight and input, the bias set per
tensor from its largest observed binade, no subnormals (the setting of the issue's quick
CIFAR-10 measurement).  Widths are tried from small to large, every exponent width at each
width, each on the whole validation split (stopping a run early once it clearly fails the
loosest target still open); each variant takes the narrowest format meeting its
target, with the same generalization margin as the default strategy (ties: the more accurate one).
"""

from __future__ import annotations

from ..cfloat import Format
from .context import VARIANTS, SearchContext
from .formats import cover_format

__all__ = ["search_uniform", "uniform_plan"]

MIN_WIDTH, MAX_WIDTH = 3, 16
MAX_EXP_BITS = 7  # 8 exponent bits need bias >= 128, below the fp32 normal range the engines use


def uniform_plan(ctx: SearchContext, exp_bits: int, man_bits: int) -> dict[str, Format]:
    plan = {}
    for info in ctx.infos:
        top = cover_format(ctx.histograms[info.name], man_bits)  # bias from the largest binade
        bias = (1 << exp_bits) - 1 - (top.max_exponent)
        bias = min(max(bias, (1 << exp_bits) - 1 - 127), 127)
        plan[info.name] = Format(exp_bits, man_bits, bias)
    return plan


def _exp_widths(width: int) -> range:
    return range(2, min(MAX_EXP_BITS, width - 1) + 1)


def search_uniform(ctx: SearchContext, log=None):
    plans: dict[str, dict[str, Format]] = {v: {} for v in VARIANTS}  # fp32 when nothing fits
    trace: list[dict] = []
    todo = set(VARIANTS)
    ctx.plan_steps(sum(len(_exp_widths(w)) for w in range(MIN_WIDTH, MAX_WIDTH + 1)), unit="format")
    for width in range(MIN_WIDTH, MAX_WIDTH + 1):
        found: dict[str, tuple] = {}
        for exp_bits in _exp_widths(width):
            man_bits = width - 1 - exp_bits
            plan = uniform_plan(ctx, exp_bits, man_bits)
            # judged under the loosest target still open, stopping early once it clearly fails;
            # a complete run then decides every open target
            loosest = max(todo, key=VARIANTS.index)
            out = ctx.evaluate(plan, ctx.full, loosest)
            ctx.step()
            trace.append({"tensor": "*", "format": f"e{exp_bits}m{man_bits}", "complete": out.complete,
                          "normalized_val_accuracy": ctx.normalized(out.correct) if out.complete else None,
                          "agreement": out.agree / ctx.n if out.complete else None})
            if not out.complete:
                continue
            for v in todo:
                # the default strategy's target, generalization margin included, so that the
                # two are compared on equal terms (see :mod:`sieve.search.context`)
                if ctx.meets(v, out) and (v not in found or out.correct > found[v][0]):
                    found[v] = (out.correct, plan)
        for v, (_, plan) in found.items():
            plans[v] = plan
            todo.discard(v)
            if log is not None:
                log(f"  [{v}] uniform e{next(iter(plan.values())).exp_bits}m{next(iter(plan.values())).man_bits}")
        if not todo:
            break
    return plans, trace
