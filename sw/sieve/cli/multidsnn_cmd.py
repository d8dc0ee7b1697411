"""``sieve multidsnn``: replace a monolith by a selector and data-specialised networks
(dissertation ch. 3) and report the design chosen for an accuracy target.

The work lives in :mod:`sieve.multidsnn`; this module checks arguments, runs one exploration
per benchmark and prints a summary line for each.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SieveError


def register(sub) -> None:
    p = sub.add_parser("multidsnn", help="multi-dsNN: selector tree + data-specialised nets replacing a monolith's FC part")
    p.add_argument("--model", default="lenet5",
                   help="benchmark(s), comma-separated: lenet5, fc300_100, fc1000_500, lenet_caffe, or all (default lenet5)")
    p.add_argument("--target", type=float, default=1.0, help="accuracy target as a fraction of the monolith's (default 1.0)")
    p.add_argument("--tail-fractions", default="0.1,0.2,0.3",
                   help="threshold queue as tail shares of the training inputs (default 0.1,0.2,0.3)")
    p.add_argument("--depths", default="2,4,6,8,10", help="selector tree depths swept (default 2,4,6,8,10)")
    p.add_argument("--margin-z", type=float, default=0.0,
                   help="generalization margin for the validation choice, in standard errors (default 0 = plain target)")
    p.add_argument("--data", default=None, help="dataset directory (default: the benchmark's zoo default)")
    p.add_argument("--out", default=None, help="output directory (default build/multidsnn/<benchmark>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _numbers(text: str, kind, what: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SieveError(f"--{what} '{text}' is not a comma-separated list of numbers; use e.g. 0.1,0.2") from None
    if not values:
        raise SieveError(f"--{what} is empty; give at least one value")
    return values


def parse(args):
    """Checked settings and benchmark names (SieveError on anything unusable)."""
    from ..multidsnn.benchmarks import NAMES
    from ..multidsnn.explore import Settings

    names = NAMES if args.model.strip() == "all" else [n.strip() for n in args.model.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise SieveError(f"unknown benchmark '{','.join(unknown) or args.model}'; choose from {', '.join(NAMES)} or all")
    if not 0.0 < args.target <= 1.5:
        raise SieveError(f"--target {args.target} is not a fraction of the monolith's accuracy; use e.g. 1.0 or 0.99")
    fractions = _numbers(args.tail_fractions, float, "tail-fractions")
    if any(not 0.0 < f < 1.0 for f in fractions):
        raise SieveError(f"--tail-fractions {args.tail_fractions}: every share must lie strictly between 0 and 1")
    depths = _numbers(args.depths, int, "depths")
    if any(d < 1 or d > 30 for d in depths):
        raise SieveError(f"--depths {args.depths}: depths must be between 1 and 30")
    if args.margin_z < 0:
        raise SieveError(f"--margin-z {args.margin_z} must be >= 0")
    if args.out is not None and len(names) > 1:
        raise SieveError("--out names one directory; run one benchmark per call or drop --out")
    if "lenet_caffe" in names:          # before any benchmark runs, not after the first ones
        from ..datasets.mnist5k import mnist5k_path

        mnist5k_path()
    return names, Settings(tail_fractions=fractions, depths=tuple(sorted(set(depths))), target=args.target,
                           margin_z=args.margin_z)


def run(args) -> int:
    from ..multidsnn import benchmarks
    from ..multidsnn.explore import explore
    from ..multidsnn.report import write_report

    names, settings = parse(args)
    for name in names:
        bench = benchmarks.load(name, args.data)
        result, art = explore(bench, settings, progress=not args.quiet)
        path = write_report(result, art, Path(args.out or f"build/multidsnn/{name}"))
        c = result["chosen"]
        if c is None:
            print(f"{name}: no design point explored")
        else:
            t, red = c["test"], c["reduction_vs_monolith"]
            flag = " (target not met on validation; most accurate point shown)" if result.get("no_choice") else ""
            print(f"{name}: main {c['main']} / tail {c['tail']} at tail {c['tail_fraction']:g}{flag}; test "
                  f"{100 * t['normalised_accuracy']:.2f} % of the monolith (p = {t['p_worse']:.3g}, "
                  f"{'holds' if t['holds'] else 'does not hold'}); MACs replaced {red['macs_replaced']:.2f}x fewer, "
                  f"energy {red['energy_total_pj']:.2f}x lower; selector misclassification "
                  f"{100 * c['selector']['test_misclassification']:.2f} %")
        print(f"wrote {path}")
    return 0
