"""Silicon units: sky130 figures converted to technology-neutral and 45 nm-equivalent ones.

Why a module of its own: every figure of the ASIC section is given in three area units and
three delay units, and the constants behind the conversions must be stated once, with where
they come from, so the report can print them next to the numbers.

Area: sky130 µm² (Yosys ``stat -liberty``) → NAND2 equivalents (÷ the area of
``sky130_fd_sc_hd__nand2_1``) → 45 nm-equivalent µm² (NAND2-eq × the NAND2_X1 area of the
Nangate 45 nm open cell library).  Delay: ns (OpenSTA) → FO4 (÷ the FO4 inverter delay
measured with OpenSTA in the same library) → 45 nm-equivalent ns (FO4 × the Nangate 45 nm
typical-corner FO4).  The 45 nm figures are estimates: they carry sky130's gate counts and
logic depths over to a 45 nm library, not a 45 nm synthesis.
"""

from __future__ import annotations

#: ``sky130_fd_sc_hd__nand2_1`` cell area (Liberty ``area``; ../shared/README.md).
SKY130_NAND2_UM2 = 3.7536
#: NAND2_X1 area of the Nangate 45 nm open cell library (published cell data; ../shared/README.md).
NANGATE45_NAND2_UM2 = 0.798
#: FO4 inverter delay of the Nangate 45 nm library, typical corner (published cell data; ../shared/README.md).
NANGATE45_FO4_PS = 22.0

#: The dissertation's unit (seed 003): 32 compressors + 32 decompressors + constant calculation for
#: an NVIDIA Tegra K1 SMX, ARM Artisan IBM SOI 45 nm: "an area overhead of 0.06 mm² (0.05 %), and an
#: active power consumption of 0.23 W (2.06 %) ... takes less than one clock cycle".
DISSERTATION_AREA_MM2 = 0.06
DISSERTATION_POWER_W = 0.23
#: Issue 14's goal for the configurable unit: 1.5x smaller than the dissertation's, rounding to nearest even.
GOAL_AREA_MM2 = 0.04
#: Tegra K1 GPU clock (852 MHz): one cycle = 1.17 ns ≈ 53 FO4 at 22 ps.
TEGRA_K1_MHZ = 852.0
#: Engines per unit: one compressor and one decompressor per load/store unit of a Kepler SMX.
UNIT_LANES = 32

#: Process scaling for the power estimate: C·V²·f with the capacitance proportional to the feature
#: size (same gate count, same activity), 130 nm at 1.8 V (sky130 typical) to 45 nm at 1.0 V.
SKY130_NODE_NM, SKY130_VDD = 130.0, 1.8
N45_NODE_NM, N45_VDD = 45.0, 1.0


def nand2_eq(area_um2: float) -> float:
    """sky130 µm² → NAND2 equivalents."""
    return area_um2 / SKY130_NAND2_UM2


def area_45nm_um2(area_um2: float) -> float:
    """sky130 µm² → 45 nm-equivalent µm² (NAND2-eq × Nangate NAND2_X1)."""
    return nand2_eq(area_um2) * NANGATE45_NAND2_UM2


def fo4(delay_ns: float, fo4_ns: float) -> float:
    """A delay in FO4 of the library it was measured in."""
    if fo4_ns <= 0:
        raise ValueError(f"FO4 delay must be positive, got {fo4_ns}")
    return delay_ns / fo4_ns


def delay_45nm_ns(fo4_count: float) -> float:
    """FO4 count → 45 nm-equivalent ns (× the Nangate 45 nm FO4)."""
    return fo4_count * NANGATE45_FO4_PS / 1000.0


def cycle_fo4(mhz: float = TEGRA_K1_MHZ) -> float:
    """One clock cycle at ``mhz`` in 45 nm FO4 (852 MHz: 53.3)."""
    return 1e6 / mhz / NANGATE45_FO4_PS


def power_scale_to_45nm() -> float:
    """Factor from a sky130 dynamic power to the 45 nm estimate at the same frequency and activity:
    (45/130) · (1.0/1.8)² — C ∝ feature size, P = C·V²·f."""
    return (N45_NODE_NM / SKY130_NODE_NM) * (N45_VDD / SKY130_VDD) ** 2


def sources() -> list[str]:
    """Where each constant comes from, one line each (printed under the silicon table)."""
    return [
        f"sky130 NAND2 = {SKY130_NAND2_UM2} µm²: `sky130_fd_sc_hd__nand2_1` area in the Liberty "
        "(`../shared/pdk/sky130/`, typical corner 25 °C 1.8 V).",
        f"45 nm NAND2 = {NANGATE45_NAND2_UM2} µm²: NAND2_X1 of the Nangate 45 nm open cell library (published cell data).",
        f"45 nm FO4 = {NANGATE45_FO4_PS:g} ps: Nangate 45 nm typical corner (published cell data).",
        "sky130 FO4: measured here with OpenSTA (an `inv_1` driving four copies of itself, mean of rise and fall,"
        " same wire-load model as the designs).",
        f"Dissertation (seed 003): {DISSERTATION_AREA_MM2} mm², {DISSERTATION_POWER_W} W, < 1 cycle of the Tegra K1"
        f" ({TEGRA_K1_MHZ:g} MHz = {cycle_fo4():.1f} FO4 at 45 nm), ARM Artisan IBM SOI 45 nm.",
        f"Power scaling 130 nm → 45 nm: × (45/130)·(1.0/1.8)² = × {power_scale_to_45nm():.3f}"
        " (switched capacitance ∝ feature size, P = C·V²·f; same activity and frequency). An estimate, not a 45 nm figure.",
    ]
