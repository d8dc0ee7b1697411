"""Synthesis flow for the SIEVE engines: Yosys and nextpnr figures, one record per design x target.

The flow takes RTLIL from :mod:`sieve_hw.generate` (or any Amaranth design, for tests),
runs Yosys for generic cells, a CMOS transistor estimate (flip-flops included) and the
iCE40 / ECP5 / Xilinx 7-series mappings, places and routes the iCE40 netlist with nextpnr
inside a small I/O harness for Fmax, and writes ``report.json`` and ``report.md``.

Modules, one job each:

* :mod:`synth.tools`    find and run Yosys / nextpnr (YoWASP first, Debian's binaries next)
* :mod:`synth.yosys`    Yosys scripts per target and parsing of ``stat -json``
* :mod:`synth.harness`  port probe and the shift-register harness used for place and route
* :mod:`synth.nextpnr`  iCE40 place and route, Fmax and critical path from ``--report`` JSON
* :mod:`synth.flow`     one design variant through every target -> records
* :mod:`synth.report`   records -> ``report.json`` / ``report.md``, target checks
* :mod:`synth.run`      the command line (``python -m synth.run``)
* :mod:`synth.asic`     the silicon section: sky130 cells + OpenSTA, the SIEVE unit vs the dissertation
  (:mod:`synth.asic_map` Yosys onto sky130, :mod:`synth.sta` OpenSTA timing / FO4 / power,
  :mod:`synth.asic_units` unit conversions and their sources, :mod:`synth.asic_data` real-data
  switching activity, :mod:`synth.asic_gatelevel` gate-level simulation vs the emulator)
"""

from __future__ import annotations

__all__ = ["TARGETS"]

#: Every target the flow knows, in report order.
TARGETS = ("generic", "ice40-hx8k", "ice40-up5k", "ecp5", "xc7")
