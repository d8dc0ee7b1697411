"""Careless input and careless plumbing get one clear line (exit 2) or a quiet stop, never a traceback.

Run as a user runs the commands: a subprocess of the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sieve.errors import SieveError
from sieve.io_utils import atomic_path, check_output_file

CLI = [sys.executable, "-m", "sieve.cli.main"]


def sieve_cli(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


def assert_one_error_line(proc, *words):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def npy(tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, np.linspace(-3, 3, 64, dtype=np.float32))
    return src


# ------------------------------------------------------------------ sieve quantize: output paths


def test_quantize_into_an_existing_directory_is_one_line(tmp_path, npy):
    target = tmp_path / "outdir"
    target.mkdir()
    before = files_under(tmp_path)
    proc = sieve_cli("quantize", "-f", "e4m3", npy, target)
    assert_one_error_line(proc, str(target), "is an existing directory")
    assert files_under(tmp_path) == before


def test_quantize_below_a_file_is_one_line(tmp_path, npy):
    blocker = tmp_path / "notadir"
    blocker.write_text("x")
    before = files_under(tmp_path)
    proc = sieve_cli("quantize", "-f", "e4m3", npy, blocker / "sub" / "out.npy")
    assert_one_error_line(proc, str(blocker), "is a file, not a directory")
    assert files_under(tmp_path) == before


def test_output_checks_come_before_any_work(tmp_path):
    # the output is refused even though the input does not exist: the cheap check runs first
    target = tmp_path / "d"
    target.mkdir()
    proc = sieve_cli("quantize", "-f", "e4m3", tmp_path / "missing.npy", target)
    assert_one_error_line(proc, "is an existing directory")


def test_a_failed_rename_leaves_nothing_behind(tmp_path, monkeypatch):
    """A path problem found only at the last step (e.g. permissions change under us) is a
    SieveError, and neither the target nor the temporary file remains."""
    import os

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SieveError, match="cannot write .*Permission denied"):
        with atomic_path(tmp_path / "out.npy") as tmp:
            tmp.write_bytes(b"data")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_is_refused_up_front(tmp_path, monkeypatch):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    with pytest.raises(SieveError, match="is not writable"):
        check_output_file(tmp_path / "new" / "out.npy")


def test_missing_parents_are_fine(tmp_path):
    assert check_output_file(tmp_path / "a" / "b" / "out.npy") == tmp_path / "a" / "b" / "out.npy"


# ------------------------------------------------------------------ output piped into `head`


@pytest.mark.parametrize(
    "args",
    [
        ["format", "bfloat16", "--values", "65536"],   # ~2 MB of table, far more than a pipe holds
        ["quantize", "--json", "-f", "e4m3", "{npy}", "{out}"],
    ],
    ids=["format", "quantize-json"],
)
def test_reader_closing_the_pipe_early_is_quiet(tmp_path, npy, args):
    args = [a.format(npy=npy, out=tmp_path / "q.npy") for a in args]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline() if args[0] == "format" else None  # `head -1`, or a reader gone before any output
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert proc.returncode == 1


# ------------------------------------------------------------------ sieve export: cheap checks first


@pytest.fixture
def export_env(tmp_path, monkeypatch):
    """A valid lenet5 plan, and a zoo whose loader must not be reached (it would read the data
    set and, for a pool model, train for minutes)."""
    import json

    from sieve import zoo
    from sieve.export.exporter import quantizable_names
    from sieve.export.preflight import check_export_request  # noqa: F401  (import cost outside the timing)

    def must_not_load(*args, **kwargs):
        raise AssertionError("zoo.load was called before the cheap checks")

    monkeypatch.setattr(zoo, "load", must_not_load)
    known = quantizable_names(zoo.architecture("lenet5"), zoo.model_info("lenet5")["input_shape"])
    tensors = [{"name": n, "kind": k, "elements": e, "format": "se4m3b7", "bits": 8} for n, (k, e) in known.items()]
    variant = {"val_accuracy": 0.9, "test_accuracy": 0.9, "normalized_test_accuracy": 1.0,
               "mean_bits_weights": 8.0, "mean_bits_activations": 8.0, "mean_bits": 8.0,
               "compression_ratio": 4.0, "tensors": tensors}
    doc = {"model": "lenet5", "dataset": "fashion-mnist", "strategy": "handmade",
           "baseline": {"val_accuracy": 0.9, "test_accuracy": 0.9},
           "variants": {"exact": variant, "accurate": variant, "approximate": variant},
           "search_seconds": 0.0, "evaluations": 0}

    def plan(name: str, **changes) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps({**doc, **changes}))
        return path

    return tmp_path, plan


def export_fails_fast(capsys, *args):
    import time

    from sieve.cli.main import main

    start = time.perf_counter()
    code = main(["export", "--model", "lenet5", *map(str, args)])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert seconds < 1.0, seconds
    return err


def test_export_bad_out_suffix_fails_before_loading(export_env, capsys):
    tmp, plan = export_env
    err = export_fails_fast(capsys, "--plan", plan("plan.json"), "--out", tmp / "m.txt")
    assert "should end in .onnx" in err
    assert not (tmp / "m.txt").exists()


def test_export_out_that_cannot_be_written_fails_before_loading(export_env, capsys):
    tmp, plan = export_env
    (tmp / "dir.onnx").mkdir()
    (tmp / "file").write_text("x")
    assert "is an existing directory" in export_fails_fast(capsys, "--plan", plan("p.json"), "--out", tmp / "dir.onnx")
    assert "is a file, not a directory" in export_fails_fast(capsys, "--fp32", "--out", tmp / "file" / "m.onnx")


def test_export_plan_for_another_model_fails_before_loading(export_env, capsys):
    tmp, plan = export_env
    err = export_fails_fast(capsys, "--plan", plan("other.json", model="resnet20"), "--out", tmp / "m.onnx")
    assert "plan for model 'resnet20'" in err


def test_export_plan_missing_or_without_variant_fails_before_loading(export_env, capsys):
    tmp, plan = export_env
    assert "does not exist" in export_fails_fast(capsys, "--plan", tmp / "nope.json", "--out", tmp / "m.onnx")
    broken = plan("novariant.json", variants={})
    assert "variant" in export_fails_fast(capsys, "--plan", broken, "--out", tmp / "m.onnx")


def test_export_plan_with_tensors_the_model_lacks_fails_before_loading(export_env, capsys):
    import json

    tmp, plan = export_env
    doc = json.loads(plan("p.json").read_text())
    for v in doc["variants"].values():
        v["tensors"] = [{"name": "fc9.weight", "kind": "weight", "elements": 10, "format": "se4m3b7", "bits": 8}]
    bad = tmp / "bad.json"
    bad.write_text(json.dumps(doc))
    err = export_fails_fast(capsys, "--plan", bad, "--out", tmp / "m.onnx")
    assert "plan does not match lenet5" in err and "fc9.weight" in err
