"""The RTL constant calculator equals ``sieve.engine_constants`` for every legal Format.

The generated ``sieve_constcalc`` Verilog runs on Icarus with a small Verilog testbench that
reads format records from a hex file, loads each (``load``), and writes the constant bus and
``error`` seen exactly :attr:`ConstCalc.LATENCY` cycles after the load; it also checks the
handshake every time (``busy`` high in cycles 1..LATENCY-1 and low at LATENCY, ``k``/``error``
unchanged until then, the ``fmt`` input scrambled after the load).  Consecutive records
differ, so a stage that settled late would show up as a mismatch.  (No cocotb: a plain
Verilog testbench is ~50x faster for a million records.)

* default: every legal (exp_bits 1..8) x (man_bits 0..23) x signed x specials x overflow
  combination at its two lowest and two highest legal biases and the default one, the
  rounding x subnormals pairs rotating over them (~13 k formats);
* slow: every legal Format (~2 M records; ~12 min on Icarus with the ranked calculator, measured 2026-11-30);
* illegal records (random raw fields) raise ``error`` exactly when ``sieve.Format`` refuses them.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import sieve
from sieve.cfloat import OVERFLOWS, ROUNDINGS, SPECIALS, FormatError
from sieve_hw.config import FORMAT_LAYOUT, pack_format
from sieve_hw.constants import CONST_LAYOUT, DISSERTATION_FIELDS, ConstCalc
from sieve_hw.generate import MULTICYCLE_CALC, top_name, write_verilog

from .golden import legal_biases
from .harness import SIM_BUILD, _worker

TB = """`timescale 1ns/1ps
module tb;
  reg clk = 0, rst = 1, load = 0;
  reg [24:0] fmt = 0;
  wire [{kw}:0] k;
  wire err, busy;
  reg [{kw}:0] k_old;
  reg err_old;
  {top} dut(.clk(clk), .rst(rst), .fmt(fmt), .load(load), .busy(busy), .k(k), .error(err));
  always #5 clk = ~clk;
  reg [24:0] mem [0:{n1}];
  integer i, c, fd, bad;
  initial begin
    $readmemh("records.hex", mem);
    fd = $fopen("out.txt", "w");
    bad = 0;
    @(negedge clk); @(negedge clk);
    rst = 0;
    #1 if (err !== 1'b1 || busy !== 1'b0) bad = bad + 1;  // after reset: unconfigured, idle
    for (i = 0; i <= {n1}; i = i + 1) begin
      @(negedge clk);
      fmt = mem[i]; load = 1; k_old = k; err_old = err;  // cycle 0: the load is taken
      @(negedge clk);
      load = 0; fmt = ~mem[i];  // latched: the input may change freely now
      for (c = 1; c < {lat}; c = c + 1) begin  // cycles 1..LATENCY-1: busy, old outputs held
        if (busy !== 1'b1 || ({hold_k} && k !== k_old) || err !== err_old) bad = bad + 1;
        @(negedge clk);
      end
      if (busy !== 1'b0) bad = bad + 1;  // cycle LATENCY: idle, new constants
      $fwrite(fd, "%h %h\\n", k, err);
    end
    $fwrite(fd, "bad %0d\\n", bad);
    $fclose(fd);
    $finish;
  end
endmodule
"""


def run_constcalc(records: list[int], name: str, design: str = "constcalc") -> tuple[list[int], list[int]]:
    """Evaluate the generated calculator on raw records; return (k bus values, error bits).

    ``design`` ``constcalc_mc`` is the multicycle calculator: its ``k`` may change while busy
    (only ``error`` must hold), and is read, like the registered one's, at cycle LATENCY."""
    d = SIM_BUILD / f"{design}-{_worker()}" / name
    d.mkdir(parents=True, exist_ok=True)
    v = write_verilog(design, d)
    (d / "records.hex").write_text("".join(f"{r:07x}\n" for r in records))
    (d / "tb.v").write_text(TB.format(kw=CONST_LAYOUT.size - 1, n1=len(records) - 1, lat=ConstCalc.LATENCY,
                                      top=top_name(design), hold_k=int(design == "constcalc")))
    subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "tb.v", v.name], cwd=d, check=True)
    subprocess.run(["vvp", "-n", "tb.vvp"], cwd=d, check=True, stdout=subprocess.DEVNULL)
    ks, errs = [], []
    lines = (d / "out.txt").read_text().splitlines()
    assert lines and lines[-1].startswith("bad "), "testbench did not finish"
    last = lines.pop()
    assert last == "bad 0", f"load/busy handshake violated ({last} checks): busy timing, or k/error changed before LATENCY"
    for line in lines:
        a, b = line.split()
        ks.append(int(a, 16))
        errs.append(int(b, 16))
    assert len(ks) == len(records)
    return ks, errs


def field(k: int, name: str) -> int:
    f = CONST_LAYOUT[name]
    raw = (k >> f.offset) & ((1 << f.shape.width) - 1)
    if f.shape.signed and raw >> (f.shape.width - 1):
        raw -= 1 << f.shape.width
    return raw


def _combos():
    for e in range(1, 9):
        for m in range(24):
            for sg in (True, False):
                for sp in SPECIALS:
                    for ov in OVERFLOWS:
                        biases = legal_biases(e, m, sg, sp, ov)
                        if biases:
                            yield e, m, sg, sp, ov, biases


def sampled_formats(seed: int = 0) -> list[sieve.Format]:
    """Every legal (E, M, signed, specials, overflow) combination at its lowest, second-lowest,
    highest and second-highest legal bias (plus the default bias when legal), the four
    (rounding, subnormals) pairs rotating over those biases so each combination sees all four."""
    rng = np.random.default_rng(seed)
    pairs = [(r, s) for r in ROUNDINGS for s in (False, True)]
    out = []
    for i, (e, m, sg, sp, ov, biases) in enumerate(_combos()):
        picks = [biases[0], biases[-1], biases[min(1, len(biases) - 1)], biases[max(len(biases) - 2, 0)]]
        default = (1 << (e - 1)) - 1
        picks.append(default if default in biases else int(rng.choice(biases)))
        for j, b in enumerate(picks):
            rnd, sub = pairs[(i + j) % 4]
            out.append(sieve.Format(e, m, b, signed=sg, rounding=rnd, subnormals=sub, overflow=ov, specials=sp))
    return list(dict.fromkeys(out))


def all_formats() -> list[sieve.Format]:
    return [sieve.Format(e, m, b, signed=sg, rounding=rnd, subnormals=sub, overflow=ov, specials=sp)
            for e, m, sg, sp, ov, biases in _combos() for b in biases
            for rnd in ROUNDINGS for sub in (False, True)]


def _check(fmts: list[sieve.Format], name: str) -> None:
    ks, errs = run_constcalc([pack_format(f) for f in fmts], name)
    bad = []
    for f, k, err in zip(fmts, ks, errs):
        if err:
            bad.append(f"{f}: error flag raised for a legal format")
            continue
        c = sieve.engine_constants(f)
        for fld in DISSERTATION_FIELDS:
            if field(k, fld) != getattr(c, fld):
                bad.append(f"{f}: {fld} RTL {field(k, fld)} != sieve {getattr(c, fld)}")
        if len(bad) > 20:
            break
    assert not bad, "\n".join(bad)


def test_constcalc_sampled_legal_formats():
    fmts = sampled_formats()
    assert len(fmts) > 10_000
    assert {f.exp_bits for f in fmts} == set(range(1, 9)) and {f.man_bits for f in fmts} == set(range(24))
    _check(fmts, "sampled")


@pytest.mark.slow
def test_constcalc_every_legal_format():
    fmts = all_formats()
    assert len(fmts) > 1_900_000
    _check(fmts, "all")


def test_constcalc_error_flag_matches_validation():
    """Random raw records (most illegal): error == the Format constructor refuses them."""
    rng = np.random.default_rng(9)
    records, expect = [], []
    for _ in range(5_000):
        raw = int(rng.integers(0, 1 << FORMAT_LAYOUT.size))
        fields = {}
        for name, fl in FORMAT_LAYOUT:
            val = (raw >> fl.offset) & ((1 << fl.shape.width) - 1)
            if fl.shape.signed and val >> (fl.shape.width - 1):
                val -= 1 << fl.shape.width
            fields[name] = val
        # steer half of the records close to legality so both outcomes are frequent
        if rng.random() < 0.5:
            fields["exp_bits"] = int(rng.integers(1, 9))
            fields["man_bits"] = int(rng.integers(0, 24))
            fields["bias"] = int(rng.integers(-30, 160))
        try:
            if fields["overflow"] > 2:
                raise FormatError("overflow code 3")
            sieve.Format(fields["exp_bits"], fields["man_bits"], fields["bias"], signed=bool(fields["signed"]),
                         rounding=ROUNDINGS[fields["rounding"]], subnormals=bool(fields["subnormals"]),
                         overflow=OVERFLOWS[fields["overflow"]], specials=SPECIALS[fields["specials"]])
            ok = 1
        except FormatError:
            ok = 0
        packed = 0
        for name, fl in FORMAT_LAYOUT:
            packed |= (fields[name] & ((1 << fl.shape.width) - 1)) << fl.offset
        records.append(packed)
        expect.append(1 - ok)
    _, errs = run_constcalc(records, "illegal")
    assert 0.2 < sum(expect) / len(expect) < 0.95
    wrong = [i for i, (a, b) in enumerate(zip(errs, expect)) if a != b]
    assert not wrong, f"{len(wrong)} records with a wrong error flag, e.g. record 0x{records[wrong[0]]:07x}"


def _random_records(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(r) for r in rng.integers(0, 1 << FORMAT_LAYOUT.size, n)]


def test_multicycle_calculator_gives_the_registered_calculators_constants():
    """``constcalc_mc`` (record register only, the constants combinational and read LATENCY cycles
    after the load) equals the registered calculator bit for bit on every constant and on ``error``,
    for a third of the sampled legal formats and random raw records; ``error`` holds while busy."""
    records = [pack_format(f) for f in sampled_formats()[::3]] + _random_records(1_000, 3)
    assert run_constcalc(records, "mc", design=MULTICYCLE_CALC) == run_constcalc(records, "mc_ref")
