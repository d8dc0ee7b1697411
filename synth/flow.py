"""One design variant through every requested target: RTLIL in, one record per target out.

A *variant* is a design name plus an optional fixed format (``None`` = the configurable
netlist, format a run-time input).  Each target's record carries every figure the target
gives (see :mod:`synth.yosys` and :mod:`synth.nextpnr`) plus ``status``: ``ok``,
``skipped`` (with ``reason``: e.g. the design does not fit the device) or ``failed`` /
``timeout`` (with ``error``), so that one bad target never hides the others.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sieve.errors import SieveError

from . import TARGETS, yosys
from .harness import Interface, harness_verilog, probe
from .nextpnr import DEVICES, PnrSettings, place_and_route
from .tools import ToolTimeout

RtlilWriter = Callable[[Path], Path]


@dataclass(frozen=True)
class Variant:
    """A design and the format baked into it (``None``: configurable at run time)."""

    design: str
    fixed_format: object | None = None  # a sieve.Format

    @property
    def name(self) -> str:
        return "configurable" if self.fixed_format is None else f"fixed-{self.fixed_format}"

    @property
    def slug(self) -> str:
        return f"{self.design}__{self.name}"


@dataclass
class FlowSettings:
    """Which targets to run and the tool limits."""

    targets: tuple[str, ...] = TARGETS
    pnr: PnrSettings = field(default_factory=PnrSettings)
    yosys_timeout: float | None = 1800.0
    #: designs whose place and route is skipped outright (reason recorded; names as in skip_ice40)
    skip_pnr: frozenset[str] = frozenset()
    #: designs whose iCE40 targets are skipped outright, mapping included (reason recorded):
    #: for units far larger than any iCE40, whose ``synth_ice40`` alone takes many minutes;
    #: a design name covers its depth variants (``lanes32`` covers ``lanes32_s2``)
    skip_ice40: frozenset[str] = frozenset()


def hw_rtlil_writer(design: str, fixed_format=None, contract: str = "full") -> RtlilWriter:
    """RTLIL from the RTL engineer's generator, :func:`sieve_hw.generate.write_rtlil`."""

    def write(out_dir: Path) -> Path:
        try:
            from sieve_hw import generate
        except ImportError as exc:
            raise SieveError(f"cannot import sieve_hw.generate ({exc}); run `make setup` or check hw/sieve_hw") from exc
        try:
            return Path(generate.write_rtlil(design, out_dir, fixed_format=fixed_format, contract=contract))
        except generate.DesignError as exc:
            raise SieveError(str(exc)) from exc

    return write


def _stage_rtlil(writer: RtlilWriter, workdir: Path) -> str:
    """Have ``writer`` produce RTLIL and make sure it sits in ``workdir`` (YoWASP sandbox)."""
    src = Path(writer(workdir)).resolve()
    if not src.exists():
        raise SieveError(f"the RTLIL writer returned {src}, which does not exist")
    if src.parent == workdir.resolve():
        return src.name
    dst = workdir.resolve() / "design.il"
    shutil.copyfile(src, dst)
    return dst.name


def _guard(record: dict, fn: Callable[[], dict]) -> dict:
    try:
        record.update(fn())
        record["status"] = "ok"
    except ToolTimeout as exc:
        record.update(status="timeout", error=str(exc))
    except SieveError as exc:
        record.update(status="failed", error=str(exc))
    return record


def run_variant(variant: Variant, writer: RtlilWriter, workdir: Path, settings: FlowSettings,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """Synthesise ``variant`` for every target in ``settings``; one record per target."""
    unknown = sorted(set(settings.targets) - set(TARGETS))
    if unknown:
        raise SieveError(f"unknown synthesis target(s) {unknown}; known: {list(TARGETS)}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    il = _stage_rtlil(writer, workdir)
    iface = probe(il, workdir, settings.yosys_timeout)
    base = {
        "design": variant.design,
        "variant": variant.name,
        "format": None if variant.fixed_format is None else str(variant.fixed_format),
        "top": iface.top,
        "input_bits": iface.input_bits,
        "output_bits": iface.output_bits,
    }
    timeout = settings.yosys_timeout
    cache: dict[str, dict] = {}

    def ice40_area() -> dict:
        if "ice40" not in cache:
            cache["ice40"] = yosys.ice40(il, iface.top, workdir, timeout)
        return cache["ice40"]

    def harness() -> tuple[str, dict]:
        if "harness" not in cache:
            (workdir / "harness.v").write_text(harness_verilog(iface))
            cache["harness"] = yosys.ice40_harness(il, "harness.v", workdir, timeout)
        return cache["harness"]

    records = []
    for target in settings.targets:
        if progress:
            progress(f"{variant.slug} {target}")
        record = {**base, "target": target}
        if target == "generic":
            _guard(record, lambda: yosys.generic(il, iface.top, workdir, timeout))
        elif target == "ecp5":
            _guard(record, lambda: yosys.ecp5(il, iface.top, workdir, timeout))
        elif target == "xc7":
            _guard(record, lambda: yosys.xc7(il, iface.top, workdir, timeout))
        elif _named(variant.design, settings.skip_ice40):
            record.update(status="skipped", reason="iCE40 mapping not requested for this design (far larger than any iCE40)")
        else:
            device = target.split("-", 1)[1]
            _guard(record, lambda: _ice40(variant, device, workdir, settings, ice40_area, harness, iface))
        records.append(record)
    return records


def _named(design: str, names: frozenset[str]) -> bool:
    """Whether ``design`` is in ``names`` by its own name or, for a depth variant
    (``lanes32_s2``), by its design's name (``lanes32``)."""
    from sieve_hw.generate import split_design

    return design in names or split_design(design)[0] in names


def _ice40(variant: Variant, device: str, workdir: Path, settings: FlowSettings,
           area: Callable[[], dict], harness: Callable[[], tuple[str, dict]], iface: Interface) -> dict:
    out = dict(area())
    capacity = DEVICES[device][2]
    out["device_lcs"] = capacity
    if _named(variant.design, settings.skip_pnr):
        out.update(fmax_mhz=None, pnr="skipped", pnr_reason="place and route not requested for this design")
        return out
    bare = max(out["lut4"], out["ff"])  # the harness only adds to this lower bound
    if bare > capacity:
        out.update(fmax_mhz=None, pnr="skipped",
                   pnr_reason=f"does not fit: the design alone needs >= {bare} logic cells, device has {capacity}")
        return out
    netlist, wrapped = harness()
    out["harness"] = {**wrapped, "input_bits": iface.input_bits, "output_bits": iface.output_bits}
    need = max(wrapped["lut4"], wrapped["ff"])  # a lower bound on logic cells
    if need > capacity:
        out.update(fmax_mhz=None, pnr="skipped",
                   pnr_reason=f"does not fit: design + harness need >= {need} logic cells, device has {capacity}")
        return out
    try:
        out.update(place_and_route(netlist, device, workdir, settings.pnr), pnr="ok")
    except ToolTimeout as exc:
        out.update(fmax_mhz=None, pnr="timeout", pnr_reason=str(exc))
    return out
