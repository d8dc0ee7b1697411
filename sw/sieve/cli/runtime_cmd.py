"""``sieve cascade | ensemble | selector``: the speculative runtime's studies.

Each command calibrates on the validation half and reports on the held-out test half, and
writes JSON + ``report.md`` + PNG plots under ``--out``.  The work lives in
:mod:`sieve.runtime`; this module only parses arguments and prints a summary.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SieveError
from .data_args import add_data_arguments, data_options
from .device_args import add_device_arguments, device_options


def _common(p, default_pool: str) -> None:
    p.add_argument("--pool", default=default_pool, help=f"comma-separated models, cheapest to dearest or any order; "
                   f"NAME:VARIANT uses a searched plan (default {default_pool})")
    p.add_argument("--data", default=None, help="dataset path (default: each model's zoo default)")
    add_data_arguments(p)
    p.add_argument("--val", type=int, default=None, help="use at most this many calibration images")
    p.add_argument("--test", type=int, default=None, help="use at most this many held-out images")
    p.add_argument("--threads", type=int, default=1, help="torch threads for timing (default 1)")
    p.add_argument("--cache", default="build/cache/logits", help="logits cache directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_arguments(p)  # for the pool's logits (timings stay on the CPU)


def register(sub) -> None:
    p = sub.add_parser("cascade", help="big/little speculative cascade: pair selection, thresholds, throughput, latency")
    _common(p, "lenet5,convnet,minivgg")
    p.add_argument("--target", type=float, default=1.0, help="accuracy target as a fraction of the best model's (default 1.0)")
    p.add_argument("--batch", type=int, default=500, help="executor batch size (default 500)")
    p.add_argument("--reps", type=int, default=3, help="interleaved throughput repetitions (default 3)")
    p.add_argument("--throughput-images", type=int, default=None,
                   help="time the executor on this many held-out images (default: all of them)")
    p.add_argument("--out", default=None, help="output directory (default build/runtime/cascade-<dataset>)")
    p.set_defaults(func=run_cascade)

    e = sub.add_parser("ensemble", help="flexible ensemble: score-margin early exit vs the full ensemble")
    _common(e, "lenet5,convnet,minivgg")
    e.add_argument("--lam", type=float, default=None, help="λ of latency + λ·relative error increase "
                   "(default: sweep several and report each)")
    e.add_argument("--max-drop", type=float, default=0.005, help="accuracy drop allowed vs full ensemble (default 0.005)")
    e.add_argument("--out", default=None, help="output directory (default build/runtime/ensemble-<dataset>)")
    e.set_defaults(func=run_ensemble)

    s = sub.add_parser("selector", help="SIEVE selector: device vs cloud over 3G/LTE/WiFi, energy and latency")
    _common(s, "lenet5,convnet,minivgg")
    s.add_argument("--target", type=float, default=1.0, help="accuracy target as a fraction of the best model's")
    s.add_argument("--out", default=None, help="output directory (default build/runtime/selector-<dataset>)")
    s.set_defaults(func=run_selector)


def _pool(args):
    from ..runtime.sources import load_pool, parse_pool

    if args.threads < 1:
        raise SieveError("--threads must be at least 1")
    return load_pool(parse_pool(args.pool), args.data, args.val, args.test, args.cache,
                     args.threads, not args.quiet, data_options=data_options(args), **device_options(args))


def run_cascade(args) -> int:
    from ..runtime.report import write_cascade
    from ..runtime.study import run_study

    if not 0.0 < args.target <= 1.5:
        raise SieveError(f"--target {args.target} is not a fraction of the best accuracy; use e.g. 1.0 or 0.99")
    if args.batch < 1 or args.reps < 1:
        raise SieveError("--batch and --reps must be at least 1")
    pool = _pool(args)
    result = run_study(pool, args.target, args.batch, args.reps, progress=not args.quiet,
                       throughput_images=args.throughput_images)
    out = Path(args.out or f"build/runtime/cascade-{pool.dataset}")
    path = write_cascade(result, out)
    if result.get("deployed") is None:
        print(f"no pair meets the target: {result['fallback']['message']}")
    else:
        d = result["deployed"]
        print(f"deployed {d['name']}")
        print(f"test accuracy {100 * d['test_accuracy']:.2f} % = {100 * d['relative_accuracy']:.2f} % of "
              f"{result['reference']}; modelled speed-up {d['modelled_speedup']:.2f}x")
        if "throughput" in result:
            t = result["throughput"]
            for clock, what in (("cpu", "per CPU-second"), ("wall", "wall-clock")):
                c = t[clock]
                print(f"measured throughput ({what}) {c['cascade_images_per_s']:.0f} vs "
                      f"{c['big_images_per_s']:.0f} img/s = {c['speedup']:.2f}x")
    print(f"wrote {path}")
    return 0


def run_ensemble(args) -> int:
    from ..runtime.ensemble import run_ensemble_study
    from ..runtime.report import write_ensemble

    pool = _pool(args)
    result = run_ensemble_study(pool, args.lam, args.max_drop, progress=not args.quiet)
    out = Path(args.out or f"build/runtime/ensemble-{pool.dataset}")
    path = write_ensemble(result, out)
    b = result["best_within_drop"]
    if b:
        print(f"flexible ensemble: {100 * b['test_accuracy']:.2f} % at {b['latency_fraction'] * 100:.1f} % of the "
              f"full ensemble's latency ({100 * result['full']['test_accuracy']:.2f} %)")
    print(f"wrote {path}")
    return 0


def run_selector(args) -> int:
    from ..runtime.report import write_selector
    from ..runtime.selector import run_selector_study

    pool = _pool(args)
    result = run_selector_study(pool, args.target, progress=not args.quiet)
    out = Path(args.out or f"build/runtime/selector-{pool.dataset}")
    path = write_selector(result, out)
    print(f"wrote {path}")
    return 0
