"""Benchmark ``scale`` (issue 15): Ray scale-out on this machine and the ImageNet scaling model.

* **Ray**: the same resnet20 search (CIFAR-10, greedy, fresh) as one process with 2 torch
  threads, and sharded over 1 and 2 Ray actors (1 torch thread each): wall time of the search,
  the ratios to the single process, the per-evaluation time Ray adds beyond the slowest actor's
  own run (ms), and whether the plans are identical (they must be).  The machine has 2 cores, so
  2 actors can at best match 2 threads; the ratios are reported as measured.
* **Forward cost**: measured fp32 per-image forward time of AlexNet, SqueezeNet 1.0, ResNet-18,
  ResNet-50 and VGG-16 at 224x224 (batch 16, all cores, best of the repetitions; random weights:
  the time does not depend on them), the input of ``docs/scaling.md``'s model
  ``time = per-image cost x images x fp32 passes``.

Writes ``out_dir/scale.json``, ``scale.md`` and ``scale.png``.  Knobs: ``SIEVE_BENCH_SCALE_VAL``
[1000], ``SIEVE_BENCH_SCALE_TEST`` [1000] (resnet20 images), ``SIEVE_BENCH_SCALE_PARTS``
[ray,forward].
"""

from __future__ import annotations

import os
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

    fig, axes = plt.subplots(1, 2 if "ray" in res and "forward" in res else 1, figsize=(10, 4), squeeze=False)
    ax = axes[0]
    if "ray" in res:
        runs = res["ray"]["runs"]
        ax[0].bar(list(runs), [r["search_seconds"] for r in runs.values()])
        ax[0].set_ylabel("search seconds (resnet20)")
        ax = ax[1:]
    if "forward" in res:
        table = res["forward"]["table"]
        ax[0].bar(list(table), [t["cpu_ms_per_image"] for t in table.values()])
        ax[0].set_ylabel("fp32 ms per image (this CPU)")
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
    write_text(out_dir / "scale.md", _markdown({k: v for k, v in res.items() if "skipped" not in v}))
    _plot({k: v for k, v in res.items() if "skipped" not in v}, out_dir / "scale.png")
    return res
