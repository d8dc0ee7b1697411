"""``--family scalar|channel|block|all`` (issue 16): the greedy search draws each tensor's
candidates from a format family, walks them in order of the *real* stored bits per element
(block scales and per-channel biases counted), records the family in plan.json, and the plan
loads back through ``sieve.plan_io.load_plan``.

One tiny search per family (``tests/search_models.py``, seconds) is shared by the tests.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sieve.blockfmt import BlockFormat, ChannelFormat, is_layout_format, parse_format, stored_bits
from sieve.cfloat import Format
from sieve.errors import SieveError
from sieve.histograms import ExponentHistogram
from sieve.plan_io import PLAN_FAMILIES, load_plan, load_plan_document
from sieve.qeval import TensorInfo
from sieve.search import DEFAULT_FAMILY, FAMILIES, run_search
from sieve.search.driver import FAMILY_CHOICES, resolve_family
from sieve.search.formats import bits_per_element, family_ladder, plan_bits
from tests.search_models import tiny_problem

LAYOUT = {"channel": ChannelFormat, "block": BlockFormat}


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    """``family -> (plan.json path, document)`` of one tiny search per family."""
    out = {}
    root = tmp_path_factory.mktemp("family")
    for family in ("scalar", "channel", "block", "all"):
        model, data = tiny_problem(n_val=300, n_test=100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tiny splits' SearchWarnings
            doc = run_search(model, data, model_name="tiny", out_dir=root / family, progress=False, threads=1,
                             family=family)
        out[family] = (root / family / "plan.json", doc)
    return out


def _formats(doc: dict, kind: str | None = None) -> list:
    return [parse_format(t["format"]) for v in doc["variants"].values() for t in v["tensors"]
            if t["format"] != "fp32" and (kind is None or t["kind"] == kind)]


@pytest.mark.parametrize("family", ["channel", "block"])
def test_layout_family_plans_use_that_family_for_weights_and_scalar_activations(searched, family) -> None:
    _, doc = searched[family]
    assert doc["family"] == family
    weights = _formats(doc, "weight")
    assert weights and all(isinstance(f, LAYOUT[family]) for f in weights), weights
    # activations stay scalar: channel formats are for weights, block activations are not searched yet
    assert all(isinstance(f, Format) for f in _formats(doc, "activation"))


def test_all_family_mixes_families_and_scalar_stays_scalar(searched) -> None:
    kinds = {type(f) for f in _formats(searched["all"][1])}
    assert Format in kinds and kinds & {ChannelFormat, BlockFormat}, kinds
    assert all(isinstance(f, Format) for f in _formats(searched["scalar"][1]))
    assert searched["scalar"][1]["family"] == "scalar"


@pytest.mark.parametrize("family", ["scalar", "channel", "block", "all"])
def test_plan_json_round_trips_through_load_plan(searched, family) -> None:
    path, doc = searched[family]
    assert load_plan_document(path)["family"] == family
    for variant, v in doc["variants"].items():
        plan = load_plan(path, variant)
        expected = {t["name"]: parse_format(t["format"]) for t in v["tensors"] if t["format"] != "fp32"}
        assert plan == expected
        assert all(str(fmt) == next(t["format"] for t in v["tensors"] if t["name"] == name)
                   for name, fmt in plan.items())


@pytest.mark.parametrize("family", ["channel", "block", "all"])
def test_mean_bits_count_the_scales_and_biases(searched, family) -> None:
    _, doc = searched[family]
    for v in doc["variants"].values():
        total = n = 0
        for t in v["tensors"]:
            shape = tuple(_shape(doc, t))
            fmt = None if t["format"] == "fp32" else parse_format(t["format"])
            bits = stored_bits(fmt, shape)
            if is_layout_format(fmt):
                assert t["bits_per_element"] == pytest.approx(bits / t["elements"])
                assert t["bits_per_element"] > fmt.width  # the scales / biases are on top
            else:
                assert "bits_per_element" not in t and bits == t["bits"] * t["elements"]
            total, n = total + bits, n + t["elements"]
        assert v["mean_bits"] == pytest.approx(total / n)


@functools.lru_cache(maxsize=1)
def _shapes() -> dict[str, tuple[int, ...]]:
    """The tiny model's tensor shapes (weights as stored; activations per image, batch axis 1)."""
    from sieve.qeval import quantizable_tensors

    model, _ = tiny_problem(n_val=10, n_test=10)
    return {i.name: i.shape if i.kind == "weight" else (1, *i.shape) for i in quantizable_tensors(model, (1, 8, 8))}


def _shape(doc: dict, t: dict) -> tuple[int, ...]:
    return _shapes()[t["name"]]


def test_candidates_are_ordered_by_real_bits_then_error() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 64, 3, 3) * 0.05 * torch.rand(16, 1, 1, 1)
    hist = ExponentHistogram("conv.weight", "weight")
    hist.add(w)
    info = TensorInfo("conv.weight", "weight", w.numel(), "conv", tuple(w.shape))
    for family in ("channel", "block", "all"):
        ladder = family_ladder(hist, True, family, info=info, weight=w)
        bits = [bits_per_element(c.fmt, info) for c in ladder]
        assert bits == sorted(bits) and len(ladder) > 5
        for kind in (Format, ChannelFormat, BlockFormat):  # within a kind each step down is cheaper and coarser
            errors = [c.rel_error for c in ladder if type(c.fmt) is kind]
            assert all(a > b for a, b in zip(errors, errors[1:])), (family, kind)
            assert bool(errors) == (family == "all" or kind is LAYOUT.get(family)), (family, kind)
        for c in ladder:
            assert bits_per_element(c.fmt, info) == stored_bits(c.fmt, tuple(w.shape)) / w.numel()
    # a 4-bit element with an E8M0 scale per 32 costs 4.25 bits, a channel bias 4 bits per channel + 8
    mx4 = parse_format("mx32:fp4_e2m1")
    assert bits_per_element(mx4, info) == pytest.approx(4 + 8 * (16 * 2 * 9) / w.numel())
    assert bits_per_element(mx4, info) == pytest.approx(4.25)
    assert bits_per_element(parse_format("ch4:e2m1"), info) == pytest.approx(4 + (16 * 4 + 8) / w.numel())
    # so in ``all`` the 4-bit scalar, the 4-bit channel and the 4-bit block candidates come in that order
    fam_all = [c.fmt for c in family_ladder(hist, True, "all", info=info)]
    four = [type(f) for f in fam_all if f.width == 4]
    assert four == [Format, ChannelFormat, BlockFormat]


def test_activations_get_no_channel_formats_and_the_search_keeps_them_scalar() -> None:
    act = ExponentHistogram("fc.input", "activation")
    act.add(torch.rand(2000))
    info = TensorInfo("fc.input", "activation", 2000, "fc", (2000,))
    assert all(isinstance(c.fmt, Format) for c in family_ladder(act, False, "channel", info=info))
    assert all(isinstance(c.fmt, Format)
               for c in family_ladder(act, False, "block", info=info, block_activations=False))


def test_unknown_family_or_scalar_only_strategy_is_one_line() -> None:
    model, data = tiny_problem(n_val=50, n_test=20)
    with pytest.raises(SieveError, match="family 'bogus'.*scalar, channel, block, all"):
        run_search(model, data, model_name="tiny", family="bogus", progress=False)
    with pytest.raises(SieveError, match="--family block needs --strategy greedy"):
        run_search(model, data, model_name="tiny", family="block", strategy="uniform", progress=False)
    assert DEFAULT_FAMILY in FAMILY_CHOICES and tuple(FAMILIES) == PLAN_FAMILIES


def test_cli_family_bogus_exits_2_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    import sieve.zoo
    from sieve.cli.main import main

    monkeypatch.setattr(sieve.zoo, "load", lambda *a, **k: pytest.fail("nothing may load for a bad --family"))
    out = tmp_path / "x"
    assert main(["search", "--model", "lenet5", "--family", "bogus", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bogus" in err[0] and "channel" in err[0], err
    assert not out.exists()


def test_report_shows_the_family_and_layout_formats(searched) -> None:
    path, doc = searched["all"]
    report = (path.parent / "report.md").read_text()
    assert "family `all`" in report
    layouts = sorted({str(f) for f in _formats(doc) if is_layout_format(f)})
    assert layouts and all(f"`{text}`" in report for text in layouts)


def test_plan_validation_refuses_a_channel_format_on_an_activation(searched, tmp_path) -> None:
    path, _ = searched["channel"]
    doc = json.loads(path.read_text())
    act = next(t for t in doc["variants"]["accurate"]["tensors"] if t["kind"] == "activation")
    act["format"], act["bits"] = "ch4:e2m1", 4
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(SieveError, match="per-output-channel"):
        load_plan(bad, "accurate")
    doc["family"] = "bogus"
    bad.write_text(json.dumps(doc))
    with pytest.raises(SieveError, match="family 'bogus'"):
        load_plan_document(bad)


def test_old_plan_without_family_still_loads(searched, tmp_path) -> None:
    path, doc = searched["scalar"]
    old = json.loads(path.read_text())
    del old["family"]
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(old))
    assert load_plan(p, "accurate") == load_plan(path, "accurate")


def test_make_search_passes_family_through() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["make", "-n", "-o", ".venv/.sieve-setup", "search", "FAMILY=block"], cwd=root,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "--family block" in " ".join(run.stdout.replace("\\\n", " ").split())


def test_bench_table_has_family_rows_and_real_ocp_mx_rows(searched) -> None:
    """tests/bench/bench_search.py: family rows and measured OCP MX rows (k = 32) beside the test
    verdicts, and the margin of the best holding searched plan over the best holding MX format."""
    from sieve.mx_baselines import ocp_baselines
    from tests.bench import bench_search as bench

    default = searched[resolve_family(DEFAULT_FAMILY, tiny_problem(n_val=10, n_test=10)[0])][1]
    per = {s: bench._summary(default) for s in bench.STRATEGIES}
    per["families"] = {f: bench._summary(searched[f][1]) for f in ("channel", "block", "all") if f != DEFAULT_FAMILY}
    model, data = tiny_problem(n_val=300, n_test=100)
    per["ocp_mx"] = ocp_baselines(model, data.test.images, data.test.labels, names=tuple(bench.MX_BASELINES))
    per["comparison"] = bench._compare("lenet5", per)
    per["versus_ocp_mx"] = bench.versus_ocp_mx(per)
    text = bench._markdown({"models": {"tiny": per}, "skipped": {}})
    assert "pending" not in text
    for name, label in bench.MX_BASELINES.items():
        r, t = per["ocp_mx"][name], per["ocp_mx"][name]["test"]
        row = next(line for line in text.splitlines() if line.startswith(f"| tiny | uniform {label} (k = 32"))
        assert f"**{r['mean_bits']:.2f}** |" in row and f"+{t['gains']} / -{t['losses']} | {t['p_worse']:.3g} |" in row
        assert r["mean_bits"] > parse_format(name).width  # the E8M0 scales are counted
    for family in per["families"]:
        assert f"| tiny | greedy, family {family} (accurate) | accurate |" in text
        assert f"| tiny | greedy, family {family} | " in text  # the cost table
    g = per["versus_ocp_mx"]
    holding_mx = [r["mean_bits"] for r in per["ocp_mx"].values() if r["test"]["holds"]]
    holding = [v["mean_bits"] for _, variant, v in bench._searched_plans(per)
               if variant == "accurate" and v["test_verdict"]["holds"]]
    if holding_mx and holding:
        assert g["gap_mean_bits"] == pytest.approx(min(holding_mx) - min(holding))
        assert f"**{g['gap_mean_bits']:.2f}** mean bits fewer" in text
    else:
        assert g["gap_mean_bits"] is None
    # without MX measurements the rows say so (and nothing is invented)
    per["ocp_mx"] = None
    assert bench._markdown({"models": {"tiny": per}, "skipped": {}}).count("pending: block-scaled formats") == 5


def test_cli_defaults_to_the_chosen_family_and_the_library_to_scalar(tmp_path, monkeypatch) -> None:
    import inspect

    import sieve.search
    import sieve.zoo
    from sieve.cli.main import main

    assert inspect.signature(run_search).parameters["family"].default == "scalar"  # library callers keep plans
    seen = []

    def fake(model, dataset, **kw):
        seen.append(kw["family"])
        raise SieveError("stop here")

    monkeypatch.setattr(sieve.zoo, "load", lambda name, **k: tiny_problem(n_val=50, n_test=20))
    monkeypatch.setattr(sieve.search, "run_search", fake)
    assert main(["search", "--model", "lenet5", "--quiet", "--out", str(tmp_path / "a")]) == 2
    assert main(["search", "--model", "lenet5", "--quiet", "--strategy", "uniform", "--out", str(tmp_path / "b")]) == 2
    assert main(["search", "--model", "lenet5", "--quiet", "--family", "channel", "--out", str(tmp_path / "c")]) == 2
    assert seen == [DEFAULT_FAMILY, "scalar", "channel"]


def test_auto_family_follows_the_blocked_axis_rule(tmp_path) -> None:
    """``auto`` (the CLI default): block when most weights reduce over >= 128 inputs, else
    scalar; plan.json records the family searched and the one asked for."""
    from torch import nn

    long_fc = nn.Sequential(nn.Linear(256, 64), nn.Linear(64, 10))   # 16,384 of 17,024 weights along 256
    short = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 10))
    assert resolve_family("auto", long_fc) == "block" and resolve_family("auto", short) == "scalar"
    assert resolve_family("channel", long_fc) == "channel"
    model, data = tiny_problem(n_val=50, n_test=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = run_search(model, data, model_name="tiny", family="auto", out_dir=tmp_path, progress=False, threads=1)
    assert doc["family"] == "scalar" and doc["family_requested"] == "auto"
    assert load_plan_document(tmp_path / "plan.json")["family"] == "scalar"
