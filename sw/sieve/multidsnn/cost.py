"""Cost per input: multiply-accumulates, parameter bytes read, and energy from a per-operation
energy model.

Energy model (stated in every report): M. Horowitz, "Computing's energy problem (and what we
can do about it)", ISSCC 2014, Fig. 1.1.9, 45 nm at 0.9 V:

* a fp32 multiply-accumulate = fp32 multiply 3.7 pJ + fp32 add 0.9 pJ = 4.6 pJ;
* a selector comparison = one fp32 add, 0.9 pJ (a compare is a subtraction);
* a parameter byte read from a 1 MB SRAM = 100 pJ per 64-bit access / 8 = 12.5 pJ (the
  networks here hold 0.1-5 MB of fp32 weights, beyond the 8-32 kB caches of the table).

Activations, control and leakage are left out: the model ranks designs by the work they do,
as the dissertation's FLOP comparison (Fig. 3.10) does.  Each parameter is counted once per
input, as a batch-1 device streams its weights once per inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from ..models.macs import module_macs

FP32_BYTES = 4
SOURCE = ("M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
          "ISSCC 2014, pp. 10-14, Fig. 1.1.9 (45 nm, 0.9 V)")


@dataclass(frozen=True)
class EnergyModel:
    """Energy per operation in picojoules."""

    pj_per_mac: float = 3.7 + 0.9
    pj_per_compare: float = 0.9
    pj_per_byte: float = 100.0 / 8
    source: str = SOURCE

    def energy_pj(self, macs: float, compares: float, param_bytes: float) -> float:
        """Energy of one input doing ``macs`` MACs, ``compares`` comparisons and reading
        ``param_bytes`` parameter bytes."""
        return macs * self.pj_per_mac + compares * self.pj_per_compare + param_bytes * self.pj_per_byte

    def to_json(self) -> dict:
        return asdict(self)


def param_bytes(module: nn.Module | None) -> int:
    """Bytes of ``module``'s parameters stored as fp32 (0 for no module)."""
    if module is None:
        return 0
    return FP32_BYTES * sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class NetCost:
    """MACs and parameter bytes of one network per input."""

    macs: int
    bytes: int


def net_cost(module: nn.Module, input_shape: tuple[int, ...]) -> NetCost:
    return NetCost(module_macs(module, input_shape), param_bytes(module))


def system_cost(pre: NetCost, main: NetCost, tail: NetCost, tail_share: float, compares: float,
                node_bytes: float, stored_selector_bytes: int, energy: EnergyModel) -> dict:
    """Expected cost per input of preprocessor + selector + the one active dsNN.

    ``tail_share`` is the fraction of inputs the selector sends to the tail dsNN, ``compares``
    and ``node_bytes`` the mean comparisons and tree bytes read per input.  The *replaced part*
    is what replaces the monolith's fully connected part: selector and dsNNs.
    """
    dsnn_macs = (1.0 - tail_share) * main.macs + tail_share * tail.macs
    dsnn_bytes = (1.0 - tail_share) * main.bytes + tail_share * tail.bytes
    replaced_bytes = dsnn_bytes + node_bytes
    return {
        "macs_replaced": dsnn_macs, "macs_total": pre.macs + dsnn_macs, "compares": compares,
        "bytes_replaced": replaced_bytes, "bytes_total": pre.bytes + replaced_bytes,
        "energy_replaced_pj": energy.energy_pj(dsnn_macs, compares, replaced_bytes),
        "energy_total_pj": energy.energy_pj(pre.macs + dsnn_macs, compares, pre.bytes + replaced_bytes),
        "stored_bytes": pre.bytes + main.bytes + tail.bytes + stored_selector_bytes,
        "tail_share": tail_share,
    }


def monolith_cost(pre: NetCost, head: NetCost, energy: EnergyModel) -> dict:
    """The same figures for the monolith (its head is the replaced part)."""
    return {
        "macs_replaced": float(head.macs), "macs_total": float(pre.macs + head.macs), "compares": 0.0,
        "bytes_replaced": float(head.bytes), "bytes_total": float(pre.bytes + head.bytes),
        "energy_replaced_pj": energy.energy_pj(head.macs, 0, head.bytes),
        "energy_total_pj": energy.energy_pj(pre.macs + head.macs, 0, pre.bytes + head.bytes),
        "stored_bytes": pre.bytes + head.bytes, "tail_share": 0.0,
    }
