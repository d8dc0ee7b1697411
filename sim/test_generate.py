"""Generation API: designs, top names, files, clear errors for illegal parameters, and the
fixed-format engines (simulated with Amaranth's own simulator against the emulator)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from amaranth.sim import Simulator

import sieve
from sieve_hw import generate
from sieve_hw.compressor import Compressor
from sieve_hw.constants import ConstCalc
from sieve_hw.decompressor import Decompressor
from sieve_hw.generate import DesignError, elaborate, top_name, write_rtlil, write_verilog

from .golden import corner_values, expected_decode, expected_encode, fp32_subnormals, random_values


def test_designs_and_top_names(tmp_path):
    assert generate.DESIGNS == ["constcalc", "compressor", "decompressor", "lanes1", "lanes8", "lanes32"]
    assert top_name("compressor") == "sieve_compressor"
    assert top_name("lanes8", "e4m3") == "sieve_lanes8__se4m3b7"
    assert top_name("compressor", "ue3m2b-2+rtz") == "sieve_compressor__ue3m2bn2_rtz"
    v = write_verilog("decompressor", tmp_path)
    il = write_rtlil("compressor", tmp_path, "float8_e5m2")
    assert v.name == "sieve_decompressor.v" and "module sieve_decompressor(" in v.read_text()
    assert il.name == "sieve_compressor__se5m2b15_sub_ieee_ovinf.il"
    assert "module \\sieve_compressor__se5m2b15_sub_ieee_ovinf" in il.read_text()
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.parametrize("design, fixed, message", [
    ("lanes0", None, "at least 1 lane"),
    ("lanes", None, "lane count must be a number"),
    ("lanes999", None, "lanes must be an integer 1..256"),
    ("multiplier", None, "unknown design 'multiplier'"),
    ("constcalc", "e4m3", "no fixed-format variant"),
    ("compressor", "e9m3", "exp_bits must be 1..8"),
    ("compressor", 42, "fixed_format must be"),
    ("compressor_s9", None, r"compressor stages must be one of \[0, 1, 2, 3, 4\], got 9"),
    ("decompressor_s4", None, "decompressor stages must be one of"),
    ("lanes8_s5", None, "stages must be one of"),
    ("constcalc_s2", None, "only engines and lane units have a pipeline depth"),
])
def test_illegal_parameters_fail_clearly(design, fixed, message):
    with pytest.raises(DesignError, match=message):
        elaborate(design, fixed)


def test_depth_names_and_latency():
    """``_s<N>`` picks the depth; latency = depth; the bare name is each engine's default."""
    assert generate.split_design("lanes8_s3") == ("lanes8", 3)
    assert generate.split_design("compressor") == ("compressor", None)
    assert top_name("compressor_s1") == "sieve_compressor_s1"
    assert generate.latency("compressor") == Compressor.DEFAULT_STAGES
    assert generate.latency("decompressor_s3") == 3
    assert generate.latency("lanes8_s1") == {"compressor": 1, "decompressor": 1}
    assert generate.latency("lanes1") == {"compressor": Compressor.DEFAULT_STAGES,
                                          "decompressor": Decompressor.DEFAULT_STAGES}
    assert generate.latency("constcalc") == ConstCalc.LATENCY == 6
    assert generate.DEPTHS == {"compressor": [1, 2, 3, 4], "decompressor": [1, 2, 3]}
    # depth 0: the combinational engines (not in DEPTHS, so the FPGA depth sweeps leave them out)
    assert generate.latency("compressor_s0") == 0
    assert generate.latency("lanes8_s0") == {"compressor": 0, "decompressor": 0}
    assert generate.latency("constcalc_mc") == ConstCalc.LATENCY


@pytest.mark.parametrize("engine, stages", [(Compressor, s) for s in (1, 2, 3)] + [(Decompressor, s) for s in (1, 3)])
def test_every_depth_full_rate_with_fixed_format(engine, stages):
    """Amaranth simulation: first output after ``latency`` clocks, then one per clock, all correct."""
    fmt = sieve.Format.parse("se5m2b15+sub+ieee+ovinf")
    rng = np.random.default_rng(stages)
    if engine is Compressor:
        x = np.concatenate([corner_values(fmt, rng, ties=8), random_values(fmt, rng, 32)]).astype(np.float32)
        inputs, want = x.view(np.uint32), expected_encode(x, fmt)
    else:
        inputs = rng.integers(0, 256, 120, dtype=np.uint64)
        want = expected_decode(inputs, fmt)
    dut = engine(fmt, stages)
    assert dut.latency == stages
    got = _stream(dut, inputs, tail=stages + 1)
    assert np.array_equal(np.array(got, np.uint64), want)


def test_cli_reports_bad_design_with_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "sieve_hw.generate", "--out", str(tmp_path), "--design", "lanes0"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and "lane" in run.stderr
    assert not list(tmp_path.iterdir())


def _stream(engine, inputs: np.ndarray, tail: int | None = None) -> list[int]:
    """Push values through an engine at full rate with Amaranth's simulator; collect outputs
    (and check there are no bubbles: the i-th output comes ``latency`` clocks after the i-th input)."""
    outs: list[int] = []

    async def bench(ctx):
        ctx.set(engine.o_ready, 1)
        for cycle, x in enumerate(list(inputs) + [None] * (engine.latency + 1 if tail is None else tail)):
            ctx.set(engine.i_valid, x is not None)
            ctx.set(engine.i_data, 0 if x is None else int(x))
            await ctx.tick()
            if ctx.get(engine.o_valid):
                assert cycle + 1 - engine.latency == len(outs), "a bubble or a late first output"
                outs.append(ctx.get(engine.o_data))

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outs


@pytest.mark.parametrize("text", ["se4m3b7", "float8_e5m2", "ue3m4b5+rtz", "se8m7b128+fn+ovnan"])
def test_fixed_format_engines_match_emulator(text):
    fmt = sieve.Format.parse(text)
    rng = np.random.default_rng(2)
    x = np.concatenate([corner_values(fmt, rng, ties=16), random_values(fmt, rng, 64)]).astype(np.float32)
    got = _stream(Compressor(fmt), x.view(np.uint32))
    assert np.array_equal(np.array(got, np.uint64), expected_encode(x, fmt))
    codes = rng.integers(0, 1 << fmt.width, 200, dtype=np.uint64)
    junk = (rng.integers(0, 1 << 32, 200, dtype=np.uint64) << np.uint64(fmt.width)) & np.uint64(0xFFFFFFFF)
    got = _stream(Decompressor(fmt), codes | junk)  # bits above the width are ignored
    assert np.array_equal(np.array(got, np.uint64), expected_decode(codes, fmt))


@pytest.mark.parametrize("text, stages", [("se4m3b7", 1), ("se4m3b7", 4), ("ue3m4b5+rtz", 2), ("se7m2b125+ieee", 3)])
def test_fixed_compressor_without_normalising_shift(text, stages):
    """A baked-in format whose fp32 subnormals all give zero codes (no subnormals, bias <= 125)
    gets the compressor without leading-zero count (``unnormalised``); it still equals the
    emulator, fp32 subnormals of both signs included."""
    from sieve_hw.compressor import unnormalised

    fmt = sieve.Format.parse(text)
    assert unnormalised in Compressor.steps_for(stages, fixed_format=fmt)
    assert unnormalised not in Compressor.steps_for(stages, fixed_format=sieve.Format.parse("se7m2b126"))
    rng = np.random.default_rng(stages)
    x = np.concatenate([corner_values(fmt, rng, ties=8), random_values(fmt, rng, 32), fp32_subnormals(rng, 300),
                        np.array([0x00800000, 0x80800000, 0x007FFFFF, 0x807FFFFF], np.uint32).view(np.float32)])
    got = _stream(Compressor(fmt, stages), x.astype(np.float32).view(np.uint32))
    assert np.array_equal(np.array(got, np.uint64), expected_encode(x.astype(np.float32), fmt))
