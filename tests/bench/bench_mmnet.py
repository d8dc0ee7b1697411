"""M&MNet (dissertation ch. 5) against mobile-only, cloud-only and one Minion, in one run.

Fashion-MNIST: every pool model (lenet5, convnet, minivgg) as Master, the default Minion grid
(lenet5 and convnet × α 1, 0.5, 0.25 × ρ 1, 0.71, 0.57, one epoch each, cached) and the
smaller pool models as candidates.  CIFAR-10: ResNet-56 as Master, ResNet-20/32/44 as
candidates (pretrained, from ``../shared``; skipped with the reason when absent).  Per Master
and network (LTE, WiFi), on the held-out half: latency and device energy per input of M&MNet,
mobile-only, cloud-only and the best single-Minion cascade (Dynamic Duo), with the paired
McNemar verdict against the Master; Fashion-MNIST also at a 99 % target (the dissertation's
Fig. 5.7 relaxes the target by at most 1 %).  Goal from the issue: M&MNet below both mobile-only and
cloud-only for the largest Master on LTE, and ≥ 10 % below the single-Minion cascade.

Reproduce: ``python -m tests.bench.run --only mmnet`` (reports under build/bench/mmnet/).
"""

from __future__ import annotations

from pathlib import Path

from sieve.errors import SieveError
from sieve.io_utils import write_json, write_text

GOAL_VS_SINGLE = 0.10


def _rows(result: dict) -> list[dict]:
    out = []
    for r in result["rows"]:
        mm, mo, co, si = r["mmnet"], r["mobile_only"], r["cloud_only"], r["single_minion"]
        d = r["deployed"]
        out.append({
            "dataset": result["dataset"], "network": r["network"], "master": r["master"],
            "placement": r["placement"]["where"],
            "minion1": d["minion1"] if d else None, "minion2": d["minion2"] if d else None,
            "mmnet_ms": 1e3 * mm["latency_s"]["total"], "mobile_only_ms": 1e3 * mo["latency_s"]["total"],
            "cloud_only_ms": 1e3 * co["latency_s"]["total"],
            "single_minion_ms": 1e3 * si["latency_s"]["total"] if si else None,
            "mmnet_mj": 1e3 * mm["energy_j"]["total"], "mobile_only_mj": 1e3 * mo["energy_j"]["total"],
            "cloud_only_mj": 1e3 * co["energy_j"]["total"],
            "single_minion_mj": 1e3 * si["energy_j"]["total"] if si else None,
            "gains": mm["verdict"]["gains"], "losses": mm["verdict"]["losses"],
            "p_worse": mm["verdict"]["p_worse"], "holds": mm["verdict"]["holds"],
            "single_holds": si["verdict"]["holds"] if si else None,
            "heuristic_agrees": (r["agreement"] or {}).get("same_pair"),
        })
    return out


def _pct(new: float | None, old: float | None) -> str:
    return "—" if new is None or old is None else f"{100 * (new / old - 1):+.1f} %"


def run(out_dir: Path, quick: bool = False) -> dict:
    from sieve.runtime.mmnet_report import write_mmnet
    from sieve.runtime.mmnet_study import run_pool_study
    from sieve.runtime.sources import parse_pool

    out = Path(out_dir)
    rows, skipped = [], {}
    limit = 1000 if quick else None
    for name, pool, masters, target in (("fashion", "lenet5,convnet,minivgg", None, 1.0),
                                        ("fashion-0.99", "lenet5,convnet,minivgg", None, 0.99),
                                        ("cifar10", "resnet20,resnet32,resnet44,resnet56", ["resnet56"], 1.0)):
        try:
            result = run_pool_study(parse_pool(pool), masters, val=limit, test=limit, target=target, progress=False)
        except SieveError as exc:   # ../shared absent: say so, measure the rest
            skipped[name] = str(exc)
            continue
        write_mmnet(result, out / "mmnet" / name)
        rows += [{**r, "target": target} for r in _rows(result)]
    lte_fashion = [r for r in rows if r["dataset"] == "fashion-mnist" and r["network"] == "LTE" and r["target"] == 1.0]
    largest = lte_fashion[-1] if lte_fashion else None
    summary = {"rows": rows, "skipped": skipped, "quick": quick}
    if largest:
        summary["goal_largest_master_lte"] = {
            "master": largest["master"],
            "below_mobile_and_cloud": largest["mmnet_ms"] < min(largest["mobile_only_ms"], largest["cloud_only_ms"]),
            "holds": largest["holds"],
            "vs_single_minion": (None if largest["single_minion_ms"] is None
                                 else 1 - largest["mmnet_ms"] / largest["single_minion_ms"]),
            "goal_vs_single": GOAL_VS_SINGLE}
    write_json(out / "mmnet.json", summary)
    lines = ["# M&MNet benchmark", "", "Held-out half; ms and mJ per input; verdict against the Master "
             "(exact one-sided McNemar, 5 %). Reports per data set under `mmnet/`.", "",
             "| data | target | network | Master | placed | Minion 1 → Minion 2 | M&MNet ms / mJ | vs mobile-only | "
             "vs cloud-only | vs 1 Minion | gains / losses, p | holds |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pair = f"{r['minion1']} → {r['minion2']}" if r["minion1"] else "Master alone"
        lines.append(f"| {r['dataset']} | {r['target']:g} | {r['network']} | {r['master']} | {r['placement']} | {pair} | "
                     f"{r['mmnet_ms']:.3f} / {r['mmnet_mj']:.3f} | {_pct(r['mmnet_ms'], r['mobile_only_ms'])} | "
                     f"{_pct(r['mmnet_ms'], r['cloud_only_ms'])} | {_pct(r['mmnet_ms'], r['single_minion_ms'])} | "
                     f"{r['gains']} / {r['losses']}, {r['p_worse']:.3f} | {'yes' if r['holds'] else 'NO'} |")
    for name, why in skipped.items():
        lines += ["", f"Skipped {name}: {why}"]
    write_text(out / "mmnet.md", "\n".join(lines) + "\n")
    return summary
