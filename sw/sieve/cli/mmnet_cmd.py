"""``sieve mmnet``: M&MNet — a Minion pair speculates, the Master recovers on device or cloud.

For a Fashion-MNIST pool (``lenet5``, ``convnet``, ``minivgg``) the Minions are generated
(width α × resolution ρ, trained and cached); any other pool (e.g. the CIFAR-10 ResNets)
uses its other members as Minion candidates.  The work lives in :mod:`sieve.runtime.mmnet`,
:mod:`sieve.runtime.mmnet_study` and :mod:`sieve.runtime.minions`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SieveError

NETWORK_NAMES = {"lte": "LTE", "wifi": "WiFi", "3g": "3G"}


def register(sub) -> None:
    p = sub.add_parser("mmnet", help="M&MNet: two Minions speculate, the Master recovers on device or cloud")
    p.add_argument("--pool", default="lenet5,convnet,minivgg",
                   help="comma-separated models; a Fashion-MNIST pool gets generated Minions (default lenet5,convnet,minivgg)")
    p.add_argument("--masters", default=None, help="comma-separated Masters (default: every Fashion pool model, "
                   "else the pool's most accurate model)")
    p.add_argument("--network", default="lte", help="headline network: lte, wifi or 3g (LTE and WiFi are always reported)")
    p.add_argument("--target", type=float, default=1.0, help="accuracy target as a fraction of the Master's (default 1.0)")
    p.add_argument("--grid", default="default", help="Minion grid: default (lenet5, convnet × α 1,0.5,0.25 × ρ 1,0.71,0.57) "
                   "or full (every pool model × α 1,0.75,0.5,0.25 × ρ 1,0.86,0.71,0.57)")
    p.add_argument("--minion-epochs", type=int, default=None, help="training epochs per Minion (default 1)")
    p.add_argument("--margin-z", type=float, default=0.0, help="the chosen policy must beat the target on the "
                   "check half of the calibration split by Z standard errors sqrt(gains + losses) (default 0)")
    p.add_argument("--max-pairs", type=int, default=400, help="exhaustive pair search up to this many pairs (default 400)")
    p.add_argument("--data", default=None, help="dataset path (default: each model's zoo default)")
    p.add_argument("--val", type=int, default=None, help="use at most this many calibration images")
    p.add_argument("--test", type=int, default=None, help="use at most this many held-out images")
    p.add_argument("--cache", default="build/cache/logits", help="logits cache directory")
    p.add_argument("--out", default=None, help="output directory (default build/runtime/mmnet-<dataset>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_mmnet_cmd)


def _check(args) -> str:
    net = NETWORK_NAMES.get(str(args.network).lower())
    if net is None:
        raise SieveError(f"--network {args.network!r} is not known; use lte, wifi or 3g")
    if not 0.0 < args.target <= 1.0:
        raise SieveError(f"--target {args.target} is not a fraction of the Master's accuracy; use e.g. 1.0 or 0.99")
    if args.grid not in ("default", "full"):
        raise SieveError(f"--grid {args.grid!r} is not known; use default or full")
    if args.minion_epochs is not None and args.minion_epochs < 1:
        raise SieveError(f"--minion-epochs {args.minion_epochs} must be at least 1")
    if not 0.0 <= args.margin_z <= 5.0:
        raise SieveError(f"--margin-z {args.margin_z} must lie in [0, 5]")
    if args.max_pairs < 0:
        raise SieveError("--max-pairs must not be negative")
    return net


def run_mmnet_cmd(args) -> int:
    from ..runtime.mmnet_report import second_minion_note, write_mmnet
    from ..runtime.mmnet_study import run_pool_study
    from ..runtime.sources import parse_pool

    headline = _check(args)
    members = parse_pool(args.pool)
    masters = [t.strip() for t in args.masters.split(",")] if args.masters else None
    result = run_pool_study(members, masters, args.grid, args.minion_epochs, args.data, args.val, args.test,
                            args.cache, args.target, tuple(dict.fromkeys([headline, "LTE", "WiFi"])),
                            args.max_pairs, args.margin_z, not args.quiet)
    out = Path(args.out or f"build/runtime/mmnet-{result['dataset']}")
    path = write_mmnet(result, out)
    for r in result["rows"]:
        if r["network"] != headline:
            continue
        mm, v = r["mmnet"], r["mmnet"]["verdict"]
        d = r["deployed"]
        pair = f"{d['minion1']} → {d['minion2']}" if d else "none"
        print(f"{headline} {r['master']}: pair {pair}, Master on {r['placement']['where']}; "
              f"{1e3 * mm['latency_s']['total']:.3f} ms vs mobile-only {1e3 * r['mobile_only']['latency_s']['total']:.3f} / "
              f"cloud-only {1e3 * r['cloud_only']['latency_s']['total']:.3f} ms; held-out {100 * v['accuracy']:.2f} % "
              f"vs {100 * v['reference_accuracy']:.2f} % (p={v['p_worse']:.3f}, {'holds' if v['holds'] else 'BELOW target'})")
        print("  " + second_minion_note(r))
    print(f"wrote {path}")
    return 0
