"""``mmnet.json``, ``report.md`` and the breakdown plots of an M&MNet study.

The plots follow the dissertation's Figs. 5.4/5.5: per Master, mobile-only vs cloud-only vs
M&MNet (and the single-Minion cascade), each bar stacked by Minion 1 / Minion 2 / Master /
transfer, latency and device energy per input, one panel per network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io_utils import write_json, write_text
from .report import _pct, _plt, _save, atomic_dir

PARTS = (("minion1", "Minion 1", "tab:green"), ("minion2", "Minion 2", "tab:olive"),
         ("master", "Master", "tab:blue"), ("transfer", "transfer", "tab:red"))
STRATEGIES = (("mobile_only", "mobile-only"), ("cloud_only", "cloud-only"),
              ("single_minion", "1 Minion"), ("mmnet", "M&MNet"))


def _plot(result: dict, metric: str, scale: float, unit: str, path: Path) -> None:
    plt = _plt()
    nets = list(result["networks"])
    fig, axes = plt.subplots(1, len(nets), figsize=(4.2 * len(nets), 3.8), squeeze=False)
    for ax, net in zip(axes[0], nets):
        rows = [r for r in result["rows"] if r["network"] == net]
        width = 0.8 / len(STRATEGIES)
        # linear axis (stacks stay honest) scaled to the on-device bars; a taller bar (cloud-only,
        # tens of ms against sub-ms on the device here) is cut at the top and labelled with its total
        totals = [scale * r[k][metric]["total"] for r in rows for k, _ in STRATEGIES if r[k]]
        device = [scale * r[k][metric]["total"] for r in rows for k, _ in STRATEGIES
                  if r[k] and k != "cloud_only"] or totals
        top = 1.25 * max(device)
        for j, (key, label) in enumerate(STRATEGIES):
            xs = np.arange(len(rows)) + j * width
            bottom = np.zeros(len(rows))
            for part, name, color in PARTS:
                ys = np.array([scale * (r[key][metric].get(part, 0.0) if r[key] else 0.0) for r in rows])
                ax.bar(xs, ys, width, bottom=bottom, color=color, edgecolor="black", linewidth=0.3,
                       label=name if j == 0 else None)
                bottom += ys
            for x, r, total in zip(xs, rows, bottom):
                ax.text(x, 0.01 * top, label, rotation=90, fontsize=6, ha="center", va="bottom")
                if total > top:
                    ax.text(x, 0.97 * top, f"{total:.3g}", fontsize=6, ha="center", va="top", rotation=90)
        ax.set_ylim(0, top)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, [r["master"] for r in rows], fontsize=7)
        ax.set_title(net)
        ax.set_ylabel(f"{metric.split('_')[0]} per input ({unit})")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("bars per Master: " + " | ".join(label for _, label in STRATEGIES), fontsize=8)
    _save(fig, path)


def _ms(x: float) -> str:
    return f"{1e3 * x:.3f}"


def _write(result: dict, out: Path) -> Path:
    lines = [f"# M&MNet on {result['dataset']}", "",
             f"Minion 1 → detector → Minion 2 → detector → Master; thresholds fitted on "
             f"{result['fit_images']} of the {result['calibration_images']} calibration images for "
             f"{100 * result['target']:g} % of the Master's correct answers with a {result['margin_z']:g}σ margin, "
             f"the chosen policy checked on the other {result['check_images']} (margin {result['check_z']:g}σ); every figure below on "
             f"{result['test_images']} held-out images. "
             f"Latency per model measured here at batch 1 (CPU time, one thread); device power "
             f"{result['device']['device_power_w']} W and cloud speed-up ×{result['device']['cloud_speedup']:g} "
             f"(assumed, `sieve/runtime/selector.py`); input {result['input_bytes']} bytes.", ""]
    if result.get("minions"):
        lines += ["## Minions (width α × resolution ρ)", "",
                  "| Minion | α | input px | MACs | params | ms / input | calibration acc. | held-out acc. | trained (s) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m in result["minions"]:
            ts = "cached" if m["cached"] else f"{m['train_seconds'] or 0:.0f}"
            lines.append(f"| {m['tag']} | {m['alpha']:g} | {m['input_px']} | {m['macs']:,} | {m['params']:,} | "
                         f"{_ms(result['latency_s'][m['tag']])} | {_pct(m['val_accuracy'])} | "
                         f"{_pct(m['test_accuracy'])} | {ts} |")
        lines.append("")
    lines += ["## Lookup table (Table 5.4)", ""]
    for net, table in result["lookup"].items():
        lines += [f"**{net}**", "", "| Master | Minion 1 | Minion 2 | Master placed |", "|---|---|---|---|"]
        lines += [f"| {t['master']} | {t['minion1'] or '—'} | {t['minion2'] or '—'} | {t['placement']} |" for t in table]
        lines.append("")
    lines += ["## Held-out results", "",
              "Latency in ms and device energy in mJ per input. *holds*: not significantly below the "
              "Master (exact one-sided McNemar, 5 %).", "",
              "| network | Master | mobile-only ms / mJ | cloud-only ms / mJ | 1 Minion ms / mJ | M&MNet ms / mJ | "
              "M&MNet vs best baseline (latency) | vs 1 Minion | reach M2 / Master | gains / losses, p | holds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mm, mo, co, si = r["mmnet"], r["mobile_only"], r["cloud_only"], r["single_minion"]
        base = min(mo["latency_s"]["total"], co["latency_s"]["total"])
        v = mm["verdict"]
        reach = mm["reach"][1:] if len(mm["reach"]) == 3 else ["—", "—"]
        rs = " / ".join(_pct(x) if not isinstance(x, str) else x for x in reach)
        vs1 = f"{100 * (mm['latency_s']['total'] / si['latency_s']['total'] - 1):+.1f} %" if si else "—"
        s1 = f"{_ms(si['latency_s']['total'])} / {_ms(si['energy_j']['total'])}" if si else "—"
        lines.append(f"| {r['network']} | {r['master']} | {_ms(mo['latency_s']['total'])} / {_ms(mo['energy_j']['total'])} | "
                     f"{_ms(co['latency_s']['total'])} / {_ms(co['energy_j']['total'])} | {s1} | "
                     f"**{_ms(mm['latency_s']['total'])}** / {_ms(mm['energy_j']['total'])} | "
                     f"{100 * (mm['latency_s']['total'] / base - 1):+.1f} % | {vs1} | {rs} | "
                     f"{v['gains']} / {v['losses']}, {v['p_worse']:.3f} | {'yes' if v['holds'] else 'NO'} |")
    lines += ["", "## Pair selection", "",
              "| network | Master | placed | heuristic pair (pairs tried) | exhaustive pair (pairs tried) | same | heuristic cost / exhaustive |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        h, e, a = r["heuristic"], r["exhaustive"], r["agreement"]
        hp = f"{h['best']['minion1']} → {h['best']['minion2']}" if h["best"] else "none"
        ep = ("skipped" if e is None else f"{e['best']['minion1']} → {e['best']['minion2']}" if e["best"] else "none")
        ratio = f"{a['heuristic_cost_over_exhaustive']:.3f}" if a and a["heuristic_cost_over_exhaustive"] else "—"
        lines.append(f"| {r['network']} | {r['master']} | {r['placement']['where']} | {hp} ({h['pairs_tried']}) | "
                     f"{ep} ({e['pairs_tried'] if e else '—'}) | {('yes' if a['same_pair'] else 'no') if a else '—'} | {ratio} |")
    lines += ["", "## Where the second Minion does not pay", ""]
    for r in result["rows"]:
        lines.append("- " + second_minion_note(r))
    _plot(result, "latency_s", 1e3, "ms", out / "latency.png")
    _plot(result, "energy_j", 1e3, "mJ", out / "energy.png")
    lines += ["", "![latency breakdown](latency.png)", "", "![energy breakdown](energy.png)", ""]
    write_json(out / "mmnet.json", result)
    write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"


def second_minion_note(r: dict) -> str:
    """One honest sentence per row: does Minion 2 buy anything over one Minion?"""
    mm, si = r["mmnet"], r["single_minion"]
    head = f"{r['network']} / {r['master']}: "
    if r["deployed"] is None:
        why = (r["exhaustive"] or r["heuristic"])["message"]
        return head + f"{why} (calibration); the Master answers every input."
    if si is None:
        return head + "no single Minion beats the Master alone, the pair does."
    gain = 1 - mm["latency_s"]["total"] / si["latency_s"]["total"]
    if gain <= 0:
        return head + f"the pair is {-100 * gain:.1f} % slower than the single-Minion cascade ({si['minion']}); the second Minion does not pay."
    if gain < 0.10:
        return head + f"the pair is only {100 * gain:.1f} % faster than the single-Minion cascade ({si['minion']}), short of 10 %."
    return head + f"the pair is {100 * gain:.1f} % faster than the single-Minion cascade ({si['minion']})."


def write_mmnet(result: dict, out: Path) -> Path:
    """Write the report atomically (a failure leaves no partial output)."""
    with atomic_dir(out) as tmp:
        _write(result, tmp)
    return Path(out) / "report.md"
