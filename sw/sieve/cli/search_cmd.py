"""``sieve search --model M``: per-layer format search; prints where the report is."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

from .data_args import add_data_arguments, data_options
from .device_args import add_device_arguments, device_options


def register(sub) -> None:
    p = sub.add_parser("search", help="search per-layer custom-float formats for a model (plan.json + report)")
    p.add_argument("--model", "-m", default="lenet5",
                   help="zoo name (see `sieve models`; default lenet5), an ONNX file (net.onnx), package.module:factory"
                        " or path/file.py:ClassOrFactory (importing a .py file runs that code; --weights never does)")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="image shape (C,H,W) for an ONNX file whose input does not fix it")
    p.add_argument("--data", help="dataset path (default: the model's standard data); also an .npz of "
                                  "preprocessed x (N x C x H x W float32) and labels y")
    add_data_arguments(p)
    p.add_argument("--weights", help="weights file (default: the model's standard/cached weights)")
    p.add_argument("--strategy", default=None, help="greedy (default; meets targets by construction), sieve (the dissertation's) or uniform (one format for all)")
    p.add_argument("--family", default=None, metavar="scalar|channel|block|all|auto",
                   help="format family per tensor: scalar custom floats, per-output-channel exponent biases (weights),"
                        " OCP-MX-like block scales (weights), all of them, or auto: block when most weights reduce over"
                        " >= 128 inputs, else scalar (greedy strategy only; default auto, sieve.search.driver."
                        "DEFAULT_FAMILY says why); mean bits count every scale and bias")
    p.add_argument("--val", type=int, default=None, help="use at most N validation images (default: the whole split)")
    p.add_argument("--test", type=int, default=None, help="use at most N test images (default: the whole split)")
    p.add_argument("--out", default=None, help="output directory (default build/search/<model>)")
    p.add_argument("--margin-z", type=float, default=None,
                   help="generalization margin of the accurate/approximate targets in standard errors of the"
                        " net gain (default 1; 0 = the plain validation target)")
    p.add_argument("--fresh", action="store_true", help="ignore outcomes cached by an earlier (interrupted) run")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads for the search (default: all cores of this machine)")
    add_device_arguments(p)
    p.add_argument("--ray", default=None, metavar="auto|local|HOST:PORT",
                   help="shard the validation and test images across Ray actors (same plan): local starts a"
                        " cluster on this machine, auto joins the running one, HOST:PORT the head node's address"
                        " (needs pip install -e '.[ray]')")
    p.add_argument("--cache-mem", default=None, metavar="SIZE",
                   help="RAM bound of the prefix cache, e.g. 2G or 512M (default: a quarter of the available RAM);"
                        " states beyond it spill to OUT/cache/prefix, exact, same plan")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="Ray actors (default: one per CPU of the cluster, or per GPU with a cuda device)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-layer log")
    p.set_defaults(func=run)


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning: ...`` line on stderr, written with the progress bars cleared."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def run(args) -> int:
    from .. import search
    from ..model_source import load as load_source, parse_input_shape, source_name
    from ..errors import SieveError
    from ..report.search_report import percent
    from ..search import DEFAULT_STRATEGY, STRATEGIES
    from ..search.driver import SearchWarning, all_cores, check_family, check_out_dir

    strategy = args.strategy or DEFAULT_STRATEGY
    if strategy not in STRATEGIES:
        raise SieveError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    family = check_family(args.family, strategy)
    if args.margin_z is not None and not args.margin_z >= 0:
        raise SieveError(f"--margin-z must be a number >= 0, got {args.margin_z}")
    for flag in ("val", "test"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            raise SieveError(f"--{flag} must be a positive number of images, got {value}")
    if args.threads is not None and args.threads < 1:
        raise SieveError(f"--threads must be a whole number >= 1, got {args.threads}")
    engine = device_options(args)
    if args.ray_workers is not None and (args.ray is None or args.ray_workers < 1):
        raise SieveError("--ray-workers needs --ray and a whole number >= 1"
                         f" (got {args.ray_workers}{'' if args.ray else ' without --ray'})")
    if args.cache_mem is not None:
        from ..prefix_store import parse_size

        engine["cache_mem"] = parse_size(args.cache_mem)
    if args.ray is not None:
        if not re.fullmatch(r"auto|local|[\w.-]+:[0-9]+", args.ray):
            raise SieveError(f"--ray {args.ray!r} is not one of auto|local|HOST:PORT")
        engine.update(ray=args.ray, ray_workers=args.ray_workers)
    name = source_name(args.model)   # a zoo name, an ONNX file's stem, file.Factory
    out = check_out_dir(args.out if args.out else Path("build") / "search" / name)
    loaded, dataset = load_source(args.model, data=args.data, weights=args.weights, val=args.val, test=args.test,
                                  input_shape=parse_input_shape(args.input_shape), **data_options(args))
    model = loaded.model
    if args.fresh:
        import shutil

        shutil.rmtree(out / "cache", ignore_errors=True)
    extra = {} if args.margin_z is None else {"margin_z": args.margin_z}
    with warnings.catch_warnings():
        warnings.simplefilter("always", SearchWarning)
        warnings.showwarning = _warn_line
        doc = search.run_search(model, dataset, model_name=name, strategy=strategy, out_dir=out,
                                progress=not args.quiet, log=None if args.quiet else print,
                                threads=args.threads or all_cores(), family=family, **engine, **extra)
    base = doc["baseline"]
    print(f"{name} on {doc['dataset']} ({strategy}, family {doc.get('family', family)}): fp32 val {base['val_accuracy']:.2%}, test {base['test_accuracy']:.2%};"
          f" search {doc['search_seconds']:.1f} s, {doc['evaluations']} evaluations,"
          f" {doc['cost']['search_fp32_passes']:.1f} fp32 passes")
    for name, v in doc["variants"].items():
        print(f"  {name:<12} {v['mean_bits']:5.2f} bits ({v['compression_ratio']:.1f}x)  "
              f"val {percent(v['normalized_val_accuracy'])}  test {v['test_accuracy']:.2%} "
              f"(normalized {percent(v['normalized_test_accuracy'])}, "
              f"{'holds' if v['holds_on_test'] else 'does NOT hold'} on test: "
              f"p = {v['test_verdict']['p_worse']:.3g}){'' if v['meets_target'] else '  target missed'}")
    print(f"report: {out / 'report.md'}")
    print(f"plan:   {out / 'plan.json'}")
    return 0
