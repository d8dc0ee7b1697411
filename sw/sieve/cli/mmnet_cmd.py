"""``sieve mmnet``: M&MNet — a Minion pair speculates, the Master recovers on device or cloud.

For a Fashion-MNIST pool (``lenet5``, ``convnet``, ``minivgg``) the Minions are generated
(width α × resolution ρ, trained and cached); any other pool (e.g. the CIFAR-10 ResNets)
uses its other members as Minion candidates.  The work lives in :mod:`sieve.runtime.mmnet`,
:mod:`sieve.runtime.mmnet_study` and :mod:`sieve.runtime.minions`.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
    if not 0.0 < args.target <= 1.5:
        raise SieveError(f"--target {args.target} is not a fraction of the Master's accuracy; use e.g. 1.0 or 0.99")
    if args.grid not in ("default", "full"):
        raise SieveError(f"--grid {args.grid!r} is not known; use default or full")
    if args.minion_epochs is not None and args.minion_epochs < 1:
        raise SieveError(f"--minion-epochs {args.minion_epochs} must be at least 1")
    if args.max_pairs < 0:
        raise SieveError("--max-pairs must not be negative")
    return net


def run_mmnet_cmd(args) -> int:
    from ..runtime import minions
    from ..runtime.mmnet_report import second_minion_note, write_mmnet
    from ..runtime.mmnet_study import run_mmnet
    from ..runtime.sources import _logits, load_pool, parse_pool

    headline = _check(args)
    members = parse_pool(args.pool)
    tags = [m.tag for m in members]
    generated = all(m.variant is None and m.model in minions.FASHION_BASES for m in members)
    masters = [t.strip() for t in args.masters.split(",")] if args.masters else None
    if masters is not None:
        unknown = [m for m in masters if m not in tags]
        if unknown:
            raise SieveError(f"--masters {','.join(unknown)} not in --pool {args.pool}; name pool members")
    torch.set_num_threads(1)
    pool = load_pool(members, args.data, args.val, args.test, args.cache, 1, not args.quiet)
    val_logits, test_logits, models = dict(pool.val_logits), dict(pool.test_logits), dict(pool.models)
    infos = []
    if generated:
        if args.grid == "full":
            points = minions.grid(tags, minions.ALPHAS, minions.RHOS)
        else:
            points = minions.grid([b for b in minions.DEFAULT_BASES if b in tags] or tags[:1])
        points = [p for p in points if minions.minion_tag(*p) not in tags]
        gen, infos, ds = minions.train_minions(points, args.minion_epochs or minions.DEFAULT_EPOCHS,
                                               args.data, not args.quiet)
        nv, nt = len(pool.val_labels), len(pool.test_labels)
        if (not torch.equal(ds.val.labels[:nv], torch.from_numpy(pool.val_labels))
                or not torch.equal(ds.test.labels[:nt], torch.from_numpy(pool.test_labels))):
            raise SieveError("the Minions' data differs from the pool's; give both the same --data")
        for tag, model in gen.items():
            val_logits[tag] = _logits(model, ds.val.images[:nv], 500)
            test_logits[tag] = _logits(model, ds.test.images[:nt], 500)
            models[tag] = model
        masters = masters or tags
        minion_tags = list(gen)
    else:
        if masters is None:
            best = max(tags, key=lambda t: int((pool.val_logits[t].argmax(1) == pool.val_labels).sum()))
            masters = [best]
        minion_tags = []
    candidates = {m: [t for t in minion_tags + tags if t != m] for m in masters}
    networks = tuple(dict.fromkeys([headline, "LTE", "WiFi"]))
    result = run_mmnet(val_logits, test_logits, pool.val_labels, pool.test_labels, models, pool.test_images,
                       masters, candidates, args.target, networks=networks, max_pairs=args.max_pairs,
                       progress=not args.quiet, dataset=pool.dataset)
    result["minions"] = [i.to_json() for i in infos]
    result["minion_epochs"] = (args.minion_epochs or minions.DEFAULT_EPOCHS) if generated else None
    result["grid"] = args.grid if generated else None
    out = Path(args.out or f"build/runtime/mmnet-{pool.dataset}")
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
