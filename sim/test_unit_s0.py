"""The SIEVE unit as the dissertation built it: combinational engines (depth 0) sharing the
multicycle constant calculator (``Lanes(n, stages=0, calculator="multicycle")``), run in
Amaranth's simulator against the emulator.

Values stream on both sides with random valid / ready stalls; the format changes between
segments (the unit must keep the streams closed while the calculator is busy and reopen them
``cfg_latency`` cycles after the load); one illegal record keeps the streams closed.  Every value that comes out must equal ``sieve.encode`` /
``sieve.decode`` for the format it went in under, in order, nothing lost.  The silicon flow's
unit figures (``synth.asic``) are for exactly this structure.
"""

from __future__ import annotations

import numpy as np
import pytest

import sieve
from sieve_hw.config import pack_fields, pack_format
from sieve_hw.lanes import Lanes

from .golden import corner_values, decode_codes, expected_decode, expected_encode, random_values

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LANES = 2
FORMATS = ("se4m3b7", "ue3m4b5", "e5m2", "se3m2b2")  # all in the `search` family


def _run(dut: Lanes, segments: list[dict], seed: int) -> list[dict]:
    """Drive ``segments`` (record, inputs per side) through ``dut``; return what came out per segment."""
    from amaranth.sim import Simulator

    rng = np.random.default_rng(seed)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results = [{"c": [], "d": [], "closed_ok": True} for _ in segments]

    async def bench(ctx):
        for si, seg in enumerate(segments):
            ctx.set(dut.cfg.as_value(), seg["record"])
            ctx.set(dut.cfg_valid, 1)
            for _ in range(64):  # wait until the unit takes the record
                if ctx.get(dut.cfg_ready):
                    break
                await ctx.tick()
            await ctx.tick()
            ctx.set(dut.cfg_valid, 0)
            busy_cycles = 0
            while not ctx.get(dut.cfg_ready):  # calculator busy: the streams must stay closed
                if ctx.get(dut.c_i_ready) or ctx.get(dut.d_i_ready):
                    results[si]["closed_ok"] = False
                busy_cycles += 1
                await ctx.tick()
            results[si]["busy_cycles"] = busy_cycles
            if seg["error"]:
                results[si]["cfg_error"] = ctx.get(dut.cfg_error)
                for _ in range(8):
                    if ctx.get(dut.c_i_ready) or ctx.get(dut.d_i_ready):
                        results[si]["closed_ok"] = False
                    await ctx.tick()
                continue
            sent = {s: [0] * LANES for s in "cd"}
            feed = {"c": seg["c"], "d": seg["d"]}
            per_lane = {s: np.array_split(feed[s], LANES) for s in "cd"}
            for _ in range(50 * (len(seg["c"]) + len(seg["d"]))):
                if all(sent[s][j] >= len(per_lane[s][j]) for s in "cd" for j in range(LANES)):
                    break
                take = {}
                for s in "cd":
                    valid = ready = 0
                    for j in range(LANES):
                        more = sent[s][j] < len(per_lane[s][j])
                        if more and rng.random() < 0.8:
                            valid |= 1 << j
                            ctx.set(getattr(dut, f"{s}_i_data")[32 * j:32 * j + 32], int(per_lane[s][j][sent[s][j]]))
                        if rng.random() < 0.8:
                            ready |= 1 << j
                    ctx.set(getattr(dut, f"{s}_i_valid"), valid)
                    ctx.set(getattr(dut, f"{s}_o_ready"), ready)
                for s in "cd":
                    acc = ctx.get(getattr(dut, f"{s}_i_valid")) & ctx.get(getattr(dut, f"{s}_i_ready"))
                    ov = ctx.get(getattr(dut, f"{s}_o_valid")) & ctx.get(getattr(dut, f"{s}_o_ready"))
                    data = ctx.get(getattr(dut, f"{s}_o_data"))
                    for j in range(LANES):
                        if ov >> j & 1:
                            results[si][s].append((j, (data >> (32 * j)) & 0xFFFFFFFF))
                    take[s] = acc
                await ctx.tick()
                for s in "cd":
                    for j in range(LANES):
                        sent[s][j] += take[s] >> j & 1
            for s in "cd":
                ctx.set(getattr(dut, f"{s}_i_valid"), 0)
            results[si]["lanes_inputs"] = per_lane

    sim.add_testbench(bench)
    sim.run()
    return results


def test_combinational_unit_with_multicycle_calculator_equals_the_emulator():
    rng = np.random.default_rng(4)
    segments = []
    for text in FORMATS:
        fmt = sieve.Format.parse(text)
        c = np.concatenate([corner_values(fmt, rng), random_values(fmt, rng, 100)]).astype(np.float32)
        d = decode_codes(fmt, rng, limit_bits=8)
        segments.append({"fmt": fmt, "record": pack_format(fmt), "error": False,
                         "c": c.view(np.uint32).astype(np.uint64), "d": d.astype(np.uint64)})
        if text == FORMATS[1]:  # an illegal record (overflow code 3) between two legal ones
            segments.append({"fmt": None, "record": pack_fields({"exp_bits": 4, "man_bits": 3, "bias": 7, "signed": 1,
                                                                  "rounding": 0, "subnormals": 0, "overflow": 3,
                                                                  "specials": 0}), "error": True})
    dut = Lanes(LANES, stages=0, contract="search", calculator="multicycle")
    results = _run(dut, segments, seed=5)
    for seg, res in zip(segments, results):
        assert res["closed_ok"], f"{seg['fmt']}: a stream was open while the calculator was busy or in error"
        assert res["busy_cycles"] == dut.cfg_latency - 1
        if seg["error"]:
            assert res["cfg_error"] == 1
            continue
        fmt = seg["fmt"]
        for s, expect in (("c", lambda v: expected_encode(v.astype(np.uint32).view(np.float32), fmt)),
                          ("d", lambda v: expected_decode(v, fmt))):
            for j in range(LANES):
                got = np.array([v for lane, v in res[s] if lane == j], np.uint64)
                want = np.asarray(expect(res["lanes_inputs"][s][j]), np.uint64)
                assert got.shape == want.shape, f"{fmt} {s} lane {j}: {got.size} outputs for {want.size} inputs"
                assert np.array_equal(got, want), f"{fmt} {s} lane {j}: first mismatch at {np.nonzero(got != want)[0][0]}"


def test_lane_unit_refuses_an_unknown_calculator():
    with pytest.raises(ValueError, match="calculator"):
        Lanes(1, calculator="fast")
