"""`sieve search` end to end on the real lenet5 / Fashion-MNIST (slow: may train lenet5 once)."""

from __future__ import annotations

import pytest

from sieve.plan_io import load_plan, load_plan_document


@pytest.mark.slow
def test_cli_search_lenet5(tmp_path, capsys) -> None:
    from sieve.cli.main import main

    out = tmp_path / "lenet5"
    assert main(["search", "--model", "lenet5", "--val", "1000", "--test", "1000", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed
    doc = load_plan_document(out / "plan.json")
    assert doc["model"] == "lenet5" and doc["dataset"] and doc["strategy"] == "greedy"
    for name in ("exact", "accurate", "approximate"):
        assert doc["variants"][name]["meets_target"]
        assert doc["variants"][name]["mean_bits"] < 32
    assert load_plan(out / "plan.json", "accurate")
