"""Gate-level check of the silicon flow's engines: each sky130-mapped netlist (``synth.asic``),
simulated with Icarus and the cells' Verilog models, equals the emulator on the RTL sweep's
formats of its family (corners, random fp32, every code up to 12 bits).

The combinational engines of the ``full`` contract (every legal format the sweep holds) run in
``make test``; the other contracts, the fixed formats and the pipelined engines are ``slow``
(``make synth`` checks every one of them anyway, in its silicon section).  Needs
``../shared/pdk/sky130`` (skipped with the reason when absent), Debian's ``opensta`` and Icarus.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from synth.asic import FIXED, Job, plan, run_job
from synth.asic_map import LIBERTY_GZ
from tests.conftest import shared_path

FAST = {Job("compressor_s0", "full"), Job("decompressor_s0", "full")}
ENGINE_JOBS = [j for j in plan(fixed=FIXED) if j.engine in ("compressor", "decompressor")]


@pytest.mark.parametrize("job", [pytest.param(j, id=j.slug, marks=() if j in FAST else pytest.mark.slow)
                                 for j in ENGINE_JOBS])
def test_mapped_engine_equals_the_emulator(job: Job, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SIEVE_SKY130", str(shared_path("pdk", "sky130", LIBERTY_GZ).parent))
    for tool in ("sta", "iverilog"):
        if not shutil.which(tool):
            pytest.skip(f"needs `{tool}` (run `make setup`)")
    rec = run_job(job, tmp_path, None, fo4=0.1)
    assert rec["status"] == "ok", rec.get("error")
    g = rec["gate_level"]
    assert g["mismatches"] == 0, g["first"]
    assert g["outputs"] == g["vectors"] > 0
