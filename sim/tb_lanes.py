"""cocotb testbench for the N-lane unit (``sieve_lanesN``): drives jobs, records what came out.

The job (an ``.npz`` named by ``SIEVE_SIM_JOB``) is a list of *segments*; each segment loads
one format record and streams fp32 values through the compressors and codes through the
decompressors, spread round-robin over the lanes, with per-cycle probabilities of
``i_valid`` and ``o_ready`` (1.0 = full rate).  Optional events: ``reset_at`` (assert reset
for two cycles after that many accepted values), ``cfg_early`` (raise ``cfg_valid`` for the
next segment as soon as this one's inputs are all accepted, while values are in flight).
``cfg_latency`` is the documented format-change latency L: counting the acceptance cycle as
0, cycles 1..L-1 must keep ``cfg_ready``, every ``i_ready`` and ``o_valid`` low and
``cfg_error`` at its old value; in cycle L ``cfg_error`` must be the new record's flag and,
for a legal record, every lane's ``i_ready`` high (the exact cycle the streams reopen).

Comparison with the golden model happens in pytest (``sim/test_engines.py``); this file
only checks the protocol invariants the emulator cannot see and records every transfer:
for each side and lane the accepted inputs and the outputs in order, tagged with segment.
Results go to ``SIEVE_SIM_OUT`` (``.npz``).
"""

from __future__ import annotations

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

SIDES = ("c", "d")


def _pack(values: list[int]) -> int:
    out = 0
    for j, v in enumerate(values):
        out |= (int(v) & 0xFFFFFFFF) << (32 * j)
    return out


class Stream:
    """One side of one lane: pending inputs, accepted inputs, outputs (with segment tags)."""

    def __init__(self):
        self.pending: list[int] = []
        self.accepted: list[tuple[int, int]] = []  # (segment, value), in acceptance order
        self.outputs: list[int] = []
        self.lost: list[tuple[int, int]] = []  # in flight when reset hit: legitimately gone

    @property
    def in_flight(self) -> int:
        return len(self.accepted) - len(self.outputs)


@cocotb.test()
async def run_job(dut):
    job = np.load(os.environ["SIEVE_SIM_JOB"], allow_pickle=False)
    lanes = len(dut.c_i_valid.value)
    full = (1 << lanes) - 1
    rng = random.Random(int(job["seed"]))
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    for side in SIDES:
        getattr(dut, f"{side}_i_valid").value = 0
        getattr(dut, f"{side}_o_ready").value = 0
        getattr(dut, f"{side}_i_data").value = 0
    dut.cfg_valid.value = 0
    dut.cfg.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    await ReadOnly()
    assert int(dut.cfg_error.value) == 1, "after reset the unit must be unconfigured (cfg_error=1)"
    await FallingEdge(dut.clk)

    streams = {s: [Stream() for _ in range(lanes)] for s in SIDES}
    n_seg = len(job["records"])
    cfg_wait = [0] * n_seg
    cycles = 0
    seg = 0
    cfg_pending = True
    check_error = False
    closed_cycles = 0
    cfg_latency = int(job["cfg_latency"])
    configuring = 0  # cycles left in the format-change window (after the acceptance cycle)
    err_before = 1
    did_reset = [False] * n_seg
    accepted_in_seg = 0

    def load(seg_index: int) -> None:
        for side in SIDES:
            vals = job[f"{side}_{seg_index}"]
            for j in range(lanes):
                streams[side][j].pending = [int(v) for v in vals[j::lanes]]

    load(0)
    while True:
        p_valid = float(job["p_valid"][seg])
        p_ready = float(job["p_ready"][seg])
        if cfg_pending:
            dut.cfg.value = int(job["records"][seg])
            dut.cfg_valid.value = 1
        else:
            dut.cfg_valid.value = 0
        offered = {}
        for side in SIDES:
            iv, orr, data = 0, 0, []
            for j, st in enumerate(streams[side]):
                if st.pending and (p_valid >= 1.0 or rng.random() < p_valid):
                    iv |= 1 << j
                data.append(st.pending[0] if st.pending else 0)
                if p_ready >= 1.0 or rng.random() < p_ready:
                    orr |= 1 << j
            getattr(dut, f"{side}_i_valid").value = iv
            getattr(dut, f"{side}_i_data").value = _pack(data)
            getattr(dut, f"{side}_o_ready").value = orr
            offered[side] = (iv, orr)
        await ReadOnly()
        if configuring:
            assert int(dut.cfg_ready.value) == 0, f"segment {seg}: cfg_ready high while the constants are computed"
            assert int(dut.cfg_error.value) == err_before, f"segment {seg}: cfg_error changed before cycle {cfg_latency}"
        if check_error:
            check_error = False
            err = int(dut.cfg_error.value)
            assert err == int(job["errors"][seg]), f"segment {seg}: cfg_error={err}, expected {int(job['errors'][seg])}"
            if err:
                closed_cycles = 8
            else:
                for side in SIDES:
                    ir = int(getattr(dut, f"{side}_i_ready").value)
                    assert ir == full, f"segment {seg}: {side} streams not open {cfg_latency} cycles after the format change"
        cfg_taken = cfg_pending and bool(int(dut.cfg_ready.value))
        if cfg_taken:
            err_before = int(dut.cfg_error.value)
        if cfg_pending and not cfg_taken:
            cfg_wait[seg] += 1
        for side in SIDES:
            iv, orr = offered[side]
            ir = int(getattr(dut, f"{side}_i_ready").value)
            ov = int(getattr(dut, f"{side}_o_valid").value)
            od = int(getattr(dut, f"{side}_o_data").value) if ov else 0
            if cfg_pending or closed_cycles or configuring:
                assert ir == 0, f"{side}: input accepted while a format change is pending or the format is illegal"
            if closed_cycles or configuring:
                assert ov == 0, f"{side}: output while the format is illegal or changing"
            for j, st in enumerate(streams[side]):
                if (iv >> j) & 1 and (ir >> j) & 1:
                    st.accepted.append((seg, st.pending.pop(0)))
                    accepted_in_seg += 1
                if (ov >> j) & 1:
                    assert st.in_flight > 0, f"{side} lane {j}: output with nothing in flight (duplicate?)"
                    if (orr >> j) & 1:
                        st.outputs.append((od >> (32 * j)) & 0xFFFFFFFF)
        cycles += 1
        assert cycles < 20_000_000, "testbench runaway"
        await FallingEdge(dut.clk)

        if cfg_taken:
            cfg_pending = False
            configuring = cfg_latency - 1
            check_error = configuring == 0
            accepted_in_seg = 0
            continue
        if configuring:
            configuring -= 1
            check_error = configuring == 0
            continue
        if closed_cycles:
            closed_cycles -= 1
            if closed_cycles == 0:  # illegal segment done: nothing may have been accepted
                for side in SIDES:
                    for st in streams[side]:
                        st.pending = []
            continue
        reset_at = int(job["reset_at"][seg])
        if not cfg_pending and reset_at >= 0 and not did_reset[seg] and accepted_in_seg >= reset_at:
            did_reset[seg] = True
            for side in SIDES:
                getattr(dut, f"{side}_i_valid").value = 0
            dut.rst.value = 1
            await RisingEdge(dut.clk)
            await RisingEdge(dut.clk)
            await FallingEdge(dut.clk)
            dut.rst.value = 0
            for side in SIDES:
                for st in streams[side]:
                    n = st.in_flight
                    if n:
                        st.lost.extend(st.accepted[-n:])
                        del st.accepted[-n:]
            await ReadOnly()
            assert int(dut.cfg_error.value) == 1, "reset must return the unit to unconfigured"
            for side in SIDES:
                assert int(getattr(dut, f"{side}_o_valid").value) == 0, "reset must empty the pipelines"
            await FallingEdge(dut.clk)
            cfg_pending = True  # reload the same format and carry on with the rest
            continue
        remaining = any(st.pending for side in SIDES for st in streams[side])
        flying = any(st.in_flight for side in SIDES for st in streams[side])
        if cfg_pending or remaining:
            continue
        if seg + 1 < n_seg and (bool(job["cfg_early"][seg]) or not flying):
            seg += 1
            cfg_pending = True
            load(seg)
            continue
        if not flying:
            break

    result = {"cycles": np.array(cycles), "cfg_wait": np.array(cfg_wait)}
    for side in SIDES:
        for j, st in enumerate(streams[side]):
            assert st.in_flight == 0, f"{side} lane {j}: {st.in_flight} values never came out"
            result[f"{side}_{j}_seg"] = np.array([s for s, _ in st.accepted], dtype=np.int64)
            result[f"{side}_{j}_in"] = np.array([v for _, v in st.accepted], dtype=np.uint64)
            result[f"{side}_{j}_out"] = np.array(st.outputs, dtype=np.uint64)
            result[f"{side}_{j}_lost"] = np.array(len(st.lost))
    np.savez(os.environ["SIEVE_SIM_OUT"], **result)
