"""Issue 16: the held-out verdict of every variant (paired with fp32, exact McNemar against the
target), plan.json schema 2 (old plans still load), and an approximate plan that really is
approximate when a cheaper plan passes its looser target."""

from __future__ import annotations

import json

import pytest
import torch

from sieve import stats
from sieve.errors import SieveError
from sieve.plan_io import SCHEMA_VERSION, load_plan, load_plan_document
from sieve.qeval import apply_plan
from sieve.search import run_search
from sieve.search.context import TARGETS
from tests.search_models import tiny_problem


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("verdict")
    model, data = tiny_problem(residual=True)
    doc = run_search(model, data, model_name="tiny", out_dir=out, progress=False)
    return model, data, doc, out


def test_every_variant_carries_the_paired_test_verdict(searched) -> None:
    model, data, doc, out = searched
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    with torch.no_grad():
        ref_ok = model(data.test.images).argmax(1) == data.test.labels
    for v in ("exact", "accurate", "approximate"):
        var = doc["variants"][v]
        with torch.no_grad():
            ok = apply_plan(model, load_plan(out / "plan.json", v))(data.test.images).argmax(1) == data.test.labels
        t = var["test_verdict"]
        # recomputed independently from the plan file
        assert t["gains"] == int((ok & ~ref_ok).sum()) and t["losses"] == int((~ok & ref_ok).sum())
        assert t["images"] == len(data.test.labels) and t["reference_correct"] == int(ref_ok.sum())
        assert t["normalized_accuracy"] == pytest.approx(var["normalized_test_accuracy"])
        assert t["target"] == TARGETS[v]
        assert t["p_worse"] == pytest.approx(stats.mcnemar_worse_p(t["gains"], t["losses"], t["allowance"]))
        assert var["holds_on_test"] is t["holds"] is (t["p_worse"] >= 0.05)


def test_report_shows_the_verdict_beside_the_raw_figures(searched) -> None:
    _, _, doc, out = searched
    text = (out / "report.md").read_text()
    assert "| test gains / losses | McNemar p (worse than target) | holds on test |" in text
    for v in ("exact", "accurate", "approximate"):
        t = doc["variants"][v]["test_verdict"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {v} |"))
        assert f"+{t['gains']} / -{t['losses']} | {t['p_worse']:.3g} | **{'yes' if t['holds'] else 'NO'}**" in row
    assert "exact one-sided McNemar" in text


def test_old_plans_still_load_and_schema_2_is_checked(searched, tmp_path) -> None:
    _, _, doc, out = searched
    old = json.loads((out / "plan.json").read_text())
    del old["schema_version"]
    for var in old["variants"].values():
        del var["test_verdict"], var["holds_on_test"]
        var.pop("tightening", None)
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_plan(tmp_path / "old.json", "accurate") == load_plan(out / "plan.json", "accurate")
    # schema 2 without its verdict: one clear error
    broken = json.loads((out / "plan.json").read_text())
    del broken["variants"]["approximate"]["test_verdict"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SieveError, match="test_verdict"):
        load_plan_document(tmp_path / "broken.json")
    newer = json.loads((out / "plan.json").read_text())
    newer["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(SieveError, match="newer"):
        load_plan_document(tmp_path / "newer.json")
