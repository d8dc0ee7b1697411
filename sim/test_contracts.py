"""A contract pins only what its family of formats never changes, so a pinned engine equals the full one there.

:mod:`sieve_hw.contracts` wires some of the calculator's constants into an engine as fixed
values.  That is safe exactly when, for every format of the family, the calculator itself
produces those values: then the pinned engine sees the same constants as the full engine
(which the golden sweeps verify) and computes the same codes.  The calculator's RTL is run
here on the family's formats of the sampled legal set (every width x sign x policy
combination at its extreme and default biases) and every pinned field is compared.
Synthesis must then actually shrink the engine (the pin reaches the netlist), and a lane unit
built for a contract must convert its family's formats exactly and refuse every other format
as it refuses an illegal record (``cfg_error``, streams closed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sieve_hw.compressor import Compressor
from sieve_hw.contracts import CONTRACTS, contract
from sieve_hw.decompressor import Decompressor

from .test_constcalc import field, run_constcalc, sampled_formats


class _Fields:
    """A constant-bus value read field by field (what a callable tie is applied to)."""

    def __init__(self, k: int):
        self._k = k

    def __getattr__(self, name: str) -> int:
        return field(self._k, name)


@pytest.mark.parametrize("name", [n for n, c in CONTRACTS.items() if c.ties])
def test_pinned_constants_are_what_the_calculator_gives_the_family(name):
    from sieve_hw.config import pack_format

    c = contract(name)
    fmts = [f for f in sampled_formats() if c.admits(f)]
    assert len(fmts) > 300, f"too few {name} formats sampled ({len(fmts)})"
    assert {f.exp_bits for f in fmts} >= set(range(1, 8)) and {f.signed for f in fmts} == {True, False}  # e8 needs bias >= 128
    ks, errs = run_constcalc([pack_format(f) for f in fmts], f"contract-{name}")
    bad = []
    for f, k, err in zip(fmts, ks, errs):
        assert not err, f"{f}: the calculator flags a legal format"
        for fname, tie in c.ties.items():
            want = tie(_Fields(k)) if callable(tie) else tie
            if field(k, fname) != want:
                bad.append(f"{f}: {fname} is {field(k, fname)}, pinned to {want}")
    assert not bad, "\n".join(bad[:20])


def test_contracts_admit_the_formats_they_name():
    import sieve

    search = contract("search")
    assert search.admits(sieve.Format(3, 4, 6, signed=False, subnormals=True))
    assert not search.admits(sieve.Format.parse("float8_e5m2"))
    assert not contract("search_nosub").admits(sieve.Format(3, 4, 6, subnormals=True))
    assert contract("full").admits(sieve.Format.parse("float8_e5m2"))


#: per contract: formats of its family (signed, unsigned, 1- to 8-bit exponents, extreme biases)
#: and formats just outside it (other policies, subnormals, a bias one too large)
LANE_CASES = {
    "search": (["se4m3b7", "ue3m4b5+sub", "se1m2b0", "se8m3b130+sub", "ue5m2b20"],
               ["float8_e5m2", "se4m3b7+rtz", "e4m3+ovnan+fn"]),
    "search_nosub_b125": (["se4m3b7", "ue3m4b5", "se1m2b0", "se7m2b125", "ue5m10b20", "se6m1b124"],
                          ["se4m3b7+sub", "se6m2b126", "float8_e5m2"]),
}


@pytest.mark.parametrize("name,design", [("search", "lanes2"), ("search_nosub_b125", "lanes2"),
                                         ("search_nosub_b125", "lanes1_s1")])
def test_contract_lane_unit_converts_its_family_and_refuses_other_formats(name, design):
    """A lane unit built for a contract equals the emulator on its family's formats (corners,
    random values, 3,000 fp32 subnormals, every code) and raises ``cfg_error`` for formats just
    outside it, accepting nothing under them."""
    import numpy as np
    import sieve

    from .golden import corner_values, fp32_subnormals, random_values
    from .harness import run_job
    from .test_engines import _check, _job, _segment

    rng = np.random.default_rng(3)
    family, outside = ([sieve.Format.parse(t) for t in texts] for texts in LANE_CASES[name])
    c = contract(name)
    assert all(c.admits(f) for f in family) and not any(c.admits(f) for f in outside)
    segments = []
    for i, fmt in enumerate(family):
        values = np.concatenate([corner_values(fmt, rng), random_values(fmt, rng, 300), fp32_subnormals(rng, 3000)])
        segments.append(_segment(fmt, rng, 0, comp_values=values, p_valid=0.8, p_ready=0.7))
        if i < len(outside):
            refused = _segment(outside[i], rng, 0, comp_values=np.ones(4, np.float32), dec_codes=np.ones(4, np.uint64))
            segments.append({**refused, "error": 1})
    lanes = int(design.removeprefix("lanes").split("_")[0])
    res = run_job(design, _job(segments, 3), f"contract_{name}", contract=name)
    counts = _check(segments, res, lanes)
    assert counts["formats"] == len(family) + len(outside) and counts["encoded"] > 3_000 * len(family)


def test_bad_contracts_are_refused():
    from sieve_hw.contracts import Contract

    with pytest.raises(ValueError, match="needs subnormals off and bias <= 125"):
        Contract("loose", "subnormals may be on", {"subnormals": 0}, normalises_fp32_subnormals=False)
    with pytest.raises(ValueError, match="needs subnormals off and bias <= 125"):
        Contract("loose", "bias up to 126", {"subnormals": 0, "bias": range(-256, 127)}, normalises_fp32_subnormals=False)
    with pytest.raises(ValueError, match="unknown contract 'tiny'; known: full, search, search_nosub"):
        Compressor(stages=1, contract="tiny")
    with pytest.raises(ValueError, match="fixed-format engine has no run-time contract"):
        Decompressor("se4m3b7", contract="search")
    from sieve_hw.generate import DesignError, elaborate

    with pytest.raises(DesignError, match="unknown contract 'tiny'"):
        elaborate("lanes1", contract="tiny")
    with pytest.raises(DesignError, match="no run-time contract"):
        elaborate("lanes1", "se4m3b7", contract="search")


def test_generate_writes_contract_designs_only_when_asked(tmp_path: Path, capsys):
    import json

    from sieve_hw.generate import main, top_name

    assert top_name("lanes8", contract="search") == "sieve_lanes8__search"
    assert top_name("compressor") == "sieve_compressor"
    assert main(["--out", str(tmp_path / "a"), "--design", "compressor_s1", "--contract", "search_nosub"]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert [(m["top"], m["contract"], m["fixed_format"]) for m in manifest] == [
        ("sieve_compressor_s1__search_nosub", "search_nosub", None)]  # no fixed variants with a contract
    assert main(["--out", str(tmp_path / "b"), "--design", "lanes1", "--contract", "tiny"]) == 2
    assert "unknown contract 'tiny'" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_pinning_shrinks_the_synthesised_engine(tmp_path: Path):
    from synth.contracts import contract_rows

    from synth.flow import FlowSettings

    rows = contract_rows(tmp_path, engines=("decompressor",), contracts=("full", "search_nosub"),
                         settings=FlowSettings(targets=("generic",)))
    by = {(r["stages"], r["contract"]): r["transistors"] for r in rows}
    assert set(by) == {(s, c) for s in Decompressor.CUTS for c in ("full", "search_nosub")}
    assert all(r["fmax_mhz"] is None and not r["errors"] for r in rows)  # generic only, nothing failed
    for s in Decompressor.CUTS:
        assert by[(s, "search_nosub")] < 0.9 * by[(s, "full")], by
