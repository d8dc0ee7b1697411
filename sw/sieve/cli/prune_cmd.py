"""``sieve prune``: SNIP, local random and double-shot pruning (dissertation ch. 7) compared
on Fashion-MNIST, each against its dense network.

The work lives in :mod:`sieve.pruning`; this module checks arguments, runs the study (every
training cached under ``$SIEVE_CACHE/pruning``) and writes ``results.json``, ``report.md`` and
the plots to ``--out``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SieveError

QUICK = {"seeds": 1, "epochs": 1, "train_images": 2000, "val": 1000, "test": 2000}


def register(sub) -> None:
    p = sub.add_parser("prune", help="SNIP / local random / double-shot pruning vs the dense net (Fashion-MNIST)")
    p.add_argument("--model", default="lenet5",
                   help="network(s), comma-separated: lenet300, lenet5, alexnet_s, vgg_s, or all (default lenet5)")
    p.add_argument("--sparsity", type=float, default=None,
                   help="global fraction of weights pruned (default: 0.98 for the LeNets, 0.90 alexnet_s, 0.95 vgg_s)")
    p.add_argument("--method", default="all", help="snip, random, doubleshot or all (default all)")
    p.add_argument("--metric", default=None,
                   help="double-shot importance metric(s), comma-separated, or all (default weighted_movement; "
                        "all when --method all)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per network (default 3)")
    p.add_argument("--first-seed", type=int, default=1, help="first seed (default 1)")
    p.add_argument("--epochs", type=int, default=1, help="epochs of every training, dense and sparse (default 1)")
    p.add_argument("--train-images", type=int, default=55000,
                   help="train on the first N of train[:55000] (default all 55,000)")
    p.add_argument("--data", default=None, help="Fashion-MNIST idx directory (default /usr/share/datasets/fashion-mnist)")
    p.add_argument("--out", default="build/prune", help="output directory (default build/prune)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 seed, 1 epoch, 2,000 training images, 1,000/2,000 val/test images")
    p.add_argument("--compose", default=None, metavar="NET",
                   help="also run `sieve search` on NET's dense and double-shot (weighted movement) nets of the first "
                        "seed and compare bits per original weight on held-out data (writes OUT/compose.md)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _list(text: str, known, what: str) -> tuple[str, ...]:
    names = tuple(known) if text.strip() == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise SieveError(f"unknown {what} '{','.join(bad) or text}'; choose from {', '.join(known)} or all")
    return names


def parse(args):
    """Checked :class:`~sieve.pruning.study.StudySettings` (SieveError on anything unusable)."""
    from ..pruning import METHODS
    from ..pruning.metrics import METRICS
    from ..pruning.networks import BENCHMARKS
    from ..pruning.study import StudySettings

    nets = _list(args.model, BENCHMARKS, "network")
    if args.method not in METHODS + ("all",):
        raise SieveError(f"unknown --method '{args.method}'; choose snip, random, doubleshot or all")
    if args.metric is not None and args.method not in ("doubleshot", "all"):
        raise SieveError("--metric applies to --method doubleshot (or all); drop it or change --method")
    metric_text = args.metric or ("all" if args.method == "all" else "weighted_movement")
    metrics = _list(metric_text, METRICS, "metric")
    if args.method == "all":
        methods = ("snip", "random") + tuple(f"doubleshot/{m}" for m in metrics)
    elif args.method == "doubleshot":
        methods = ("snip",) + tuple(f"doubleshot/{m}" for m in metrics)   # SNIP is the baseline it is judged by
    else:
        methods = (args.method,)
    if args.sparsity is not None and not 0.0 < args.sparsity < 1.0:
        raise SieveError(f"--sparsity {args.sparsity} is not a fraction strictly between 0 and 1; use e.g. 0.98")
    for flag, value, low in (("seeds", args.seeds, 1), ("epochs", args.epochs, 1), ("train-images", args.train_images, 256)):
        if value < low:
            raise SieveError(f"--{flag} {value} must be >= {low}")
    if args.first_seed < 0:
        raise SieveError(f"--first-seed {args.first_seed} must be >= 0")
    if args.compose is not None and (args.compose not in nets or "doubleshot/weighted_movement" not in methods):
        raise SieveError(f"--compose {args.compose} needs that network in --model and double-shot weighted_movement "
                         "among the methods (--method all or doubleshot)")
    if args.quick:
        return StudySettings(nets=nets, seeds=QUICK["seeds"], epochs=QUICK["epochs"], train_images=QUICK["train_images"],
                             methods=methods, sparsity=args.sparsity, first_seed=args.first_seed)
    return StudySettings(nets=nets, seeds=args.seeds, epochs=args.epochs, train_images=args.train_images,
                         methods=methods, sparsity=args.sparsity, first_seed=args.first_seed)


def run(args) -> int:
    from .. import zoo
    from ..io_utils import check_output_file
    from ..pruning.report import write_report
    from ..pruning.study import run_study

    settings = parse(args)
    out = Path(args.out)
    check_output_file(out / "results.json")       # an unusable --out fails before any training
    train, dataset, fingerprint = zoo.fashion_training_data(args.data)
    if args.quick:
        dataset = dataset.truncated(QUICK["val"], QUICK["test"])
    result = run_study(settings, train, dataset, fingerprint, progress=not args.quiet)
    report = write_report(result, out)
    for net, info in result["nets"].items():
        summ = info["summary"]
        cells = [f"{m} {100 * summ[m]['normalised_accuracy']['mean']:.2f}%" for m in settings.methods]
        print(f"{net} ({100 * info['sparsity']:.0f}% sparse, dense error {100 * summ['dense']['test_error']['mean']:.2f}%): "
              + ", ".join(cells))
        first = info["seeds"][0]["methods"][settings.methods[-1]]["weights_path"]
        print(f"  {settings.methods[-1]} seed {info['seeds'][0]['seed']} weights: {first}")
    print(f"wrote {report}")
    if args.compose:
        _compose(args.compose, result, dataset, out, not args.quiet)
    return 0


def _compose(net: str, result: dict, dataset, out: Path, progress: bool) -> None:
    from ..io_utils import write_json, write_text
    from ..models.weights import load_into, read_state_dict
    from ..pruning import compose, networks
    from ..pruning.study import HEADLINE

    seed = result["nets"][net]["seeds"][0]
    models, dirs = {}, {}
    for label, path in (("dense", seed["dense"]["weights_path"]), ("pruned", seed["methods"][HEADLINE]["weights_path"])):
        models[label] = load_into(networks.build(net), read_state_dict(path), path, net).eval()
        # beside the cached weights, keyed by them: the dense search serves every sparsity and --out
        dirs[label] = Path(path).parent / "search" / f"{Path(path).stem}-val{len(dataset.val)}-test{len(dataset.test)}"
    doc = compose.compose(models["dense"], models["pruned"], dataset, dirs, net, progress)
    doc["seed"] = seed["seed"]
    write_json(out / "compose.json", doc)
    write_text(out / "compose.md", compose.markdown(doc, f"seed {seed['seed']}, {HEADLINE}"))
    for r in doc["rows"]:
        print(f"  {r['configuration']}: {r['bits_per_original_weight']:.3f} bits/original weight, "
              f"{100 * r['normalised_to_dense']:.2f}% of dense (p_worse {r['p_worse']:.3f})")
    print(f"wrote {out / 'compose.md'}")
