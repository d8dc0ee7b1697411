"""The silicon flow (``synth.asic``): unit conversions, the parsers, and one small engine through
the whole flow (sky130 mapping, OpenSTA timing and power, gate-level simulation vs the emulator).

The flow tests need ``../shared/pdk/sky130`` (skipped with the reason when absent), Debian's
OpenSTA (``sta``) and Icarus (``make setup`` installs both).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from synth import asic_units as U
from synth.asic_data import bit_activity, port_activities
from synth.asic_map import LIBERTY_GZ, parse_stat
from synth.sta import fo4_netlist, parse_path
from tests.conftest import shared_path

PATH_REPORT = """Startpoint: i_data[10] (input port clocked by vclk)
Endpoint: o_data[29] (output port clocked by vclk)
Path Group: vclk
Path Type: max

    Delay      Time   Description
-------------------------------------------------------------
   0.0000    0.0000   clock vclk (rise edge)
   0.0000    0.0000   clock network delay (ideal)
   0.0000    0.0000 v input external delay
   0.0000    0.0000 v i_data[10] (in)
   0.3580    0.3580 ^ _1194_/Y (sky130_fd_sc_hd__nor4_2)
   0.2217    0.5797 v _1527_/Y (sky130_fd_sc_hd__nand4_1)
   0.0006    0.5803 v o_data[29] (out)
             0.5803   data arrival time

 100.0000  100.0000   clock vclk (rise edge)
   0.0000  100.0000   clock network delay (ideal)
   0.0000  100.0000   output external delay
           100.0000   data required time
-------------------------------------------------------------
           100.0000   data required time
            -0.5803   data arrival time
-------------------------------------------------------------
            99.4197   slack (MET)
"""


def test_area_and_delay_units():
    assert U.nand2_eq(3.7536) == pytest.approx(1.0)
    assert U.area_45nm_um2(3.7536 * 1000) == pytest.approx(798.0)
    assert U.fo4(0.5, 0.1) == pytest.approx(5.0)
    assert U.delay_45nm_ns(53.0) == pytest.approx(1.166)
    assert U.cycle_fo4(852) == pytest.approx(1e6 / 852 / 22, rel=1e-9)
    assert 53.0 < U.cycle_fo4() < 53.5  # the "1.17 ns ≈ 53 FO4"
    assert U.power_scale_to_45nm() == pytest.approx(45 / 130 / 1.8 ** 2)
    with pytest.raises(ValueError):
        U.fo4(1.0, 0.0)
    assert len(U.sources()) >= 5 and all(isinstance(s, str) for s in U.sources())


def test_critical_path_parser_reads_stages_arrival_and_slack():
    p = parse_path(PATH_REPORT)
    assert (p["startpoint"], p["endpoint"]) == ("i_data[10]", "o_data[29]")
    assert p["arrival_ns"] == pytest.approx(0.5803) and p["slack_ns"] == pytest.approx(99.4197)
    assert p["logic_levels"] == 2
    assert [s["cell"] for s in p["stages"]] == ["in", "sky130_fd_sc_hd__nor4_2", "sky130_fd_sc_hd__nand4_1", "out"]
    assert p["stages"][1]["delay_ns"] == pytest.approx(0.358)


def test_critical_path_parser_refuses_a_report_without_path():
    from sieve.errors import SieveError

    with pytest.raises(SieveError, match="no path"):
        parse_path("No paths found.\n")


def test_stat_parser_counts_area_and_flip_flops(tmp_path: Path):
    stat = {"design": {"area": 123.5, "sequential_area": 40.04, "num_cells_by_type": {
        "sky130_fd_sc_hd__dfxtp_1": 2, "sky130_fd_sc_hd__nand2_1": 3, "sky130_fd_sc_hd__mux2i_1": 1,
        "$scopeinfo": 1}}}
    (tmp_path / "s.json").write_text(json.dumps(stat))
    r = parse_stat(tmp_path / "s.json", tmp_path / "mapped.v")
    assert r["area_um2"] == 123.5 and r["sequential_area_um2"] == 40.04
    assert r["ff"] == 2 and r["cells"] == 6


def test_stat_parser_refuses_unmapped_cells(tmp_path: Path):
    from sieve.errors import SieveError

    (tmp_path / "s.json").write_text(json.dumps({"design": {"area": 1.0, "num_cells_by_type": {"$_AND_": 1}}}))
    with pytest.raises(SieveError, match="unmapped"):
        parse_stat(tmp_path / "s.json", tmp_path / "mapped.v")


def test_bit_activity_counts_toggles_and_duty():
    acts = bit_activity(np.array([0, 1, 0, 1, 2], np.uint64), width=3)
    assert acts[0] == pytest.approx((1.0, 0.4))
    assert acts[1] == pytest.approx((0.25, 0.2))
    assert acts[2] == (0.0, 0.0)
    a = port_activities(np.array([0, 1], np.uint64), k_word=0b10, k_width=2)
    assert a["k[1]"] == (0.0, 1.0) and a["k[0]"] == (0.0, 0.0) and a["i_valid"] == (0.0, 1.0)


def test_fo4_netlist_loads_each_stage_with_four_inverters():
    text = fo4_netlist(stages=5)
    for net in ("n1", "n2", "n3", "n4"):
        assert text.count(f".A({net})") == 4  # the next stage + three dummies


def _flow_tools(monkeypatch):
    pdk = shared_path("pdk", "sky130", LIBERTY_GZ).parent
    monkeypatch.setenv("SIEVE_SKY130", str(pdk))
    for tool in ("sta", "iverilog"):
        if not shutil.which(tool):
            pytest.skip(f"needs `{tool}` (run `make setup`)")


def test_fo4_of_sky130_is_measured(tmp_path: Path, monkeypatch):
    _flow_tools(monkeypatch)
    from synth.sta import fo4_ns

    r = fo4_ns(tmp_path)
    assert 0.05 < r["fo4_ns"] < 0.2  # sky130 hd, typical corner: ~0.1 ns
    assert r["x3_rise_ns"] != r["x3_fall_ns"]


def test_one_engine_through_the_whole_flow_and_gate_level_catches_a_changed_cell(tmp_path: Path, monkeypatch):
    """The search-contract combinational decompressor: mapped, timed, powered, and its netlist equal to
    the emulator on the family's sweep formats; one NAND2 turned into a NOR2 is caught."""
    _flow_tools(monkeypatch)
    from synth.asic import Job, run_job, units
    from synth.asic_gatelevel import check, family_formats

    rng = np.random.default_rng(0)
    streams = {"weights": rng.normal(0, 0.05, 256).astype(np.float32)}
    rec = run_job(Job("decompressor_s0", "search"), tmp_path, streams, fo4=0.1)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["latency"] == 0 and rec["ff"] == 0 and rec["cells"] > 100
    assert rec["nand2_eq"] == pytest.approx(rec["area_um2"] / 3.7536, abs=0.1)
    assert rec["delay_fo4"] == pytest.approx(rec["delay_ns"] / 0.1, abs=0.01)
    assert rec["timing"]["startpoint"].startswith("i_data") and rec["timing"]["endpoint"].startswith("o_data")
    assert 0 < rec["power"]["weights"]["own"]["total_w"] < rec["power"]["weights"]["k852"]["total_w"]
    g = rec["gate_level"]
    assert g["mismatches"] == 0 and g["vectors"] == g["outputs"] > 1000 and g["formats"] >= 10
    # no unit without the compressor and the calculator
    assert units([rec]) == []

    netlist = Path(rec["netlist"])
    text = netlist.read_text()
    assert "sky130_fd_sc_hd__nand2_1 " in text
    mutated = tmp_path / "mutated.v"
    mutated.write_text(text.replace("sky130_fd_sc_hd__nand2_1 ", "sky130_fd_sc_hd__nor2_1 ", 1))
    bad = check(mutated, rec["top"], "decompressor", family_formats("search", None), tmp_path / "mut", 0, True)
    assert bad["mismatches"] > 0


def test_power_moves_to_another_clock_by_its_rate_leakage_stays():
    from synth.sta import at_period

    r = at_period({"period_ns": 2.0, "internal_w": 1.0, "switching_w": 0.5, "leakage_w": 0.1, "total_w": 1.6}, 1.0)
    assert (r["internal_w"], r["switching_w"], r["leakage_w"]) == (2.0, 1.0, 0.1)
    assert r["total_w"] == pytest.approx(3.1)


def test_report_says_when_the_silicon_section_could_not_run():
    from synth import report

    meta = {"command": "x", "yosys": "y", "freq_mhz": 100, "seed": 1, "date": "d", "seconds": 1}
    md = report.markdown(report.build([], meta, asic={"error": "no sky130 Liberty at /nowhere"}))
    assert "## Silicon" in md and "Not run: no sky130 Liberty at /nowhere" in md
    assert md.index("## Silicon") < md.index("## Area and Fmax")  # the silicon section leads
