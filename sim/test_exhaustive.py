"""The exhaustive check's machinery (``make verify-exhaustive``) on a few small chunks.

The full run (all 2^32 inputs, ~2 h) is too long for the suite; this proves the same code path
works from a fresh clone (Yosys ``write_cxxrtl`` + g++ model, the driver, the chunk pipeline,
the comparison with the emulator) and that a disagreement is reported, not swallowed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sieve
from sieve.cache import file_lock

from sim import exhaustive

ROOT = Path(__file__).resolve().parents[1]
CHUNK_BITS = 12  # 4,096 inputs per chunk: 2^20 chunks, taken in the same strided order


@pytest.fixture(scope="module")
def driver() -> Path:
    work = ROOT / "build" / "sim" / "cxxrtl-exhaustive"
    with file_lock(work):  # xdist workers share the cached model
        return exhaustive.build_driver(work)


@pytest.mark.parametrize("text, jobs", [("se4m3b7", 1), ("ue3m4b5", 2), ("e5m2", 8)])
def test_sampled_chunks_equal_the_emulator(driver, text, jobs, tmp_path):
    fraction = 5 / 2 ** (32 - CHUNK_BITS)
    r = exhaustive.check_format(sieve.Format.parse(text), driver, fraction, chunk_bits=CHUNK_BITS, progress=False,
                                jobs=jobs, scratch=tmp_path)  # its own folder: other workers share the driver's
    assert r["checked"] == 5 * 4096 and r["mismatches"] == 0 and r["jobs"] == jobs, r["examples"]
    assert not list(tmp_path.glob("chunks-*")), "chunk files left behind"


def test_a_disagreement_is_reported(driver, monkeypatch):
    real = exhaustive.expected_encode

    def off_by_one(values, fmt):
        codes = real(values, fmt).copy()
        codes[7] ^= 1
        return codes

    monkeypatch.setattr(exhaustive, "expected_encode", off_by_one)
    r = exhaustive.check_format(sieve.Format.parse("se4m3b7"), driver, 3 / 2 ** (32 - CHUNK_BITS),
                                chunk_bits=CHUNK_BITS, progress=False, jobs=2)
    assert r["mismatches"] == 3 and len(r["examples"]) == 3
    order = exhaustive._order(2 ** (32 - CHUNK_BITS))[:3]  # reported in chunk order, whoever finished first
    assert [int(e["input"], 16) for e in r["examples"]] == [c * 4096 + 7 for c in order]
    assert all(e["rtl"] ^ e["emulator"] == 1 for e in r["examples"])


def test_contract_compressor_around_the_fp32_subnormals():
    """The compressor built for ``search_nosub_b125`` (no normalising shift) against the emulator
    where that matters: +-0, the smallest and largest fp32 subnormals of both signs and the
    smallest normals (chunks of 2^16 inputs), plus a strided sample of the whole range."""
    work = ROOT / "build" / "sim" / "cxxrtl-exhaustive-b125"
    with file_lock(work):
        exe = exhaustive.build_driver(work, "search_nosub_b125")
    neg = 1 << 15  # chunk of 0x80000000 at 2^16 inputs per chunk
    region = [0, 1, 126, 127, 128, neg, neg + 1, neg + 127, neg + 128]
    sample = exhaustive._order(1 << 16)[:6]
    for text in ("se7m2b125", "se4m3b7", "ue5m10b20"):  # Min/2 from 2^-125 up
        r = exhaustive.check_format(sieve.Format.parse(text), exe, 0, chunk_bits=16, progress=False, jobs=2,
                                    chunks=region + sample)
        assert r["checked"] == 15 * 65536 and r["mismatches"] == 0, (text, r["examples"])


@pytest.mark.parametrize("args, message", [(["--fraction", "0"], "error: --fraction"),
                                           (["--jobs", "0"], "error: --jobs"),
                                           (["--contract", "tiny"], "error: unknown contract 'tiny'"),
                                           (["--contract", "search", "--format", "float8_e5m2"],
                                            "error: format(s) ['se5m2b15+sub+ieee+ovinf'] are outside contract 'search'")])
def test_cli_rejects_bad_arguments(tmp_path, capsys, args, message):
    assert exhaustive.main([*args, "--out", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "v").exists()


def test_strided_order_is_a_permutation():
    order = exhaustive._order(256)
    assert sorted(order) == list(range(256)) and order[:2] == [0, order[1]] and order[1] > 16
    assert np.ptp(order[:8]) > 128  # a short prefix already spans the range
