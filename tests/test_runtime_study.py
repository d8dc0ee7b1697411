"""End to end: the whole cascade / ensemble / selector study on small real torch models.

The models are tiny MLPs trained here for a moment on a synthetic task, so the test runs the
real executor, real timing and the real report writers without any dataset on disk.  A second
test drives the CLI on the Fashion-MNIST pool with small subsets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sieve.cli.main import main
from sieve.runtime.ensemble import run_ensemble_study
from sieve.runtime.report import write_cascade, write_ensemble, write_selector
from sieve.runtime.selector import run_selector_study
from sieve.runtime.sources import Member, PoolData
from sieve.runtime.study import run_study


def _task(n=2400, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, 16, generator=g) * 0.9
    y = torch.randint(0, k, (n,), generator=g)
    x = (centers[y] + torch.randn(n, 16, generator=g)).view(n, 1, 4, 4)
    return x, y, centers


def _classifier(centers: torch.Tensor, features: int, heavy: int = 0) -> torch.nn.Module:
    """Nearest-centroid classifier on the first ``features`` inputs; ``heavy`` exact identity
    blocks in front only add cost, so bigger models are both slower and (seeing more) better."""
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    eye = torch.eye(16)
    for _ in range(heavy):
        up, down = torch.nn.Linear(16, 512), torch.nn.Linear(512, 16)
        with torch.no_grad():
            up.weight.zero_(), up.bias.zero_(), down.weight.zero_(), down.bias.zero_()
            up.weight[:16], up.weight[16:32] = eye, -eye
            down.weight[:, :16], down.weight[:, 16:32] = eye, -eye
        layers += [up, torch.nn.ReLU(), down]
    head = torch.nn.Linear(16, centers.shape[0])
    c = centers.clone()
    c[:, features:] = 0
    with torch.no_grad():
        head.weight.copy_(c)
        head.bias.copy_(-0.5 * (c * c).sum(1))
    layers.append(head)
    return torch.nn.Sequential(*layers).eval()


@pytest.fixture(scope="module")
def pool():
    torch.set_num_threads(1)
    x, y, centers = _task()
    models = {"tiny": _classifier(centers, 12), "small": _classifier(centers, 14, heavy=2),
              "wide": _classifier(centers, 16, heavy=6)}
    xv, yv, xt, yt = x[:1200], y[:1200], x[1200:], y[1200:]
    with torch.no_grad():
        vl = {m: models[m](xv).numpy() for m in models}
        tl = {m: models[m](xt).numpy() for m in models}
    return PoolData([Member(m) for m in models], "synthetic", list("abcd"), yv.numpy(), yt.numpy(),
                    vl, tl, models, xt, "generated in the test")


def test_cascade_study_end_to_end(pool, tmp_path):
    res = run_study(pool, target=1.0, batch_size=100, reps=1, loads=(0.5, 1.5), progress=False,
                    latency_batches=(1, 8))
    assert res["reference"] in pool.names
    assert {"heuristic", "exhaustive", "exhaustive_combined"} <= set(res["pairing"])
    assert res["deployed"] is not None, res["pairing"]["exhaustive"]["message"]
    if res["deployed"] is not None:
        t = res["throughput"]
        # the executor really ran the deployed policy: its accuracy equals the simulated one
        assert t["cascade_accuracy"] == pytest.approx(res["deployed"]["test_accuracy"])
        for clock in ("cpu", "wall"):
            assert t[clock]["cascade_images_per_s"] > 0 and t[clock]["big_images_per_s"] > 0
        assert len(res["load"]["rows"]) == 2
        variants = res["detector"]["variants"]
        assert len(variants) == 12 and all(0 <= v["test"]["recovery_rate"] <= 1 for v in variants)
    path = write_cascade(res, tmp_path)
    text = path.read_text()
    assert "Pair selection" in text
    data = json.loads((tmp_path / "cascade.json").read_text())
    assert data["pool"] == pool.names
    if res["deployed"] is not None:
        for png in ("histograms.png", "accuracy_vs_recovery.png", "per_class.png", "latency_vs_load.png"):
            assert (tmp_path / png).stat().st_size > 1000


def test_cascade_study_unreachable_target_falls_back(pool, tmp_path):
    res = run_study(pool, target=1.2, batch_size=100, reps=1, progress=False, measure_speed=False,
                    latency_batches=(1,))
    assert res["deployed"] is None
    assert res["fallback"]["model"] == res["reference"]
    assert "no" in res["fallback"]["message"]
    text = write_cascade(res, tmp_path).read_text()
    assert "No pair meets the target" in text


def test_ensemble_and_selector_studies(pool, tmp_path):
    ens = run_ensemble_study(pool, progress=False, points=10, batch=100)
    assert ens["order"][0] == min(ens["latency_s"], key=ens["latency_s"].get)
    for r in ens["rows"]:
        assert r["test_latency_s"] <= ens["full"]["test_latency_s"] + 1e-12
    write_ensemble(ens, tmp_path / "e")
    assert (tmp_path / "e" / "ensemble.png").is_file()
    sel = run_selector_study(pool, progress=False)
    assert [r["network"] for r in sel["rows"]] == ["3G", "LTE", "WiFi"]
    for r in sel["rows"]:
        assert r["modes"]["private"]["offloaded"] == 0.0
        assert r["cloud_only"]["offloaded"] == 1.0
    write_selector(sel, tmp_path / "s")
    assert "SIEVE selector" in (tmp_path / "s" / "report.md").read_text()


@pytest.mark.parametrize("argv, needle", [
    (["cascade", "--pool", "resnet20"], "at least two models"),
    (["cascade", "--pool", "lenet5,resnet20"], "pool mixes tasks"),
    (["cascade", "--pool", "lenet5,nosuchnet"], "unknown model"),
    (["cascade", "--pool", "lenet5,lenet5"], "twice"),
    (["cascade", "--pool", "lenet5:fancy,convnet"], "unknown plan variant"),
    (["cascade", "--target", "0"], "--target"),
])
def test_cli_bad_input(argv, needle, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_cascade_fashion_small(tmp_path):
    from sieve import zoo

    if any(zoo.fashion_record(m) is None for m in ("lenet5", "convnet")):
        pytest.skip("the Fashion-MNIST pool is not trained yet on this machine (`make cascade` trains it once)")
    out = tmp_path / "fm"
    code = main(["cascade", "--pool", "lenet5,convnet", "--val", "600", "--test", "600", "--reps", "1",
                 "--batch", "200", "--cache", str(tmp_path / "cache"), "--out", str(out), "--quiet"])
    assert code == 0
    data = json.loads((out / "cascade.json").read_text())
    assert data["dataset"] == "fashion-mnist" and data["calibration_images"] == 600
    assert (out / "report.md").is_file()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_compressed_member_from_a_plan(tmp_path):
    """A pool member NAME:VARIANT@PLAN is the zoo model with the search's plan applied."""
    from sieve import zoo
    from sieve.plan_io import write_plan
    from sieve.qeval import quantizable_tensors
    from sieve.runtime.sources import load_pool, parse_pool

    if zoo.fashion_record("lenet5") is None:
        pytest.skip("lenet5 is not trained yet on this machine (`make cascade` trains it once)")
    model, _ = zoo.load("lenet5", val=8, test=8)
    tensors = []
    for t in quantizable_tensors(model):
        fmt = "se4m3b10" if t.kind == "weight" else "fp32"
        tensors.append({"name": t.name, "kind": t.kind, "elements": t.elements, "format": fmt,
                        "bits": 8 if fmt != "fp32" else 32})
    var = {"val_accuracy": 0, "test_accuracy": 0, "normalized_test_accuracy": 0, "mean_bits_weights": 6,
           "mean_bits_activations": 32, "mean_bits": 6, "compression_ratio": 5.3, "tensors": tensors}
    doc = {"model": "lenet5", "dataset": "fashion-mnist", "strategy": "test", "search_seconds": 0,
           "evaluations": 0, "baseline": {"val_accuracy": 0, "test_accuracy": 0},
           "variants": {v: var for v in ("exact", "accurate", "approximate")}}
    plan = tmp_path / "plan.json"
    write_plan(plan, doc)
    pool = load_pool(parse_pool(f"lenet5:approximate@{plan},lenet5"), val=300, test=300,
                     cache=tmp_path / "cache", progress=False)
    assert pool.names == ["lenet5:approximate", "lenet5"]
    q, f = pool.val_logits["lenet5:approximate"], pool.val_logits["lenet5"]
    assert not np.allclose(q, f)  # 8-bit weights change the outputs ...
    assert (q.argmax(1) == f.argmax(1)).mean() > 0.9  # ... but it is still the same classifier
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_report_directory_is_atomic(tmp_path, monkeypatch):
    """A writer that fails half-way leaves the previous report untouched and no debris."""
    from sieve.runtime import report

    out = tmp_path / "r"
    out.mkdir()
    (out / "report.md").write_text("old")

    def boom(result, tmp):
        (tmp / "cascade.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_write_cascade", boom)
    with pytest.raises(RuntimeError):
        report.write_cascade({}, out)
    assert (out / "report.md").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
