"""Benchmark ``scale`` (issue 15): Ray scale-out on this machine, the ImageNet scaling model and
SqueezeNet's whole search before vs after the issue.

* **Ray**: the same resnet20 search (CIFAR-10, greedy, fresh) as one process with 2 torch
  threads, and sharded over 1 and 2 Ray actors (1 torch thread each): wall time of the search,
  the ratios to the single process, the per-evaluation time Ray adds beyond the slowest actor's
  own run (ms), and whether the plans are identical (they must be).  The machine has 2 cores, so
  2 actors can at best match 2 threads; the ratios are reported as measured.
* **Forward cost**: measured fp32 per-image forward time of AlexNet, SqueezeNet 1.0, ResNet-18,
  ResNet-50 and VGG-16 at 224x224 (batch 16, all cores, best of the repetitions; random weights:
  the time does not depend on them), the input of ``docs/scaling.md``'s model
  ``time = per-image cost x images x fp32 passes``.

* **SqueezeNet before vs after** (part ``squeezenet``, only when asked: about an hour): the whole
  ``sieve search`` of SqueezeNet 1.0 (Deep Compression weights, ``../shared``) on the 1,000-image
  ImageNet sample, as a subprocess per run — wall time, peak RSS (the child's own rusage from
  ``os.wait4``, no ``/usr/bin/time`` needed) and cost in fp32 passes — for this code
  (``--cache-mem 256M``) and, with ``SIEVE_BENCH_SCALE_BEFORE=<git rev>``, for that revision from a
  detached ``git worktree`` (its default flags).  The two run concurrently, one torch thread each,
  so both see the same load.  Without a before revision the "before" row is issue 15's figure,
  recorded in an earlier session on this machine.  ``SIEVE_BENCH_SCALE_SQUEEZENET_DIRS=<before>,<after>``
  builds the same table from two finished output directories (plan.json, plus ``<dir>.rss_kb`` /
  ``<dir>.wall_s`` or ``/usr/bin/time -v`` stderr in ``<dir>.err``) without running anything.

Writes ``out_dir/scale.json``, ``scale.md`` and ``scale.png``.  Knobs: ``SIEVE_BENCH_SCALE_VAL``
[1000], ``SIEVE_BENCH_SCALE_TEST`` [1000] (resnet20 images), ``SIEVE_BENCH_SCALE_PARTS``
[ray,forward; add squeezenet to run it], ``SIEVE_BENCH_SCALE_BEFORE``,
``SIEVE_BENCH_SCALE_SQUEEZENET_DIRS``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from sieve.io_utils import write_json, write_text

IMAGES_AT_SCALE = 50_000
PASSES = (25, 58)  # the goal, and SqueezeNet's measured search cost before it (fp32 passes)
# one GPU, assumed: ResNet-50 v1.5 FP32 inference on one V100 16GB, batch 128: 1,229 img/s
# (NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
#  "Inference performance: NVIDIA DGX-1 (1x V100 16GB)", pytorch-21.03 NGC container)
GPU_RESNET50_IMG_PER_S = 1229.0


# ---------------------------------------------------------------- architectures (timing only)
def _vgg16() -> nn.Module:
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True),
                         nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, 1000))


class _Block(nn.Module):
    def __init__(self, cin, mid, stride, bottleneck):
        super().__init__()
        cout = mid * 4 if bottleneck else mid
        if bottleneck:
            self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                                      nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                                      nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        else:
            self.body = nn.Sequential(nn.Conv2d(cin, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                                      nn.Conv2d(mid, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())
        self.cout = cout

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def _resnet(blocks, bottleneck) -> nn.Module:
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, (n, mid) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for j in range(n):
            block = _Block(c, mid, 2 if (j == 0 and i > 0) else 1, bottleneck)
            layers.append(block)
            c = block.cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000))


def _models() -> dict:
    from sieve.models.imagenet import AlexNet, SqueezeNet1_0

    return {"alexnet": AlexNet, "squeezenet1_0": SqueezeNet1_0, "resnet18": lambda: _resnet((2, 2, 2, 2), False),
            "resnet50": lambda: _resnet((3, 4, 6, 3), True), "vgg16": _vgg16}


def forward_costs(batch: int = 16, reps: int = 3) -> dict:
    """Seconds per image of one fp32 forward pass at 224x224, all cores, best of ``reps``."""
    out = {}
    x = torch.randn(batch, 3, 224, 224)
    for name, make in _models().items():
        model = make().eval()
        best = float("inf")
        with torch.no_grad():
            model(x[:2])  # warm-up
            for _ in range(reps):
                t0 = time.perf_counter()
                model(x)
                best = min(best, time.perf_counter() - t0)
        out[name] = best / batch
    return out


def scaling_table(costs: dict, workers=(1, 2, 8, 32)) -> dict:
    """Hours of a whole search at 50,000 images: this CPU, one GPU (assumed), N CPU Ray workers
    like this machine (ideal linear speed-up: an upper bound)."""
    gpu_s_per_img_r50 = 1.0 / GPU_RESNET50_IMG_PER_S
    rows = {}
    for name, s in costs.items():
        gpu = s / costs["resnet50"] * gpu_s_per_img_r50  # relative cost assumed to carry over
        rows[name] = {"cpu_ms_per_image": round(1000 * s, 2), "gpu_ms_per_image_assumed": round(1000 * gpu, 3),
                      "fp32_pass_hours_cpu": round(s * IMAGES_AT_SCALE / 3600, 2)}
        for p in PASSES:
            rows[name][f"search_hours_cpu_{p}_passes"] = round(s * IMAGES_AT_SCALE * p / 3600, 1)
            rows[name][f"search_hours_gpu_{p}_passes"] = round(gpu * IMAGES_AT_SCALE * p / 3600, 2)
            for n in workers:
                rows[name][f"search_hours_{n}_ray_cpu_workers_{p}_passes"] = round(s * IMAGES_AT_SCALE * p / 3600 / n, 1)
    return rows


# ---------------------------------------------------------------- Ray on this machine
def ray_comparison(out_dir: Path, n_val: int, n_test: int) -> dict:
    from sieve.model_source import load as load_source
    from sieve.search import run_search

    loaded, data = load_source("resnet20", val=n_val, test=n_test)
    model = loaded.model
    runs = {}
    configs = {"single_2_threads": dict(threads=2), "ray_1_worker": dict(threads=1, ray="local", ray_workers=1),
               "ray_2_workers": dict(threads=1, ray="local", ray_workers=2)}
    for name, kw in configs.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc = run_search(model, data, model_name="resnet20", out_dir=out_dir / "scale" / name, resume=False,
                             progress=False, report=False, **kw)
        runs[name] = {"search_seconds": round(doc["search_seconds"], 1), "wall_seconds": round(time.perf_counter() - t0, 1),
                      "evaluations": doc["evaluations"], "fp32_passes": round(doc["cost"]["search_fp32_passes"], 1),
                      "ray": doc["cost"].get("ray"), "plans": {v: d["tensors"] for v, d in doc["variants"].items()}}
    base = runs["single_2_threads"]["search_seconds"]
    summary = {"val_images": n_val, "test_images": n_test, "runs": {}}
    for name, r in runs.items():
        summary["runs"][name] = {k: v for k, v in r.items() if k != "plans"}
        summary["runs"][name]["speedup_vs_single"] = round(base / r["search_seconds"], 2)
        summary["runs"][name]["plan_identical_to_single"] = r["plans"] == runs["single_2_threads"]["plans"]
    return summary


# ---------------------------------------------------------------- SqueezeNet before vs after
SHARED = Path(os.environ.get("SIEVE_SHARED", Path(__file__).resolve().parents[3] / "shared"))
SQ_WEIGHTS = ("models", "squeezenet1.0-deepcompression", "squeezenet1.0_deepcompression_decoded.npz")
SQ_DATA = ("data", "imagenet-sample")
SQ_VARIANTS = ("exact", "accurate", "approximate")
# issue 15's goals for this search: fp32 passes (absolute), wall-time ratio before/after, peak RSS (GiB)
SQ_GOAL_PASSES, SQ_GOAL_SPEEDUP, SQ_GOAL_RSS_GB = 25.0, 2.0, 2.0
# used as "before" when no before revision runs: the figures, measured by an earlier session
# on this machine (loaded 2-core machine, 1,000-image sample, whole search)
SQ_RECORDED_BEFORE = {"label": "before (recorded in an earlier session on this machine, issue 15)",
                      "recorded": True, "search_seconds": 2822.0, "search_fp32_passes": 58.0,
                      "evaluations": 326, "wall_seconds": 51 * 60.0, "peak_rss_gb": 7.4}
_RSS_RE = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")
_WALL_RE = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*([\d:.]+)")
_CMD_RE = re.compile(r'Command being timed:\s*"(.*)"')


def read_rss_kb(path: Path) -> int | None:
    """Peak RSS in KiB from a file holding just the number (what this benchmark writes beside an
    output directory, ``<dir>.rss_kb``) or from ``/usr/bin/time -v`` stderr; None when neither."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    if text.strip().isdigit():
        return int(text.strip())
    m = _RSS_RE.findall(text)
    return int(m[-1]) if m else None


def _time_v_wall(text: str) -> float | None:
    """Wall seconds of ``/usr/bin/time -v`` ("h:mm:ss" or "m:ss.ss")."""
    m = _WALL_RE.findall(text)
    if not m:
        return None
    seconds = 0.0
    for part in m[-1].split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def run_figures(plan: dict, wall_seconds: float | None, rss_kb: int | None) -> dict:
    """The benchmark's figures of one finished search: from its plan.json, its wall time and peak RSS."""
    cost = plan.get("cost") or {}
    out = {"search_seconds": plan.get("search_seconds"), "search_fp32_passes": cost.get("search_fp32_passes"),
           "fp32_pass_seconds": cost.get("fp32_pass_seconds"), "evaluations": plan.get("evaluations"),
           "evaluations_run": cost.get("evaluations_run"),
           "wall_seconds": None if wall_seconds is None else round(float(wall_seconds), 1),
           "peak_rss_kb": rss_kb, "peak_rss_gb": None if rss_kb is None else round(rss_kb / (1 << 20), 2),
           "variants": {}}
    for name in SQ_VARIANTS:
        v = (plan.get("variants") or {}).get(name)
        if v is not None:
            out["variants"][name] = {"mean_bits": v.get("mean_bits"),
                                     "normalized_test_accuracy": v.get("normalized_test_accuracy"),
                                     "holds_on_test": v.get("holds_on_test"), "tensors": v.get("tensors")}
    return out


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def compare(before: dict, after: dict) -> dict:
    """Ratios after/before and the issue's goals, each met / not met (None: a figure is missing).

    The wall ratio uses wall seconds when both runs have them, else search seconds (``wall_basis``
    says which): a directory built without a timer still has plan.json's search_seconds.
    """
    basis = "wall_seconds" if before.get("wall_seconds") and after.get("wall_seconds") else "search_seconds"
    wall = _ratio(after.get(basis), before.get(basis))
    passes = _ratio(after.get("search_fp32_passes"), before.get("search_fp32_passes"))
    rss = _ratio(after.get("peak_rss_gb"), before.get("peak_rss_gb"))
    speedup = None if not wall else round(1 / wall, 2)
    p, r = after.get("search_fp32_passes"), after.get("peak_rss_gb")
    goals = {"fp32_passes": {"goal": f"<= {SQ_GOAL_PASSES:g} fp32 passes", "value": None if p is None else round(p, 1),
                             "met": None if p is None else p <= SQ_GOAL_PASSES},
             "wall": {"goal": f">= {SQ_GOAL_SPEEDUP:g}x less wall time (before/after, {basis.replace('_', ' ')})",
                      "value": speedup,
                      "met": None if speedup is None else speedup >= SQ_GOAL_SPEEDUP},
             "peak_rss": {"goal": f"peak RSS <= {SQ_GOAL_RSS_GB:g} GiB", "value": r,
                          "met": None if r is None else r <= SQ_GOAL_RSS_GB}}
    same = {v: before["variants"][v]["tensors"] == after["variants"][v]["tensors"]
            for v in SQ_VARIANTS if v in before.get("variants", {}) and v in after.get("variants", {})
            and before["variants"][v].get("tensors") is not None}
    return {"ratios_after_over_before": {"wall": wall, "wall_basis": basis, "fp32_passes": passes, "peak_rss": rss},
            "speedup": speedup, "goals": goals, "same_plan": same}


def figures_from_dir(path: Path) -> dict:
    """Figures of a finished search output directory: its plan.json, plus peak RSS and wall time
    from ``<dir>.rss_kb`` / ``<dir>.wall_s`` (written by this benchmark) or ``<dir>.err`` (the
    stderr of ``/usr/bin/time -v``), when present."""
    path = Path(path)
    plan_file = path / "plan.json"
    if not plan_file.is_file():
        raise FileNotFoundError(f"{plan_file} is missing: is the search in {path} finished?")
    plan = json.loads(plan_file.read_text())
    err = Path(f"{path}.err")
    err_text = err.read_text(errors="replace") if err.is_file() else ""
    rss = read_rss_kb(Path(f"{path}.rss_kb"))
    if rss is None and err_text:
        rss = read_rss_kb(err)
    wall_file = Path(f"{path}.wall_s")
    wall = float(wall_file.read_text().strip()) if wall_file.is_file() else _time_v_wall(err_text)
    fig = run_figures(plan, wall, rss)
    fig["out_dir"] = str(path)
    cmd = _CMD_RE.findall(err_text)
    if cmd:
        fig["command"] = cmd[-1]
    # when each run ended and how long it took tells whether two runs overlapped in time
    end = err.stat().st_mtime if err_text else plan_file.stat().st_mtime
    if wall is not None:
        fig["interval"] = [round(end - wall, 1), round(end, 1)]
    return fig


def _overlap(a: dict, b: dict) -> float | None:
    if "interval" not in a or "interval" not in b:
        return None
    return round(max(0.0, min(a["interval"][1], b["interval"][1]) - max(a["interval"][0], b["interval"][0])), 1)


def squeezenet_missing() -> str | None:
    """Why the SqueezeNet part cannot run here, or None."""
    for parts in (SQ_WEIGHTS, SQ_DATA):
        if not SHARED.joinpath(*parts).exists():
            return f"needs {SHARED.joinpath(*parts)} (the project's ../shared data); absent on this machine"
    return None


def _search_args(out: Path, quick: bool) -> list:
    args = ["search", "--model", "squeezenet1_0", "--weights", str(SHARED.joinpath(*SQ_WEIGHTS)),
            "--data", str(SHARED.joinpath(*SQ_DATA)), "--fresh", "--threads", "1", "--quiet", "--out", str(out)]
    return args + (["--val", "60", "--test", "60"] if quick else [])


# Runs one command and writes its wall seconds and peak RSS (KiB) as JSON to argv[1].  Why a
# launcher: Linux carries the forking process's high-water RSS into the child's ru_maxrss at exec
# (the benchmark process holds torch, ~300 MB, more after the forward part), so wait4 on a child
# of this process would report at least that; forked from this small interpreter instead, the
# floor is ~10 MB, as with /usr/bin/time.
_LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(p.pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": time.perf_counter() - t0, "rss_kb": usage.ru_maxrss, "returncode": code}, fh)
sys.exit(code if 0 <= code < 256 else 1)
"""


def run_concurrently(jobs: dict) -> dict:
    """Start every job at once (``{label: (argv, env, cwd, log)}``), wait for all; per job: wall
    seconds, peak RSS (KiB, that child's own rusage via ``os.wait4``) and exit code.  Concurrent so
    that every run sees the same load."""
    procs, results = {}, {}
    try:
        for label, (argv, env, cwd, log) in jobs.items():
            with open(log, "wb") as fh:
                procs[label] = subprocess.Popen([sys.executable, "-c", _LAUNCHER, f"{log}.usage.json", *map(str, argv)],
                                                env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                                start_new_session=True)
        for label, proc in procs.items():
            proc.wait()
            usage = Path(f"{jobs[label][3]}.usage.json")
            results[label] = json.loads(usage.read_text()) if usage.is_file() else {"returncode": proc.returncode}
            usage.unlink(missing_ok=True)
    finally:
        for p in procs.values():
            if p.returncode is None:  # interrupted: stop the launcher and the search under it
                os.killpg(p.pid, 9)
                p.wait()
    return results


def _child_env(pythonpath: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(pythonpath), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("SIEVE_BENCH_SCALE_BEFORE", None)
    return env


def squeezenet_runs(out_dir: Path, quick: bool, before_rev: str | None) -> dict:
    """Run the search for the current code (``--cache-mem 256M``) and, if ``before_rev`` is given,
    for that revision (a detached git worktree, its default flags), concurrently, 1 thread each."""
    root = Path(__file__).resolve().parents[2]
    base = out_dir / "squeezenet"
    base.mkdir(parents=True, exist_ok=True)
    jobs = {"after": ([sys.executable, "-m", "sieve.cli.main", *_search_args(base / "after", quick), "--cache-mem", "256M"],
                      _child_env(root / "sw"), root, base / "after.log")}
    worktree = None
    try:
        if before_rev:
            worktree = Path(tempfile.mkdtemp(prefix="sieve-before-")) / "tree"
            subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(worktree), before_rev],
                           check=True, capture_output=True)
            rev = subprocess.run(["git", "-C", str(worktree), "rev-parse", "HEAD"], check=True, capture_output=True,
                                 text=True).stdout.strip()
            jobs["before"] = ([sys.executable, "-m", "sieve.cli.main", *_search_args(base / "before", quick)],
                              _child_env(worktree / "sw"), worktree, base / "before.log")
        results = run_concurrently(jobs)
    finally:
        if worktree is not None:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(worktree)], capture_output=True)
            shutil.rmtree(worktree.parent, ignore_errors=True)
    figs = {}
    for label, r in results.items():
        d = base / label
        if r["returncode"] != 0:
            tail = Path(jobs[label][3]).read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"squeezenet {label} search exited {r['returncode']}: {' | '.join(tail)}")
        Path(f"{d}.rss_kb").write_text(f"{r['rss_kb']}\n")
        Path(f"{d}.wall_s").write_text(f"{r['wall']:.1f}\n")
        figs[label] = figures_from_dir(d)
        figs[label]["command"] = " ".join(str(a) for a in jobs[label][0])
    figs["after"]["label"] = "after (this code, --cache-mem 256M)"
    if "before" in figs:
        figs["before"]["label"] = f"before ({before_rev} = {rev[:10]}, its default flags)"
        figs["before"]["revision"] = rev
        figs["before"]["command"] = f"PYTHONPATH=<worktree of {rev[:10]}>/sw {figs['before']['command']}"
    return {"source": "run", "concurrent": "before" in figs, "quick": quick, **_assemble(figs)}


def _assemble(figs: dict) -> dict:
    before = figs.get("before", SQ_RECORDED_BEFORE)
    res = {"before": before, "after": figs["after"], **compare(before, figs["after"])}
    res["overlap_seconds"] = _overlap(before, figs["after"])
    for run in (res["before"], res["after"]):  # the plans stay in the output directories' plan.json
        for v in run.get("variants", {}).values():
            v.pop("tensors", None)
    return res


def squeezenet_from_dirs(before_dir: Path, after_dir: Path) -> dict:
    """The same table from two finished output directories; nothing runs."""
    figs = {"before": figures_from_dir(before_dir), "after": figures_from_dir(after_dir)}
    figs["before"]["label"] = f"before ({before_dir})"
    figs["after"]["label"] = f"after ({after_dir})"
    return {"source": "dirs", **_assemble(figs)}


def squeezenet_part(out_dir: Path, quick: bool) -> dict:
    dirs = os.environ.get("SIEVE_BENCH_SCALE_SQUEEZENET_DIRS")
    if dirs:
        parts = [p.strip() for p in dirs.split(",")]
        if len(parts) != 2 or not all(parts):
            return {"skipped": f"SIEVE_BENCH_SCALE_SQUEEZENET_DIRS={dirs!r}: give two directories, before,after"}
        return squeezenet_from_dirs(Path(parts[0]), Path(parts[1]))
    missing = squeezenet_missing()
    if missing:
        return {"skipped": missing}
    return squeezenet_runs(out_dir, quick, os.environ.get("SIEVE_BENCH_SCALE_BEFORE") or None)


def _fmt(x, nd=1):
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    return f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}" if isinstance(x, int) else str(x)


def _squeezenet_markdown(s: dict) -> list:
    lines = ["## SqueezeNet 1.0 (Deep Compression weights), 1,000-image ImageNet sample: whole search", ""]
    if s["source"] == "run":
        if s["concurrent"]:
            lines.append("Both searches ran **concurrently** on this machine, one torch thread each "
                         "(`--threads 1`), so both saw the same load.")
        else:
            lines.append("Only the current code ran here (set SIEVE_BENCH_SCALE_BEFORE=<git rev> to run the old "
                         "code beside it); the before row was **recorded in an earlier session on this machine** "
                         "(issue 15's figures), not measured in this run.")
        if s.get("quick"):
            lines.append("Quick mode: 60 val + 60 test images only; the figures are a smoke test, not the benchmark.")
    else:
        ov = s.get("overlap_seconds")
        lines.append("Built from two finished search output directories (nothing ran here); peak RSS and wall time "
                     "from `/usr/bin/time -v` stderr (`<dir>.err`) or `<dir>.rss_kb`/`<dir>.wall_s`."
                     + (f" The two runs overlapped in time for {ov:,.0f} s." if ov is not None else ""))
    lines += ["", "| run | wall s | search s | fp32 passes | fp32 pass s | evaluations | evaluations run | peak RSS GiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key in ("before", "after"):
        r = s[key]
        lines.append(f"| {r.get('label', key)} | {_fmt(r.get('wall_seconds'), 0)} | {_fmt(r.get('search_seconds'), 0)} | "
                     f"{_fmt(r.get('search_fp32_passes'))} | {_fmt(r.get('fp32_pass_seconds'), 2)} | "
                     f"{_fmt(r.get('evaluations'))} | {_fmt(r.get('evaluations_run'))} | {_fmt(r.get('peak_rss_gb'), 2)} |")
    commands = [f"* {key}: `{s[key]['command']}`" for key in ("before", "after") if s[key].get("command")]
    lines += [""] + commands if commands else []
    rat = s["ratios_after_over_before"]
    lines += ["", f"after / before: wall {_fmt(rat['wall'], 3)} ({rat['wall_basis'].replace('_', ' ')}), "
              f"fp32 passes {_fmt(rat['fp32_passes'], 3)}, peak RSS {_fmt(rat['peak_rss'], 3)}.", "",
              "| goal (issue 15) | after | met |", "|---|---:|---|"]
    for g in s["goals"].values():
        met = "n/a" if g["met"] is None else "met" if g["met"] else "not met"
        lines.append(f"| {g['goal']} | {_fmt(g['value'], 2)} | {met} |")
    variants = [v for v in SQ_VARIANTS if v in s["after"].get("variants", {})]
    if variants:
        lines += ["", "| variant | mean bits before | after | norm. test acc before | after | holds on test before | after | same plan |",
                  "|---|---:|---:|---:|---:|---|---|---|"]
        for v in variants:
            b, a = s["before"].get("variants", {}).get(v, {}), s["after"]["variants"][v]
            same = s["same_plan"].get(v)
            lines.append(f"| {v} | {_fmt(b.get('mean_bits'), 3)} | {_fmt(a.get('mean_bits'), 3)} | "
                         f"{_fmt(b.get('normalized_test_accuracy'), 4)} | {_fmt(a.get('normalized_test_accuracy'), 4)} | "
                         f"{_fmt(b.get('holds_on_test'))} | {_fmt(a.get('holds_on_test'))} | "
                         f"{'-' if same is None else 'yes' if same else 'no'} |")
    return lines + [""]


def _markdown(res: dict) -> str:
    lines = ["# Scale (issue 15)", ""]
    if "ray" in res:
        r = res["ray"]
        lines += [f"## resnet20 search, {r['val_images']} val + {r['test_images']} test images, this 2-core machine", "",
                  "| run | search s | speed-up vs single | evaluations | Ray overhead ms/eval | restarts | same plan |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, x in r["runs"].items():
            ray = x.get("ray") or {}
            lines.append(f"| {name} | {x['search_seconds']} | {x['speedup_vs_single']} | {x['evaluations']} | "
                         f"{ray.get('overhead_ms_per_evaluation', 0):.1f} | {ray.get('restarts', '-')} | "
                         f"{'yes' if x['plan_identical_to_single'] else 'NO'} |")
        lines.append("")
    if "squeezenet" in res:
        lines += _squeezenet_markdown(res["squeezenet"])
    if "forward" in res:
        lines += ["## Whole search at 50,000 ImageNet images (hours)", "",
                  f"GPU assumed: ResNet-50 FP32 {GPU_RESNET50_IMG_PER_S:.0f} img/s (one V100 16GB, NVIDIA "
                  "DeepLearningExamples resnet50v1.5 README), other models scaled by their CPU cost ratio.", "",
                  "| model | CPU ms/img | fp32 pass h (CPU) | " + " | ".join(
                      f"CPU {p} passes | GPU {p} passes | 8 Ray workers {p} passes" for p in PASSES) + " |",
                  "|---|---:|---:|" + "---:|---:|---:|" * len(PASSES)]
        for name, x in res["forward"]["table"].items():
            lines.append(f"| {name} | {x['cpu_ms_per_image']} | {x['fp32_pass_hours_cpu']} | " + " | ".join(
                f"{x[f'search_hours_cpu_{p}_passes']} | {x[f'search_hours_gpu_{p}_passes']} | "
                f"{x[f'search_hours_8_ray_cpu_workers_{p}_passes']}" for p in PASSES) + " |")
    return "\n".join(lines) + "\n"


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "ray" in res:
        runs = res["ray"]["runs"]
        panels.append((list(runs), [r["search_seconds"] for r in runs.values()], "search seconds (resnet20)", None))
    if "forward" in res:
        table = res["forward"]["table"]
        panels.append((list(table), [t["cpu_ms_per_image"] for t in table.values()], "fp32 ms per image (this CPU)", None))
    if "squeezenet" in res:
        sq = res["squeezenet"]
        b, a = sq["before"], sq["after"]
        wall = "wall_seconds" if b.get("wall_seconds") and a.get("wall_seconds") else "search_seconds"
        wall_goal = None if b.get(wall) is None else b[wall] / SQ_GOAL_SPEEDUP
        for key, label, goal in ((wall, f"SqueezeNet {wall.replace('_', ' ')}", wall_goal),
                                 ("search_fp32_passes", "SqueezeNet fp32 passes", SQ_GOAL_PASSES),
                                 ("peak_rss_gb", "SqueezeNet peak RSS GiB", SQ_GOAL_RSS_GB)):
            panels.append((["before", "after"], [b.get(key) or 0, a.get(key) or 0], label, goal))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(3.6 * max(1, len(panels)), 4), squeeze=False)
    for ax, (names, values, ylabel, goal) in zip(axes[0], panels):
        ax.bar(names, values)
        if goal is not None:
            ax.axhline(goal, color="red", linestyle="--", label="issue 15 goal")
            ax.legend(fontsize=8)
        ax.set_ylabel(ylabel)
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(out_dir: Path, quick: bool) -> dict:
    out_dir = Path(out_dir)
    parts = os.environ.get("SIEVE_BENCH_SCALE_PARTS", "ray,forward").split(",")
    res: dict = {}
    if "forward" in parts:
        costs = forward_costs(batch=4 if quick else 16, reps=1 if quick else 3)
        res["forward"] = {"seconds_per_image": costs, "threads": torch.get_num_threads(),
                          "gpu_resnet50_img_per_s_assumed": GPU_RESNET50_IMG_PER_S, "table": scaling_table(costs)}
    if "squeezenet" in parts:
        res["squeezenet"] = squeezenet_part(out_dir, quick)
    if "ray" in parts:
        try:
            import ray  # noqa: F401
        except ImportError:
            res["ray"] = {"skipped": "ray is not installed (pip install -e '.[ray]')"}
        else:
            n_val = 300 if quick else int(os.environ.get("SIEVE_BENCH_SCALE_VAL", 1000))
            n_test = 300 if quick else int(os.environ.get("SIEVE_BENCH_SCALE_TEST", 1000))
            res["ray"] = ray_comparison(out_dir, n_val, n_test)
    write_json(out_dir / "scale.json", res)
    skipped = [f"* {k} skipped: {v['skipped']}" for k, v in res.items() if "skipped" in v]
    write_text(out_dir / "scale.md", _markdown({k: v for k, v in res.items() if "skipped" not in v})
               + ("\n" + "\n".join(skipped) + "\n" if skipped else ""))
    _plot({k: v for k, v in res.items() if "skipped" not in v}, out_dir / "scale.png")
    return res
