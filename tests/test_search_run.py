"""A search run as a library call and as `sieve search` (issue 12): the caller's process state
is left as found, ``--threads``, labelled progress bars with totals and log lines that never
collide with them, a model that gets nothing right, splits too small for the targets, an
``--out`` that is a file, and the histogram figure's title clear of its panels.

The CLI tests replace ``sieve.zoo.load`` with the tiny real model and data of
``tests/search_models.py`` so that the whole command runs in seconds.
"""

from __future__ import annotations

import io
import json
import math
import sys
import warnings

import numpy as np
import pytest
import torch

from sieve.errors import SieveError
from sieve.search import context as search_context
from sieve.search import driver as search_driver
from sieve.search import run_search
from sieve.search.driver import SearchWarning
from tests.search_models import tiny_problem


@pytest.fixture(autouse=True)
def _restore_globals():
    """Whatever a test (or a failing search) does to the process, the next test starts clean."""
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    err = np.geterr()
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    np.seterr(**err)


def _fake_zoo(monkeypatch, make=tiny_problem) -> list:
    """`sieve.zoo.load` -> the tiny problem cut to --val/--test; returns the calls' arguments."""
    import sieve.zoo

    calls = []

    def load(name, data=None, weights=None, val=None, test=None, **options):
        calls.append((name, val, test))
        return make(n_val=val or 300, n_test=test or 100)

    monkeypatch.setattr(sieve.zoo, "load", load)
    return calls


def _always_wrong(n_val: int = 300, n_test: int = 100):
    """The tiny model with every label moved off its prediction: fp32 gets no image right."""
    model, data = tiny_problem(n_val=n_val, n_test=n_test)
    with torch.no_grad():
        for split in (data.val, data.test):
            split.labels = (model(split.images).argmax(1) + 1) % 10
    return model, data


# ----------------------------------------------------------------------------- 1: process state

def _failing_strategy(monkeypatch) -> None:
    def boom(ctx, log=None):
        raise RuntimeError("strategy failed")

    monkeypatch.setitem(search_driver.STRATEGIES, "greedy", boom)


@pytest.mark.parametrize("fail", [False, True], ids=["completes", "raises"])
def test_run_search_gives_the_thread_count_back(monkeypatch, fail) -> None:
    model, data = tiny_problem(n_val=300, n_test=100)
    if fail:
        _failing_strategy(monkeypatch)
    torch.set_num_threads(3)
    try:
        run_search(model, data, model_name="tiny", progress=False, threads=1)
    except RuntimeError as exc:
        assert fail and "strategy failed" in str(exc)
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("fail", [False, True], ids=["completes", "raises"])
def test_run_search_leaves_other_process_state_as_found(tmp_path, monkeypatch, fail) -> None:
    """Default dtype, grad mode, NumPy error state, warning filters, matplotlib backend and the
    model's train/eval flags: as the caller set them (a float64 default dtype must not break
    the search either)."""
    import matplotlib

    model, data = tiny_problem(n_val=300, n_test=100)
    model.train()
    model.fc1.eval()  # a mixed training state must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    if fail:
        _failing_strategy(monkeypatch)
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a caller's own backend; the report must not switch it to Agg
    try:
        torch.set_default_dtype(torch.float64)
        np.seterr(over="ignore", under="warn")
        err = np.geterr()
        filters = list(warnings.filters)
        try:
            run_search(model, data, model_name="tiny", out_dir=tmp_path, progress=False, threads=1)
        except RuntimeError as exc:
            assert fail and "strategy failed" in str(exc)
        else:
            assert not fail and (tmp_path / "histograms.png").stat().st_size > 0
        assert torch.get_default_dtype() == torch.float64
        assert torch.is_grad_enabled()
        assert np.geterr() == err
        assert list(warnings.filters) == filters
        assert matplotlib.get_backend().lower() == "svg"
        assert {name: m.training for name, m in model.named_modules()} == modes
    finally:
        matplotlib.use(backend)


# ----------------------------------------------------------------------------- 2: --threads

class _Stop(Exception):
    pass


def test_threads_used_during_the_run_then_restored(monkeypatch) -> None:
    seen = []

    def spy(ctx, log=None):  # (stops the search: 2 threads on a loaded 2-core machine crawl)
        seen.append(torch.get_num_threads())
        raise _Stop

    monkeypatch.setitem(search_driver.STRATEGIES, "uniform", spy)
    model, data = tiny_problem(n_val=50, n_test=10)
    torch.set_num_threads(1)
    with pytest.raises(_Stop):
        run_search(model, data, model_name="tiny", strategy="uniform", threads=2, progress=False, report=False)
    assert seen == [2] and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    with pytest.raises(_Stop):
        run_search(model, data, model_name="tiny", strategy="uniform", progress=False, report=False)
    assert seen == [2, 2] and torch.get_num_threads() == 2  # default: the caller's own setting
    for bad in (0, -1, 1.5):
        with pytest.raises(SieveError, match="threads"):
            run_search(model, data, model_name="tiny", threads=bad, progress=False)


def test_cli_threads_flag_default_all_cores(tmp_path, monkeypatch, capsys) -> None:
    import sieve.search
    from sieve.cli.main import main

    with pytest.raises(SystemExit):
        main(["search", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--threads N" in help_text and "all" in help_text and "cores" in help_text
    _fake_zoo(monkeypatch)
    asked = []
    real = sieve.search.run_search

    def spy(*args, **kwargs):
        asked.append(kwargs["threads"])
        return real(*args, **{**kwargs, "threads": 1})  # (what the CLI asked is recorded; run on 1)

    monkeypatch.setattr(sieve.search, "run_search", spy)
    torch.set_num_threads(1)
    out = tmp_path / "o"
    assert main(["search", "--model", "lenet5", "--strategy", "uniform", "--quiet", "--out", str(out), "--val", "50"]) == 0
    assert main(["search", "--model", "lenet5", "--strategy", "uniform", "--quiet", "--out", str(out), "--val", "50",
                 "--threads", "1"]) == 0
    assert asked == [search_driver.all_cores(), 1] and search_driver.all_cores() >= 1
    assert torch.get_num_threads() == 1
    capsys.readouterr()
    assert main(["search", "--model", "lenet5", "--threads", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--threads" in capsys.readouterr().err and not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- 3: progress

def _terminal(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: '\\r' returns to column 0 and overwrites."""
    lines, row, col = [], [], 0
    for ch in text:
        if ch == "\n":
            lines.append("".join(row).rstrip())
            row, col = [], 0
        elif ch == "\r":
            col = 0
        else:
            if col < len(row):
                row[col] = ch
            else:
                row.append(ch)
            col += 1
    if row:
        lines.append("".join(row).rstrip())
    return lines


def test_cli_progress_bars_have_totals_and_log_lines_stay_whole(tmp_path, monkeypatch) -> None:
    from sieve.cli.main import main

    _fake_zoo(monkeypatch)
    both = io.StringIO()  # stdout and stderr redirected to one file
    monkeypatch.setattr(sys, "stdout", both)
    monkeypatch.setattr(sys, "stderr", both)
    assert main(["search", "--model", "lenet5", "--val", "300", "--test", "100", "--threads", "1",
                 "--out", str(tmp_path / "o")]) == 0
    raw = both.getvalue()
    shown = _terminal(raw)
    # every phase has a labelled bar with a total
    for label, total in (("fp32 val", "/300"), ("fp32 test", "/100"), ("test", "/300"), ("report", "/5")):
        assert any(line.startswith(label) and total in line for line in raw.split("\r")), (label, raw)
    search_bars = [seg for seg in raw.split("\r") if seg.startswith("search lenet5 (greedy)")]
    assert search_bars and all("/" in seg.split("|")[2] for seg in search_bars if seg.count("|") >= 2), search_bars
    assert not any("0eval [" in seg or "?eval/s]" in seg for seg in raw.split("\r"))
    # the fp32 baseline is printed before the search's first per-layer line
    first_fp32 = next(i for i, line in enumerate(shown) if line.startswith("fp32 val accuracy"))
    first_layer = next(i for i, line in enumerate(shown) if line.startswith("  ["))
    assert first_fp32 < first_layer
    # log lines start at the beginning of a line (never glued onto a bar's text)
    for line in shown:
        if "images]" in line or "fp32 val accuracy" in line:
            assert line.startswith(("  [", "fp32 val accuracy")), line
    assert shown[-1].startswith("plan:")


# ----------------------------------------------------------------------------- 4: nothing right

@pytest.mark.parametrize("strategy", ["greedy", "sieve", "uniform"])
def test_model_with_no_correct_image_reads_na(tmp_path, strategy) -> None:
    model, data = _always_wrong()
    with pytest.warns(SearchWarning, match="none of the 300 validation images"):
        doc = run_search(model, data, model_name="hopeless", strategy=strategy, out_dir=tmp_path,
                         progress=False, threads=1)
    assert doc["baseline"]["val_accuracy"] == 0.0
    for v in doc["variants"].values():
        assert v["normalized_val_accuracy"] is None and v["normalized_test_accuracy"] is None
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert all(v["normalized_val_accuracy"] is None for v in saved["variants"].values())
    assert any("none of the 300" in w for w in saved["warnings"])
    report = (tmp_path / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith(("| exact", "| accurate", "| approximate"))]
    assert len(rows) == 3 and all(line.count("n/a") == 2 for line in rows)
    assert "| fp32 | 0.00% | n/a |" in report
    assert (tmp_path / "pareto.png").stat().st_size > 0


# ----------------------------------------------------------------------------- 5: tiny splits

@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, 2.0, 2.5])
def test_allowance_size_is_where_the_margin_rule_admits_one_lost_image(z) -> None:
    need = search_context.min_correct_for_allowance(z)
    ctx = object.__new__(search_context.SearchContext)
    ctx.margin_z = z
    ctx.base_correct = need       # one lost image (0 gains, 1 loss) passes approximate ...
    assert ctx.passes("approximate", -1, 1)
    ctx.base_correct = need - 1   # ... and with one fp32-correct image fewer it cannot
    assert not ctx.passes("approximate", -1, 1)
    assert all(not ctx.passes("approximate", -k, f) for k in range(1, 5) for f in range(k, 30, 2))
    assert search_context.min_correct_for_allowance(1.0) == 2000


def test_tiny_splits_warn_with_the_size_the_margin_rule_needs(tmp_path) -> None:
    model, data = tiny_problem(n_val=1, n_test=1, seed=1)
    with pytest.warns(SearchWarning) as caught:
        doc = run_search(model, data, model_name="tiny", out_dir=tmp_path, progress=False, threads=1)
    messages = [str(w.message) for w in caught if issubclass(w.category, SearchWarning)]
    val_msg = next(m for m in messages if "validation split" in m)
    need = search_context.min_correct_for_allowance(1.0)
    correct = round(doc["baseline"]["val_accuracy"])
    assert f"{need:,}" in val_msg and "--val" in val_msg and "margin" in val_msg
    if correct:  # the images it takes at this model's fp32 accuracy
        assert f"{math.ceil(need / doc['baseline']['val_accuracy']):,}" in val_msg
    test_msg = next(m for m in messages if "test split" in m)
    assert "--test" in test_msg and "1,000" in test_msg
    assert doc["warnings"] == messages
    assert "## Warnings" in (tmp_path / "report.md").read_text()


def test_cli_tiny_splits_print_a_warning(tmp_path, monkeypatch, capsys) -> None:
    from sieve.cli.main import main

    _fake_zoo(monkeypatch)
    assert main(["search", "--model", "lenet5", "--val", "1", "--test", "1", "--quiet", "--threads", "1",
                 "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("validation split has 1 image" in line and "--val" in line for line in lines), err
    assert any("test split has 1 image" in line for line in lines), err
    assert all(line.startswith("warning:") for line in err.splitlines() if line.strip()), err


# ----------------------------------------------------------------------------- 6: --out is a file

@pytest.mark.parametrize("where", ["file", "under_file"])
def test_cli_out_that_is_a_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys, where) -> None:
    import sieve.zoo
    from sieve.cli.main import main

    def must_not_load(*args, **kwargs):
        raise AssertionError("the --out check must come before loading the model")

    monkeypatch.setattr(sieve.zoo, "load", must_not_load)
    existing = tmp_path / "results.txt"
    existing.write_text("keep me\n")
    out = existing if where == "file" else existing / "sub"
    assert main(["search", "--model", "lenet5", "--out", str(out), "--fresh"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and str(existing) in err
    assert existing.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]
    with pytest.raises(SieveError, match="not a directory"):
        run_search(*tiny_problem(n_val=50, n_test=10), model_name="tiny", out_dir=out, progress=False)


# ----------------------------------------------------------------------------- 8: figure layout

def test_histogram_title_clears_the_top_row_on_52_panels() -> None:
    from sieve.histograms import ExponentHistogram
    from sieve.report.search_report import histogram_figure

    rng = np.random.default_rng(0)
    tensors, hists = [], {}
    for k in range(52):
        name = f"features.{k}.{'weight' if k % 2 else 'input'}"
        h = ExponentHistogram(name, "weight" if k % 2 else "activation")
        h.add(torch.from_numpy(rng.standard_normal(500).astype(np.float32) * 2.0 ** (k % 7)))
        hists[name] = h
        tensors.append({"name": name, "kind": h.kind, "elements": 500, "format": "se4m3b7", "bits": 8})
    doc = {"model": "squeezenet1_1", "variants": {"accurate": {"tensors": tensors}}}
    fig = histogram_figure(doc, hists)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    top = max(ax.get_position().y1 for ax in visible)
    top_row = [ax for ax in visible if abs(ax.get_position().y1 - top) < 1e-6]
    assert len(top_row) == 4
    for ax in top_row:
        box = ax.get_tightbbox(renderer)  # the panel with its own title and legend
        assert not title.overlaps(box), (title, box)
        assert title.y0 >= box.y1
    assert title.y1 <= fig.bbox.y1  # and the title is inside the figure


# ----------------------------------------------------------------------------- 7: make search

def test_make_search_passes_test_out_threads_through() -> None:
    import shutil
    import subprocess
    from pathlib import Path

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(["make", "-n", "-o", ".venv/.sieve-setup", "search", "MODEL=resnet20", "VAL=10",
                          "TEST=20", "OUT=/tmp/elsewhere", "THREADS=3"], cwd=root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    command = " ".join(run.stdout.replace("\\\n", " ").split())
    for part in ("sieve search --model resnet20", "--val 10", "--test 20", "--out /tmp/elsewhere", "--threads 3"):
        assert part in command, command
