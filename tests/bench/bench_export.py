"""Compressed ONNX export: file size against the weight-bits bound, onnxruntime latency against fp32.

For lenet5 and resnet20 (when ../shared is present) the benchmark exports three files from one
plan - the fp32 reference, packed weights only, packed weights + rounded activations - and measures,
side by side in the same run:

* file sizes against the issue's bound ``mean weight bits / 32 * fp32 size + 2 %`` (mean over
  elements, unplanned weights counted at 32 bits), read both ways: *strict*, 2 % of that ideal size
  (``ideal * 1.02``), and *lenient*, 2 % of the fp32 file (``ideal + 0.02 * fp32``).  The fp32
  reference goes through the same graph compaction as the compressed files (short names,
  folded constants, BatchNorm as scale + shift), so the ratio credits only the weight packing; the
  plain ``torch.onnx.export`` file size is reported beside it;
* onnxruntime latency at batch 1 and 64 (one intra-op thread, default graph optimizations; single
  blocks of calls interleaved across the three files so load on the shared machine hits them alike;
  the fastest block mean of each);
* session creation time (median of 3), and that the weight decode is constant-folded at session
  start (the optimized weights-only graph has exactly the fp32 graph's nodes);
* top-1 agreement with the emulated torch model (``sieve.qeval.apply_plan``) on the test split.

The plan (variant accurate) is ``$SIEVE_SEARCH_DIR/<model>/plan.json`` when that variable is set;
else the search benchmark's greedy plan ``<out>/search/<model>-greedy/plan.json`` (``make bench``
runs the search benchmark first, so it exports what it just searched), else ``make search``'s
``build/search/<model>/plan.json``; otherwise a stand-in plan (stated in the output) with one format
per kind.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sieve.cfloat import Format
from sieve.io_utils import write_json, write_text

MODELS = ("lenet5", "resnet20")
STAND_IN = {"weight": "e4m3b10", "first_activation": "e4m3b7", "activation": "ue4m3b6"}


def _plan(name: str, model: torch.nn.Module, shape, out_dir: Path) -> tuple[dict[str, Format], str]:
    from sieve.export.plan_file import read_plan
    from sieve.qeval import quantizable_tensors

    bench_plan = out_dir / "search" / f"{name}-greedy" / "plan.json"  # the search benchmark's
    user_plan = Path("build/search") / name / "plan.json"  # `make search`'s
    env = os.environ.get("SIEVE_SEARCH_DIR")
    candidates = [Path(env) / name / "plan.json"] if env else [bench_plan, user_plan]
    for path in candidates:
        if path.is_file():
            plan, _ = read_plan(path, "accurate", name)
            return plan, f"{path} (accurate)"
    plan, first = {}, True
    for t in quantizable_tensors(model, shape):
        if t.kind == "weight":
            plan[t.name] = Format.parse(STAND_IN["weight"])
        else:
            plan[t.name] = Format.parse(STAND_IN["first_activation" if first else "activation"])
            first = False
    return plan, f"stand-in {STAND_IN} (no {path})"


def _latency(paths: dict[str, Path], shape, batch: int, rounds: int, budget: float) -> dict[str, float]:
    from sieve.export.verify import session

    sessions = {k: session(str(p)) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    for s in sessions.values():
        for _ in range(3):
            s.run(None, {"input": x})
    t0 = time.perf_counter()
    sessions["fp32"].run(None, {"input": x})
    reps = max(1, int(budget / max(time.perf_counter() - t0, 1e-6)))
    # The machine is shared: the files take turns block by block (a burst of load from elsewhere
    # hits all of them alike), a block being ``reps`` back-to-back calls timed as a whole (a single
    # sub-millisecond call is at the mercy of timer and scheduler jitter), and each file keeps its
    # fastest block mean.  The weights-only file runs the fp32 file's graph after optimization, so
    # its ratio shows what noise is left.
    best = {k: float("inf") for k in sessions}
    order = list(sessions.items())
    for i in range(rounds):
        for k, s in order[i % len(order):] + order[:i % len(order)]:  # rotate who goes first
            t = time.perf_counter()
            for _ in range(reps):
                s.run(None, {"input": x})
            best[k] = min(best[k], (time.perf_counter() - t) / reps)
    return best


def _creation(path: Path) -> float:
    from sieve.export.verify import session

    times = []
    for _ in range(3):
        t = time.perf_counter()
        session(str(path))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _optimized_ops(path: Path, tmp: Path) -> Counter:
    import onnx

    from sieve.export.verify import session

    session(str(path), optimized_path=str(tmp))
    ops = Counter(n.op_type for n in onnx.load(str(tmp)).graph.node)
    tmp.unlink()
    return ops


def bench_model(name: str, out_dir: Path, quick: bool) -> dict:
    from sieve import zoo
    from sieve.export.exporter import export_onnx
    from sieve.export.verify import compare, explain

    torch.set_num_threads(2)
    test = 500 if quick else None
    model, data = zoo.load(name, test=test, val=1)
    shape = tuple(zoo.model_info(name)["input_shape"])
    plan, plan_source = _plan(name, model, shape, out_dir)
    d = out_dir / "export"
    paths = {m: d / f"{name}-{m}.onnx" for m in ("fp32", "weights-only", "full")}
    exports = {}
    for mode, path in paths.items():
        t = time.perf_counter()
        exports[mode] = export_onnx(model, plan, path, shape, mode=mode, model_name=name, variant="accurate")
        exports[mode].seconds = time.perf_counter() - t
    weights = {f"{n}.weight": m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    bits = sum(n * (plan[k].width if k in plan else 32) for k, n in weights.items()) / sum(weights.values())
    size = {m: p.stat().st_size for m, p in paths.items()}
    ideal = bits / 32 * size["fp32"]
    bounds = {"strict": ideal * 1.02, "lenient": ideal + 0.02 * size["fp32"]}
    result = {
        "model": name, "plan": plan_source, "weight_elements": sum(weights.values()),
        "mean_weight_bits": bits,
        "size_bytes": size, "torch_export_fp32_bytes": _torch_export_size(model, shape),
        "ideal_bytes": ideal, "size_bounds_bytes": bounds,
        "size_ok": {reading: {m: size[m] <= bound for m in ("weights-only", "full")}
                    for reading, bound in bounds.items()},
        "size_ratio_to_ideal": {m: size[m] / ideal for m in ("weights-only", "full")},
        "compression_vs_fp32": {m: size["fp32"] / size[m] for m in ("weights-only", "full")},
        "export_seconds": {m: e.seconds for m, e in exports.items()},
        "rounding_methods": dict(Counter(t.method for t in exports["full"].tensors if t.kind == "activation")),
        "opset": {m: e.opset for m, e in exports.items()},
        "session_create_ms": {m: 1e3 * _creation(p) for m, p in paths.items()},
    }
    ops = {m: _optimized_ops(p, d / f".{name}-{m}.opt.onnx") for m, p in paths.items()}
    extra_full = ops["full"] - ops["fp32"]
    # folded: the optimized weights-only graph is the fp32 graph, node for node, and the full graph
    # keeps nothing of the decode (its extra nodes are the roundings)
    result["decode_constant_folded"] = ops["weights-only"] == ops["fp32"] and not (
        set(extra_full) & {"BitShift", "ReduceSum", "Gather", "Mod", "Unsqueeze"})
    result["rounding_nodes_after_optimization"] = sum(extra_full.values())
    lat = {}
    for batch in (1, 64):
        budget = 0.05 if quick else 0.15
        best = _latency(paths, shape, batch, rounds=3 if quick else 15, budget=budget)
        lat[f"batch{batch}"] = {"ms": {k: 1e3 * v for k, v in best.items()},
                                "ratio_weights_only": best["weights-only"] / best["fp32"],
                                "ratio_full": best["full"] / best["fp32"]}
    result["latency"] = lat
    result["latency_ok"] = {b: {"weights-only": v["ratio_weights_only"] <= 1.05, "full": v["ratio_full"] <= 1.5}
                            for b, v in lat.items()}
    agree = {}
    for mode in ("weights-only", "full"):
        t = time.perf_counter()
        r = compare(model, plan, str(paths[mode]), data.test.images)
        r["seconds"] = time.perf_counter() - t
        over = r.pop("over_tolerance_indices")
        r.pop("disagreement_indices")
        r["explanations"] = explain(model, plan, str(paths[mode]), data.test.images[over[:20]]) if over else []
        agree[mode] = r
    result["agreement_test_split"] = agree
    return result


def _torch_export_size(model: torch.nn.Module, shape) -> int:
    """Bytes of the plain TorchScript export (no SIEVE compaction), for comparison."""
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros((1, *shape)),), buf, dynamo=False, opset_version=18,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return len(buf.getvalue())


def _verdicts(r: dict) -> list[str]:
    """One PASS/FAIL line per size reading and per latency batch size."""
    out = []
    for reading, ok in r["size_ok"].items():
        bound = r["size_bounds_bytes"][reading]
        out.append(f"{r['model']} size ({reading}, bound {bound:,.0f} B): "
                   + ", ".join(f"{m} {r['size_bytes'][m]:,} B {'PASS' if v else 'FAIL'}" for m, v in ok.items()))
    for b, ok in r["latency_ok"].items():
        v = r["latency"][b]
        out.append(f"{r['model']} latency {b}: weights-only {v['ratio_weights_only']:.3f}x (<= 1.05) "
                   f"{'PASS' if ok['weights-only'] else 'FAIL'}, full {v['ratio_full']:.3f}x (<= 1.5) "
                   f"{'PASS' if ok['full'] else 'FAIL'}")
    return out


def _markdown(results: list[dict]) -> str:
    lines = ["# Compressed ONNX export", "",
             "Command: `.venv/bin/python -m tests.bench.run --only export` (one run; latency: onnxruntime CPU,"
             " 1 intra-op thread, fastest mean of interleaved blocks of calls).", ""]
    for r in results:
        if "skipped" in r:
            lines += [f"## {r['model']}", "", f"skipped: {r['skipped']}", ""]
            continue
        s, lat = r["size_bytes"], r["latency"]
        lines += [f"## {r['model']}", "", f"plan: {r['plan']}; mean weight bits {r['mean_weight_bits']:.3f}", "",
                  "| file | bytes | vs fp32 | vs ideal (bits/32 x fp32) |", "|---|---:|---:|---:|",
                  f"| fp32 | {s['fp32']:,} | 1.00x | |"]
        for m in ("weights-only", "full"):
            lines.append(f"| {m} | {s[m]:,} | {r['compression_vs_fp32'][m]:.2f}x smaller | "
                         f"{r['size_ratio_to_ideal'][m]:.4f} |")
        b_ = r["size_bounds_bytes"]
        lines += ["", f"ideal (bits/32 x fp32 file): {r['ideal_bytes']:,.0f} bytes; bound, strict reading "
                      f"(ideal x 1.02): {b_['strict']:,.0f}; lenient reading (ideal + 2 % of the fp32 file): "
                      f"{b_['lenient']:,.0f}.  Plain torch.onnx.export fp32 file: {r['torch_export_fp32_bytes']:,} bytes.",
                  "", *[f"- {v}" for v in _verdicts(r)], "",
                  "| latency (ms) | fp32 | weights-only | full | ratio w-only | ratio full |",
                  "|---|---:|---:|---:|---:|---:|"]
        for b, v in lat.items():
            ms = v["ms"]
            lines.append(f"| {b} | {ms['fp32']:.3f} | {ms['weights-only']:.3f} | {ms['full']:.3f} | "
                         f"{v['ratio_weights_only']:.3f} | {v['ratio_full']:.3f} |")
        c = r["session_create_ms"]
        lines += ["", f"session creation (ms): fp32 {c['fp32']:.1f}, weights-only {c['weights-only']:.1f}, "
                      f"full {c['full']:.1f}; decode constant-folded at session start: {r['decode_constant_folded']}"
                      f" ({r['rounding_nodes_after_optimization']} rounding nodes remain in the full graph); "
                      f"activation roundings by method: {r['rounding_methods']}", ""]
        for m, a in r["agreement_test_split"].items():
            lines.append(f"- {m}: top-1 agreement {a['top1_agreement']:.4%} on {a['images']} test images, "
                         f"max relative logit diff {a['max_relative_logit_diff']:.2e}, "
                         f"{a['images_over_tolerance']} images over {a['tolerance']:g}")
            for e in a["explanations"]:
                lines.append(f"  - image {e['image']}: first differing rounding {e['tensor']} "
                             f"({e['elements_differing']} of {e['elements']} elements); their fp32 inputs were "
                             f"{e['max_input_ulps_apart']} ulps apart = {e['max_input_diff_vs_tensor_max']:.1e} of the tensor's max "
                             f"(summation order); the graph's rounding "
                             f"of its own input equals the emulator's: "
                             f"{e['onnx_rounding_matches_emulator_on_onnx_inputs']}; e.g. (torch in, onnx in, "
                             f"torch q, onnx q) = {e['values'][0]}")
        lines.append("")
    return "\n".join(lines)


def run(out_dir: Path, quick: bool) -> dict:
    from sieve.errors import SieveError

    results = []
    for name in MODELS:
        try:
            results.append(bench_model(name, Path(out_dir), quick))
        except SieveError as exc:  # e.g. resnet20 without ../shared
            results.append({"model": name, "skipped": str(exc)})
        if "skipped" in results[-1]:
            print(f"{name}: skipped: {results[-1]['skipped']}", flush=True)
        else:
            print("\n".join(_verdicts(results[-1])), flush=True)
    doc = {"benchmark": "export", "quick": quick, "results": results}
    write_json(Path(out_dir) / "export.json", doc)
    write_text(Path(out_dir) / "export.md", _markdown(results))
    return doc
