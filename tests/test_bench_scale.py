"""The SqueezeNet before/after part of ``tests/bench/bench_scale.py`` (issue 15), without a model.

Why: the benchmark takes an hour, so its bookkeeping (figures from plan.json, ratios, the issue's
goals, peak RSS from rusage or ``/usr/bin/time -v``, the skip without ../shared) is checked here on
fabricated plans and two tiny child processes.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.bench import bench_scale as bs

TIME_V = """\tCommand being timed: "python -m sieve.cli.main search --out /x/after"
\tUser time (seconds): 10.00
\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:03.50
\tMaximum resident set size (kbytes): 1572864
\tExit status: 0
"""


def _plan(seconds, passes, pass_s, evals, run, bits, acc, holds, fmt="e4m3"):
    variants = {v: {"mean_bits": bits + i, "normalized_test_accuracy": acc, "holds_on_test": holds,
                    "tensors": {"conv1.weight": fmt}} for i, v in enumerate(bs.SQ_VARIANTS)}
    return {"search_seconds": seconds, "evaluations": evals, "variants": variants,
            "cost": {"search_fp32_passes": passes, "fp32_pass_seconds": pass_s, "evaluations_run": run}}


def _write_dir(root, name, plan, rss=None, wall=None, err=None):
    d = root / name
    d.mkdir()
    (d / "plan.json").write_text(json.dumps(plan))
    if rss is not None:
        (root / f"{name}.rss_kb").write_text(f"{rss}\n")
    if wall is not None:
        (root / f"{name}.wall_s").write_text(f"{wall}\n")
    if err is not None:
        (root / f"{name}.err").write_text(err)
    return d


def test_run_figures_takes_the_plan_fields():
    fig = bs.run_figures(_plan(1200.0, 20.0, 60.0, 300, 290, 6.5, 0.99, True), 1300.04, 3 * 1024 * 1024)
    assert (fig["search_seconds"], fig["search_fp32_passes"], fig["fp32_pass_seconds"]) == (1200.0, 20.0, 60.0)
    assert (fig["evaluations"], fig["evaluations_run"], fig["wall_seconds"]) == (300, 290, 1300.0)
    assert fig["peak_rss_gb"] == 3.0
    assert fig["variants"]["accurate"] == {"mean_bits": 7.5, "normalized_test_accuracy": 0.99, "holds_on_test": True,
                                           "tensors": {"conv1.weight": "e4m3"}}


def test_compare_ratios_and_goals_met():
    before = bs.run_figures(_plan(2800.0, 58.0, 48.0, 326, 320, 6.0, 0.99, True), 3000.0, 8 * 1024 * 1024)
    after = bs.run_figures(_plan(1000.0, 20.0, 50.0, 200, 190, 6.0, 0.99, True), 1200.0, 1536 * 1024)
    c = bs.compare(before, after)
    r = c["ratios_after_over_before"]
    assert r == {"wall": 0.4, "wall_basis": "wall_seconds", "fp32_passes": round(20 / 58, 3), "peak_rss": 0.188}
    assert c["speedup"] == 2.5
    assert {k: g["met"] for k, g in c["goals"].items()} == {"fp32_passes": True, "wall": True, "peak_rss": True}
    assert c["same_plan"] == {v: True for v in bs.SQ_VARIANTS}


def test_compare_goals_not_met_and_plan_change():
    before = bs.run_figures(_plan(2800.0, 58.0, 48.0, 326, 320, 6.0, 0.99, True), 3000.0, 8 * 1024 * 1024)
    after = bs.run_figures(_plan(1500.0, 26.0, 50.0, 200, 190, 6.0, 0.99, True, fmt="e5m2"), 1600.0, 2200 * 1024)
    c = bs.compare(before, after)
    assert c["speedup"] == round(3000 / 1600, 2)
    assert {k: g["met"] for k, g in c["goals"].items()} == {"fp32_passes": False, "wall": False, "peak_rss": False}
    assert c["same_plan"]["exact"] is False


def test_compare_falls_back_to_search_seconds_and_marks_missing_rss():
    before = bs.run_figures(_plan(3000.0, 58.0, 48.0, 326, 320, 6.0, 0.99, True), None, None)
    after = bs.run_figures(_plan(1000.0, 20.0, 50.0, 200, 190, 6.0, 0.99, True), 1100.0, None)
    c = bs.compare(before, after)
    assert c["ratios_after_over_before"]["wall_basis"] == "search_seconds"
    assert c["speedup"] == 3.0
    assert c["ratios_after_over_before"]["peak_rss"] is None and c["goals"]["peak_rss"]["met"] is None


def test_read_rss_kb_plain_number_and_time_v(tmp_path):
    (tmp_path / "a.rss_kb").write_text("123456\n")
    (tmp_path / "a.err").write_text("progress bar noise\r\n" + TIME_V)
    (tmp_path / "b.err").write_text("no timing here\n")
    assert bs.read_rss_kb(tmp_path / "a.rss_kb") == 123456
    assert bs.read_rss_kb(tmp_path / "a.err") == 1572864
    assert bs.read_rss_kb(tmp_path / "b.err") is None
    assert bs.read_rss_kb(tmp_path / "missing") is None
    assert bs._time_v_wall(TIME_V) == 3723.5
    assert bs._time_v_wall("\tElapsed (wall clock) time (h:mm:ss or m:ss): 44:55.33\n") == pytest.approx(2695.33)


def test_from_dirs_builds_the_table(tmp_path, monkeypatch):
    before = _write_dir(tmp_path, "before", _plan(2800.0, 58.0, 48.0, 326, 320, 6.0, 0.99, True), err=TIME_V)
    after = _write_dir(tmp_path, "after", _plan(1000.0, 20.0, 50.0, 200, 190, 6.0, 0.99, True), rss=1024 * 1024, wall=1200)
    monkeypatch.setenv("SIEVE_BENCH_SCALE_SQUEEZENET_DIRS", f"{before},{after}")
    res = bs.squeezenet_part(tmp_path / "out", quick=False)
    assert res["source"] == "dirs"
    assert res["before"]["peak_rss_kb"] == 1572864 and res["before"]["wall_seconds"] == 3723.5
    assert res["before"]["command"].endswith("--out /x/after")
    assert res["after"]["peak_rss_gb"] == 1.0 and res["after"]["wall_seconds"] == 1200.0
    assert res["ratios_after_over_before"]["wall"] == round(1200 / 3723.5, 3)
    assert all(g["met"] for g in res["goals"].values())
    assert "tensors" not in res["after"]["variants"]["exact"]  # the JSON does not copy the plans
    md = "\n".join(bs._squeezenet_markdown(res))
    assert "| <= 25 fp32 passes | 20.00 | met |" in md
    assert "| peak RSS <= 2 GiB | 1.00 | met |" in md
    assert "overlapped in time" in md


def test_from_dirs_unfinished_search_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "before").mkdir()
    after = _write_dir(tmp_path, "after", _plan(1000.0, 20.0, 50.0, 200, 190, 6.0, 0.99, True))
    monkeypatch.setenv("SIEVE_BENCH_SCALE_SQUEEZENET_DIRS", f"{tmp_path / 'before'},{after}")
    with pytest.raises(FileNotFoundError, match="plan.json is missing"):
        bs.squeezenet_part(tmp_path / "out", quick=False)


def test_recorded_before_when_no_revision():
    after = bs.run_figures(_plan(1000.0, 30.0, 50.0, 200, 190, 6.0, 0.99, True), 1400.0, 1024 * 1024)
    res = bs._assemble({"after": after})
    assert res["before"]["recorded"] and res["before"]["search_fp32_passes"] == 58.0
    assert res["ratios_after_over_before"]["peak_rss"] == round(1.0 / 7.4, 3)
    assert res["goals"]["fp32_passes"]["met"] is False
    md = "\n".join(bs._squeezenet_markdown({"source": "run", "concurrent": False, **res}))
    assert "recorded in an earlier session on this machine" in md
    assert "| <= 25 fp32 passes | 30.00 | not met |" in md


def test_skipped_with_reason_without_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("SIEVE_BENCH_SCALE_SQUEEZENET_DIRS", raising=False)
    monkeypatch.setattr(bs, "SHARED", tmp_path / "no-shared")
    res = bs.squeezenet_part(tmp_path / "out", quick=True)
    assert "absent on this machine" in res["skipped"] and "no-shared" in res["skipped"]
    monkeypatch.setenv("SIEVE_BENCH_SCALE_PARTS", "squeezenet")
    bs.run(tmp_path / "out", quick=True)
    assert json.loads((tmp_path / "out" / "scale.json").read_text())["squeezenet"] == res
    assert "squeezenet skipped: needs" in (tmp_path / "out" / "scale.md").read_text()


def test_run_concurrently_reports_each_childs_peak_rss(tmp_path):
    big = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(0.3)"
    jobs = {"small": ([sys.executable, "-c", "import time; time.sleep(0.3)"], None, tmp_path, tmp_path / "s.log"),
            "big": ([sys.executable, "-c", big], None, tmp_path, tmp_path / "b.log"),
            "fails": ([sys.executable, "-c", "raise SystemExit(3)"], None, tmp_path, tmp_path / "f.log")}
    res = bs.run_concurrently(jobs)
    # the small child's figure is its own (~10 MB), not this test process's RSS (torch: ~300 MB)
    assert res["big"]["rss_kb"] > 200 * 1024 > 100 * 1024 > res["small"]["rss_kb"]
    assert res["small"]["returncode"] == 0 and res["fails"]["returncode"] == 3
    assert res["small"]["wall"] >= 0.3
