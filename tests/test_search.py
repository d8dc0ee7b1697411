"""Search: targets met by construction, plan schema, resumability, prefix cache, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sieve
from sieve import Format
from sieve.errors import SieveError
from sieve.histograms import ExponentHistogram
from sieve.plan_io import load_plan, load_plan_document
from sieve.qeval import PrefixEvaluator, apply_plan
from sieve.search import run_search
from sieve.search import context as search_context
from sieve.search.formats import cover_format, coverage_bias, ladder, plan_bits
from tests.search_models import tiny_problem


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_histogram_counts_binades() -> None:
    h = ExponentHistogram("t", "weight")
    h.add(torch.tensor([0.0, -0.0, 1.0, 1.5, -3.0, 0.25, float("inf"), 1e-45]))
    assert h.zeros == 2 and h.nonfinite == 1 and h.negatives == 1 and h.total == 8
    assert h.exponent_range() == (-127, 1)
    assert h.counts[127] == 2 and h.counts[128] == 1 and h.counts[125] == 1 and h.counts[0] == 1
    assert h.coverage(0, 1) == pytest.approx(3 / 5)


def test_cover_and_coverage_bias() -> None:
    h = ExponentHistogram("t", "activation")
    h.add(torch.tensor([2.0 ** e for e in range(-6, 3)] * 3 + [2.0 ** -20]))
    f = cover_format(h, 3)
    assert (f.min_exponent, f.max_exponent) == (-20 + 0, 2) or f.max_exponent == 2
    assert f.min_exponent <= -20 and f.exp_bits == 5
    bias, cov = coverage_bias(h, 3)  # 7 binades: the window must end at the largest value
    assert Format(3, 0, bias).max_exponent == 2 and cov == pytest.approx(21 / 28)


def test_ladder_widths_and_signedness() -> None:
    h = ExponentHistogram("t", "activation")
    h.add(torch.rand(1000) * 4)
    lad = ladder(h, signed=False, max_width=10)
    assert [c.width for c in lad] == list(range(1, 11))
    assert all(not c.fmt.signed for c in lad)
    errs = [c.rel_error for c in lad]
    assert errs[-1] < errs[3] < errs[0]


def test_plan_bits_weighting() -> None:
    from sieve.qeval import TensorInfo

    infos = [TensorInfo("a.input", "activation", 100, "a"), TensorInfo("a.weight", "weight", 300, "a")]
    bits = plan_bits({"a.weight": Format(2, 1)}, infos)
    assert bits["mean_bits_weights"] == 4 and bits["mean_bits_activations"] == 32
    assert bits["mean_bits"] == pytest.approx((300 * 4 + 100 * 32) / 400)


@pytest.mark.parametrize("residual", [False, True])
def test_prefix_evaluator_equals_apply_plan(residual: bool) -> None:
    model, data = tiny_problem(residual)
    images = data.val.images[:300]
    ev = PrefixEvaluator(model, images, batch_size=100)
    assert ev.gm is not None  # traced: the prefix cache is in use
    names = [i.name for i in ev.infos]
    rng = np.random.default_rng(1)
    for step in range(8):
        plan = {n: Format(int(rng.integers(2, 5)), int(rng.integers(0, 4)), signed=bool(rng.integers(0, 2)))
                for n in names if rng.random() < 0.7}
        before = ev.nodes_run
        got = ev.run(plan, checkpoint="fc1")
        with torch.no_grad():
            want = apply_plan(model, plan)(images)
        assert torch.equal(got, want), f"step {step}: plan {plan}"
        # the same prefix again: only the nodes from fc1 on run
        again = ev.run({**plan, "fc2.weight": Format(3, 1)}, checkpoint="fc1")
        with torch.no_grad():
            want2 = apply_plan(model, {**plan, "fc2.weight": Format(3, 1)})(images)
        assert torch.equal(again, want2)
        assert ev.nodes_run - before < 2 * len(ev.nodes) * 3


def _check_doc(doc: dict) -> None:
    for key in ("model", "dataset", "strategy", "baseline", "variants", "search_seconds", "evaluations"):
        assert key in doc
    for v in ("exact", "accurate", "approximate"):
        var = doc["variants"][v]
        for key in ("val_accuracy", "test_accuracy", "normalized_test_accuracy", "mean_bits_weights",
                    "mean_bits_activations", "mean_bits", "compression_ratio", "tensors"):
            assert key in var
        for t in var["tensors"]:
            assert set(t) == {"name", "kind", "elements", "format", "bits"}


def test_greedy_meets_targets_by_construction(tmp_path) -> None:
    model, data = tiny_problem(residual=True)
    doc = run_search(model, data, model_name="tiny", out_dir=tmp_path, progress=False)
    _check_doc(doc)
    v = doc["variants"]
    assert all(v[name]["meets_target"] for name in v)
    assert v["exact"]["val_agreement"] == 1.0
    assert v["accurate"]["normalized_val_accuracy"] >= 1.0
    assert v["approximate"]["normalized_val_accuracy"] >= 0.999
    assert v["approximate"]["mean_bits"] <= v["accurate"]["mean_bits"] <= v["exact"]["mean_bits"] < 32
    # re-measure the accurate plan independently from plan.json with apply_plan
    plan = load_plan(tmp_path / "plan.json", "accurate")
    with torch.no_grad():
        pred = apply_plan(model, plan)(data.val.images).argmax(1)
    with torch.no_grad():
        base = model(data.val.images).argmax(1)
    assert int((pred == data.val.labels).sum()) >= int((base == data.val.labels).sum())
    # ... with the generalization margin: net gain >= MARGIN_Z standard errors of the flips
    ok, ref_ok = pred == data.val.labels, base == data.val.labels
    gains, losses = int((ok & ~ref_ok).sum()), int((~ok & ref_ok).sum())
    assert gains - losses >= search_context.MARGIN_Z * (gains + losses) ** 0.5 - 1e-9
    # post-ReLU inputs are never negative: unsigned formats
    assert not plan["fc1.input"].signed and not plan["fc2.input"].signed
    assert plan["conv1.input"].signed
    for name in ("report.md", "histograms.png", "pareto.png", "search_trace.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert "| conv1.weight |" in (tmp_path / "report.md").read_text()


def test_generalization_margin_rule() -> None:
    """Net gain must clear z standard errors of the flip count; slack only for approximate."""
    ctx = object.__new__(search_context.SearchContext)
    ctx.base_correct, ctx.margin_z = 4000, 1.0
    assert ctx.passes("accurate", 0, 0)              # agrees with fp32 everywhere
    assert not ctx.passes("accurate", 0, 4)          # 2 gains, 2 losses: break-even is luck
    assert ctx.passes("accurate", 2, 4)              # 3 gains, 1 loss: net 2 >= 1 * sqrt(4)
    assert not ctx.passes("accurate", 1, 9)
    assert ctx.passes("approximate", -1, 9)          # slack ceil: 4000 - 3996 = 4; 3 >= 3
    assert not ctx.passes("approximate", -2, 9)
    assert not ctx.passes("exact", 0, 2) and ctx.passes("exact", 0, 0)
    ctx.margin_z = 0.0                               # the plain target
    assert ctx.passes("accurate", 0, 100) and not ctx.passes("accurate", -1, 1)


def test_approximate_can_have_its_own_margin() -> None:
    """greedy's last approximate stage judges approximate alone by its own (plain) margin."""
    ctx = object.__new__(search_context.SearchContext)
    ctx.base_correct, ctx.margin_z = 4000, 1.0
    assert not ctx.passes("approximate", -4, 100)     # slack 4: 0 < 1 * sqrt(100)
    ctx.approximate_z = 0.0
    assert ctx.passes("approximate", -4, 100) and not ctx.passes("approximate", -5, 100)
    assert not ctx.passes("accurate", 0, 4)           # the others keep margin_z


def test_sieve_strategy_is_the_dissertations(tmp_path) -> None:
    model, data = tiny_problem()
    doc = run_search(model, data, model_name="tiny", strategy="sieve", out_dir=tmp_path, progress=False)
    _check_doc(doc)
    trace = json.loads((tmp_path / "search_trace.json").read_text())["trace"]
    for t in doc["variants"]["accurate"]["tensors"]:
        if t["format"] != "fp32":
            f = Format.parse(t["format"])
            assert f.signed and f.man_bits <= 6 and f.exp_bits >= 2
    # per tensor, mantissa sweeps go 6 -> 0 and stop right after dropping below 99.8 %
    by_tensor: dict = {}
    for rec in trace:
        by_tensor.setdefault(rec["tensor"], []).append(rec)
    for recs in by_tensor.values():
        fmts = [Format.parse(r["format"]) for r in recs]
        assert fmts[0].man_bits == 6
        for a, b, r in zip(fmts, fmts[1:], recs):
            if b.exp_bits == a.exp_bits:
                assert b.man_bits == a.man_bits - 1 and r["normalized_val_accuracy"] >= 0.998


def test_interrupted_search_resumes_to_identical_plan(tmp_path, monkeypatch) -> None:
    model, data = tiny_problem(seed=3)
    full = run_search(model, data, model_name="tiny", out_dir=tmp_path / "a", progress=False, report=False)
    real_run = search_context.SearchContext._run
    calls = {"n": 0}

    def dying_run(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(search_context.SearchContext, "_run", dying_run)
    with pytest.raises(KeyboardInterrupt):
        run_search(model, data, model_name="tiny", out_dir=tmp_path / "b", progress=False, report=False)
    assert not (tmp_path / "b" / "plan.json").exists()  # nothing half-written
    monkeypatch.setattr(search_context.SearchContext, "_run", real_run)
    resumed = run_search(model, data, model_name="tiny", out_dir=tmp_path / "b", progress=False, report=False)
    assert resumed["cost"]["evaluations_replayed"] >= 12
    assert resumed["cost"]["evaluations_run"] < full["cost"]["evaluations_run"]
    for v in ("exact", "accurate", "approximate"):
        assert resumed["variants"][v]["tensors"] == full["variants"][v]["tensors"]
    assert resumed["evaluations"] == full["evaluations"]


def test_plan_io_bad_input(tmp_path) -> None:
    with pytest.raises(SieveError, match="does not exist"):
        load_plan(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SieveError, match="cannot read"):
        load_plan(bad)
    bad.write_text(json.dumps({"model": "x"}))
    with pytest.raises(SieveError, match="missing key 'dataset'"):
        load_plan(bad)
    model, data = tiny_problem()
    doc = run_search(model, data, model_name="tiny", out_dir=None, progress=False)
    good = tmp_path / "plan.json"
    good.write_text(json.dumps(doc))
    assert set(load_plan(good, "approximate")) <= {i["name"] for i in doc["variants"]["approximate"]["tensors"]}
    with pytest.raises(SieveError, match="unknown variant"):
        load_plan(good, "fastest")
    doc["variants"]["accurate"]["tensors"][0]["format"] = "e99m1"
    good.write_text(json.dumps(doc))
    with pytest.raises(SieveError, match="unreadable format"):
        load_plan(good, "accurate")
    assert load_plan_document(good)["model"] == "tiny"


def test_search_bad_input(tmp_path) -> None:
    model, data = tiny_problem()
    with pytest.raises(SieveError, match="unknown strategy"):
        run_search(model, data, model_name="tiny", strategy="magic", out_dir=tmp_path)
    empty = type(data)("x", type(data.val)(data.val.images[:0], data.val.labels[:0]), data.test, data.classes)
    with pytest.raises(SieveError, match="val split is empty"):
        run_search(model, empty, model_name="tiny", out_dir=tmp_path)
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(SieveError, match="fc1.weight"):
        run_search(model, data, model_name="tiny", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_cli_search_errors(tmp_path, capsys) -> None:
    from sieve.cli.main import main

    assert main(["search", "--model", "no_such_model", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "lenet5" in err and err.count("\n") == 1
    assert main(["search", "--model", "lenet5", "--strategy", "magic", "--out", str(tmp_path / "o")]) == 2
    assert "unknown strategy" in capsys.readouterr().err
    assert main(["search", "--model", "lenet5", "--val", "0", "--out", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    assert main(["search", "--model", "lenet5", "--margin-z", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--margin-z" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_uniform_strategy_one_format_with_margin(tmp_path) -> None:
    model, data = tiny_problem(residual=True)
    doc = run_search(model, data, model_name="tiny", strategy="uniform", out_dir=tmp_path, progress=False, report=False)
    _check_doc(doc)
    for name, var in doc["variants"].items():
        fmts = {Format.parse(t["format"]) for t in var["tensors"] if t["format"] != "fp32"}
        assert len({(f.exp_bits, f.man_bits, f.signed) for f in fmts}) <= 1, name
        assert var["meets_target_with_margin"] or all(t["format"] == "fp32" for t in var["tensors"])
    widths = [doc["variants"][v]["mean_bits"] for v in ("approximate", "accurate", "exact")]
    assert widths == sorted(widths)
