"""Models from outside the zoo: an ONNX ResNet-50 imported, searched, exported and checked, and
the cost of the import against the same network defined in torch.

* ``resnet50``: a ResNet-50-shaped graph (the 3-4-6-3 bottleneck layout, 53 convolutions, made-up
  weights, BatchNorm kept; base width 8 instead of 64 so that it searches on a shared core in
  tens of minutes) exported with ``torch.onnx.export`` at 224x224, then ``import_onnx`` (seconds), a
  greedy search on 128 images whose labels are the fp32 model's own predictions (seconds per
  evaluation against one fp32 pass of the same images), and ``sieve export`` of the accurate plan,
  checked in onnxruntime against the emulated model (top-1 agreement, must be 100 %).
* ``resnet20``: the zoo's CIFAR ResNet-20 (the ../shared weights when present, else made-up ones)
  exported to ONNX and imported: fp32 pass time of the imported ``GraphModule`` against the torch
  model (ratio, best of interleaved repetitions, batch 500, one thread) and the plans one greedy
  search finds for each on the same 500 images (same plan = every tensor the same format).

Writes ``onnx_import.json`` and ``onnx_import.md``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from sieve.io_utils import write_json, write_text
from tests.test_onnx_import import Bottleneck   # the test suite's ResNet-50 bottleneck


class ResNet50Shape(nn.Module):
    """torchvision's ResNet-50 layout (3, 4, 6, 3 bottlenecks) with base width ``width``."""

    def __init__(self, width: int = 8, classes: int = 1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        layers, cin = [], width
        for i, blocks in enumerate((3, 4, 6, 3)):
            mid = width * 2 ** i
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(cin, mid, 2 if b == 0 and i > 0 else 1))
                cin = 4 * mid
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.3, 0.8)
    return model.eval()


def _export(model: nn.Module, path: Path, shape) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *shape), str(path), dynamo=False, opset_version=13,
                          input_names=["data"], output_names=["logits"], dynamic_axes={"data": {0: "N"}},
                          training=torch.onnx.TrainingMode.PRESERVE)
    return path


@torch.no_grad()
def _pass_seconds(models: dict[str, nn.Module], images: torch.Tensor, batch: int, reps: int) -> dict[str, float]:
    best = {k: float("inf") for k in models}
    for _ in range(reps):                 # interleaved: a busy neighbour slows both alike
        for name, model in models.items():
            t0 = time.perf_counter()
            for i in range(0, len(images), batch):
                model(images[i:i + batch])
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _labelled(model: nn.Module, images: torch.Tensor, name: str):
    from sieve.data import Dataset, to_split

    with torch.no_grad():
        labels = torch.cat([model(images[i:i + 64]).argmax(1) for i in range(0, len(images), 64)])
    half = len(images) // 2
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return Dataset(name, classes, to_split(images[:half], labels[:half]), to_split(images[half:], labels[half:]), name)


def _resnet50(out_dir: Path, quick: bool) -> dict:
    from sieve.cli.main import main as sieve_main
    from sieve.export.verify import compare
    from sieve.onnx_import import import_onnx
    from sieve.plan_io import load_plan
    from sieve.search import run_search

    work = out_dir / "onnx_import"
    work.mkdir(parents=True, exist_ok=True)
    shape = (3, 224, 224)
    torch_model = _randomize(ResNet50Shape(8), 0)
    path = _export(torch_model, work / "resnet50-shape.onnx", shape)
    t0 = time.perf_counter()
    imported = import_onnx(path)
    import_s = time.perf_counter() - t0
    convs = sum(isinstance(m, nn.Conv2d) for m in imported.module.modules())
    n = 32 if quick else 256
    images = torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))
    data = _labelled(imported.module, images, "random-224")
    fp32_s = _pass_seconds({"imported": imported.module}, data.val.images, 64, 2)["imported"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_search(imported.module, data, model_name="resnet50-shape", out_dir=work / "search",
                         progress=False, report=False, resume=False)
    per_eval = doc["search_seconds"] / max(doc["evaluations"], 1)
    onnx_out = work / "resnet50-shape.sieve.onnx"
    code = sieve_main(["export", "--model", str(path), "--plan", str(work / "search" / "plan.json"),
                       "--out", str(onnx_out)])
    plan = load_plan(work / "search" / "plan.json", "accurate")
    agreement = compare(imported.module, plan, str(onnx_out), data.test.images)["top1_agreement"]
    return {"convolutions": convs, "onnx_bytes": path.stat().st_size, "import_seconds": import_s,
            "search_images": len(data.val), "fp32_pass_seconds": fp32_s, "evaluations": doc["evaluations"],
            "search_seconds": doc["search_seconds"], "seconds_per_evaluation": per_eval,
            "evaluation_vs_fp32_pass": per_eval / fp32_s, "search_fp32_passes": doc["cost"]["search_fp32_passes"],
            "export_exit_code": code, "accurate_mean_bits": doc["variants"]["accurate"]["mean_bits"],
            "onnx_top1_agreement_with_emulated": agreement, "test_images": len(data.test)}


def _resnet20(out_dir: Path, quick: bool) -> dict:
    from sieve import zoo
    from sieve.onnx_import import import_onnx
    from sieve.search import run_search

    work = out_dir / "onnx_import"
    shape = (3, 32, 32)
    try:
        torch_model, ds = zoo.load("resnet20", val=128 if quick else 500, test=128 if quick else 500)
        data, weights = ds, "../shared cifar10-resnet"
    except Exception:  # noqa: BLE001 - no ../shared: made-up weights on random images
        torch_model, weights = _randomize(zoo.architecture("resnet20"), 0), "made up"
        data = _labelled(torch_model, torch.randn(256 if quick else 1000, *shape), "random-32")
    imported = import_onnx(_export(torch_model, work / "resnet20.onnx", shape)).module
    times = _pass_seconds({"torch": torch_model, "imported": imported}, data.val.images, 500, 3 if quick else 7)
    plans = {}
    for name, model in (("torch", torch_model), ("imported", imported)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc = run_search(model, data, model_name="resnet20", progress=False, report=False, resume=False)
        plans[name] = {t["name"]: t["format"] for t in doc["variants"]["accurate"]["tensors"]}
    same = plans["torch"] == plans["imported"]
    return {"weights": weights, "images": len(data.val), "fp32_pass_seconds_torch": times["torch"],
            "fp32_pass_seconds_imported": times["imported"], "time_ratio": times["imported"] / times["torch"],
            "same_plan": same, "tensors": len(plans["torch"]),
            "differing_tensors": sorted(k for k in plans["torch"] if plans["torch"][k] != plans["imported"].get(k))}


def run(out_dir: Path, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    result = {"resnet50": _resnet50(out_dir, quick), "resnet20": _resnet20(out_dir, quick)}
    write_json(out_dir / "onnx_import.json", result)
    r50, r20 = result["resnet50"], result["resnet20"]
    lines = ["# ONNX import", "",
             f"ResNet-50-shaped ONNX graph ({r50['convolutions']} convolutions, 224x224, made-up weights, "
             f"{r50['onnx_bytes']:,} bytes):", "",
             "| figure | value |", "|---|---|",
             f"| import | {r50['import_seconds']:.2f} s |",
             f"| fp32 pass, {r50['search_images']} images | {r50['fp32_pass_seconds']:.2f} s |",
             f"| search | {r50['evaluations']} evaluations, {r50['search_seconds']:.1f} s, "
             f"{r50['search_fp32_passes']:.1f} fp32 passes |",
             f"| seconds per evaluation / fp32 pass | {r50['evaluation_vs_fp32_pass']:.2f} |",
             f"| accurate plan | {r50['accurate_mean_bits']:.2f} mean bits |",
             f"| onnxruntime top-1 agreement with the emulated model ({r50['test_images']} images) | "
             f"{r50['onnx_top1_agreement_with_emulated']:.2%} |", "",
             f"resnet20 ({r20['weights']} weights, {r20['images']} images): imported / torch fp32 pass time "
             f"{r20['time_ratio']:.3f} ({r20['fp32_pass_seconds_imported']:.3f} s vs {r20['fp32_pass_seconds_torch']:.3f} s); "
             f"same accurate plan from the same search: {'yes' if r20['same_plan'] else 'no'} "
             f"({r20['tensors']} tensors{', differing: ' + ', '.join(r20['differing_tensors']) if r20['differing_tensors'] else ''}).", ""]
    write_text(out_dir / "onnx_import.md", "\n".join(lines))
    return result
