"""`sieve format` and `sieve quantize`, run as a user runs them (a subprocess of the console script)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import sieve


def sieve_cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "sieve.cli.main", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_format_prints_width_range_constants_and_values():
    out = sieve_cli("format", "e4m3").stdout
    assert "se4m3b7" in out and "width       8 bits" in out
    assert "Max=480" in out and "Min=0.015625" in out
    assert "min_bits      0x3C800000" in out and "adjusted_bias 120" in out
    assert "01111111  480" in out


def test_format_json_is_the_description():
    info = json.loads(sieve_cli("format", "float8_e5m2", "--json").stdout)
    assert info == json.loads(json.dumps(sieve.PRESETS["float8_e5m2"].describe()))


def test_format_bad_input_is_one_line_and_exit_2():
    proc = sieve_cli("format", "e9m3", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: exp_bits must be 1..8, got 9")


def test_quantize_writes_values_and_statistics(tmp_path):
    x = np.array([0.1, -3.0, 1e9, 0.0, 1e-30, np.nan, np.inf, 2.0], dtype=np.float32)
    np.save(tmp_path / "in.npy", x)
    out = tmp_path / "out.npy"
    proc = sieve_cli("quantize", "--format", "e4m3", str(tmp_path / "in.npy"), str(out), "--json")
    stats = json.loads(proc.stdout)
    q = np.load(out)
    assert np.array_equal(q, sieve.quantize(x, "e4m3"), equal_nan=True)
    assert stats["count"] == 8
    assert stats["saturated"] == 1          # 1e9 (inf is counted separately)
    assert stats["flushed_to_zero"] == 1    # 1e-30
    assert stats["nan_inputs"] == 1 and stats["inf_inputs"] == 1
    assert stats["max_relative_error"] > 0.99  # 1e9 -> 480


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("not numpy"), "cannot read"),
        (lambda p: np.save(p, np.arange(4)), "got dtype int64"),
    ],
)
def test_quantize_bad_input_leaves_no_output(tmp_path, make_input, message):
    src = tmp_path / "in.npy"
    make_input(src)
    out = tmp_path / "out.npy"
    proc = sieve_cli("quantize", "-f", "e4m3", str(src), str(out), check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()
    assert list(tmp_path.glob("*.part")) == []
