"""The synthesis flow and the throughput measurement on the real SIEVE engines (sieve_hw).

Fast: one small fixed-format engine through the generic target (proves the generator API
and the flow fit together) and a short throughput simulation.  Slow: both engines through
every target, configurable and fixed, with the report's checks.
"""

import pytest

from sieve.cfloat import Format

generate = pytest.importorskip("sieve_hw.generate", reason="the RTL package sieve_hw is not present")

from synth.flow import FlowSettings, Variant, hw_rtlil_writer, run_variant  # noqa: E402
from synth.run import main, plan_variants, synthesize  # noqa: E402
from synth.throughput import measure  # noqa: E402

E4M3 = Format.parse("e4m3")


def test_fixed_decompressor_generic(tmp_path):
    (rec,) = run_variant(Variant("decompressor", E4M3), hw_rtlil_writer("decompressor", E4M3), tmp_path,
                         FlowSettings(targets=("generic",)))
    assert rec["status"] == "ok", rec.get("error")
    assert rec["top"] == generate.top_name("decompressor", E4M3)
    assert rec["transistors_complete"]
    # a pipelined engine has registers, and every one of them is costed after dffunmap
    assert rec["ff_bits"] >= 8  # at least the 8-bit code of one pipeline stage
    assert rec["cmos_cells_by_type"]["$_DFF_P_"] == rec["ff_bits"]
    assert rec["transistors_registers"] >= 16 * rec["ff_bits"]


def test_throughput_is_one_value_per_cycle():
    got = measure(E4M3, n=64)
    for engine in ("compressor", "decompressor"):
        assert got[engine]["mismatches_vs_emulator"] == 0
        assert got[engine]["bubbles"] == 0 and got[engine]["values_per_cycle"] == 1.0
        assert got[engine]["first_output_cycle"] == generate.latency(engine)


def test_cli_rejects_unknown_design(capsys):
    assert main(["--designs", "nosuchdesign", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown design") and "nosuchdesign" in err


@pytest.mark.slow
def test_engines_every_target(tmp_path):
    jobs = [(v, hw_rtlil_writer(v.design, v.fixed_format))
            for v in plan_variants(["compressor", "decompressor"], [E4M3])]
    rep = synthesize(tmp_path, jobs, FlowSettings(), "pytest", throughput_runs=[measure(E4M3, n=200)])
    assert all(r["status"] == "ok" for r in rep["records"]), [r.get("error") for r in rep["records"]]
    by = {(r["design"], r["variant"], r["target"]): r for r in rep["records"]}
    for engine in ("compressor", "decompressor"):
        conf, fixed = by[(engine, "configurable", "generic")], by[(engine, "fixed-se4m3b7", "generic")]
        assert fixed["transistors"] < conf["transistors"]  # configurability costs something
        assert by[(engine, "configurable", "ice40-hx8k")]["fmax_mhz"] > 10
    assert len(rep["checks"]) == 6 and len(rep["configurability"]) == 2
    assert (tmp_path / "report.md").read_text().count("| compressor |") >= 2


def test_step_breakdown_decompressor(tmp_path):
    """Each datapath step synthesised alone: named like the RTL's steps, each a real circuit."""
    from synth.breakdown import breakdown

    rows = breakdown(tmp_path, "decompressor")
    assert [r["step"] for r in rows] == ["fields", "exponent", "assemble"]
    assert all(r["transistors"] > 300 and r["input_bits"] > 0 and r["output_bits"] > 0 for r in rows)
    assert rows[-1]["output_bits"] == 32  # the fp32 result


def test_default_designs_cover_every_depth():
    from synth.run import default_designs

    designs = default_designs()
    for engine, depths in generate.DEPTHS.items():
        default = generate.latency(engine)
        assert engine in designs
        assert {f"{engine}_s{n}" for n in depths if n != default} <= set(designs)
