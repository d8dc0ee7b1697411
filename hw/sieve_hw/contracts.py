"""Narrower run-time contracts: what an engine costs when it serves a family of formats only.

Why: the configurable engines serve *every* legal Format (three special-value conventions,
three overflow policies, two rounding modes, subnormals on or off).  An architect who knows
which formats a workload uses wants the price of each of those freedoms.  A *contract* names a
family of formats; over that family some of the calculator's constants
(:data:`~.constants.CONST_LAYOUT`) never change, and :func:`pin` wires them into the engine as
constants (or as the simpler expression they reduce to), so synthesis removes the logic that
only other families need.  Nothing else changes: the engine still reads the same ``k`` record
from the shared constant calculator, and for a format of the family it receives exactly the
values it would have been pinned to (``sim/test_contracts.py`` proves this against the
calculator's RTL for the family's formats), so a pinned engine equals the full one there.

A lane unit built for a contract (``Lanes(8, contract="search")``, ``python -m
sieve_hw.generate --contract search``) also refuses every other format: its calculator raises
``error`` for a record outside the family (:meth:`Contract.record_ok`), which keeps the streams
closed as for an illegal record, so a pinned engine never sees constants it was not built for.
A contract engine used on its own (``Compressor(contract=...)`` fed by some other calculator)
has no such guard: given the constants of a format outside its family, its codes are
undefined.

Contracts (``synth.contracts`` synthesises each):

``full``
    every legal Format (the configurable engines as generated).
``search``
    what ``sieve search`` emits: nearest-even rounding, saturation, no special values;
    exponent and mantissa width, bias, sign and subnormals stay run-time.
``search_nosub``
    ``search`` without subnormals: only widths, bias and sign are run-time.
``search_nosub_b125``
    ``search_nosub`` with bias <= 125 (smallest normal >= 2^-124): every fp32-subnormal
    input lies below Min/2 and gives a zero code, so the compressor drops its leading-zero
    count and normalising shift (a step of its own, :func:`~.compressor.unnormalised`, not only
    pinned constants; verified by its lane unit's cocotb run in ``sim/test_contracts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

from amaranth import Cat, Const, Module, Signal, Value

from sieve.cfloat import OVERFLOWS, ROUNDINGS, SPECIALS, Format

from .config import format_fields
from .constants import CONST_LAYOUT

__all__ = ["Contract", "CONTRACTS", "MAX_BIAS_FP32_SUBNORMALS_ZERO", "contract", "fp32_subnormals_give_zero", "pin"]

#: A pinned constant: an integer, or a function of the incoming record (for a constant that
#: reduces to another field over the family, e.g. ``nan_sign_inv`` = ``signed``).
Tie = Union[int, Callable[[object], Value]]

#: The constants the search family (nearest-even, saturate, specials none) fixes, with the
#: calculator's expressions they come from (:func:`~.constants.calc_constants`).
_SEARCH_TIES: dict[str, Tie] = {
    "rne": 1,                           # rounding == nearest_even
    "ovf_nan": 0,                       # overflow != nan
    "inf_nan": 0,                       # ~ieee & ov_nan
    "bump_inf": 0,                      # ieee & ~ov_inf
    "bump_nan": 0,                      # (ieee & ~ov_inf) | fn
    "nan_bit": 0,                       # ieee ? quiet bit : 0
    "nan_zero": 1,                      # none | fnuz
    "nan_sign_keep": 0,                 # sgn & (ieee | fn)
    "nan_sign_inv": lambda k: k.signed,  # sgn & none
    "nan_sign_one": 0,                  # sgn & fnuz
    "fnuz": 0,
    "ieee": 0,
    "fn": 0,
}


#: The largest bias for which every fp32-subnormal input (< 2^-126) lies below Min/2 = 2^-bias
#: and not next to it, so that without subnormals it gives a zero code.
MAX_BIAS_FP32_SUBNORMALS_ZERO = 125


def fp32_subnormals_give_zero(fmt: Format) -> bool:
    """Every fp32-subnormal input rounds to a zero code in ``fmt``: no subnormals and bias <=
    :data:`MAX_BIAS_FP32_SUBNORMALS_ZERO`."""
    return not fmt.subnormals and fmt.bias <= MAX_BIAS_FP32_SUBNORMALS_ZERO


@dataclass(frozen=True)
class Contract:
    """A family of formats and the engine constants that are fixed over it.

    The family is every legal Format whose run-time record (:data:`~.config.FORMAT_LAYOUT`)
    has the values in ``record``; one description serves the Python test (:meth:`admits`) and
    the hardware check (:meth:`record_ok`, which a lane unit's calculator uses to refuse any
    other format).
    """

    name: str
    summary: str
    #: record field -> the value (or range of values) every format of the family has
    record: dict[str, int | range] = field(default_factory=dict)
    #: field of CONST_LAYOUT -> its value over the whole family
    ties: dict[str, Tie] = field(default_factory=dict)
    #: False when every fp32-subnormal input gives a zero code (subnormals off and bias <= 125):
    #: the compressor then needs no normalising shift (see :func:`~.compressor.unnormalised`)
    normalises_fp32_subnormals: bool = True

    def __post_init__(self):
        if not self.normalises_fp32_subnormals:
            bias = self.record.get("bias")
            if (self.record.get("subnormals") != 0 or not isinstance(bias, range)
                    or bias.stop - 1 > MAX_BIAS_FP32_SUBNORMALS_ZERO):
                raise ValueError(f"contract {self.name!r}: dropping the normalising shift needs subnormals off"
                                 " and bias <= 125 (every fp32 subnormal below Min/2)")

    def admits(self, fmt: Format) -> bool:
        """Whether the legal Format ``fmt`` belongs to the family."""
        fields = format_fields(fmt)
        return all(fields[name] in value if isinstance(value, range) else fields[name] == value
                   for name, value in self.record.items())

    def record_ok(self, record) -> Value:
        """1 when the record (a FORMAT_LAYOUT view) has the family's field values."""
        tests = []
        for name, value in self.record.items():
            wire = getattr(record, name)
            if isinstance(value, range):
                tests.append((wire >= value.start) & (wire <= value.stop - 1))
            else:
                tests.append(wire == value)
        return Cat(Const(1, 1), *tests).all()


#: the record of ``sieve search``'s formats: nearest-even, saturate, no special values
_SEARCH_RECORD = {"rounding": ROUNDINGS.index("nearest_even"), "overflow": OVERFLOWS.index("saturate"),
                  "specials": SPECIALS.index("none")}

CONTRACTS: dict[str, Contract] = {c.name: c for c in (
    Contract("full", "every legal Format"),
    Contract("search", "nearest-even, saturate, no specials (what `sieve search` emits); "
             "widths, bias, sign, subnormals run-time", _SEARCH_RECORD, dict(_SEARCH_TIES)),
    Contract("search_nosub", "as `search`, subnormals off; widths, bias, sign run-time",
             {**_SEARCH_RECORD, "subnormals": 0}, {**_SEARCH_TIES, "sub_en": 0}),
    Contract("search_nosub_b125", "as `search_nosub`, bias <= 125 (Min >= 2^-124), so fp32-subnormal inputs"
             " need no normalising shift", {**_SEARCH_RECORD, "subnormals": 0,
                                                    "bias": range(-256, MAX_BIAS_FP32_SUBNORMALS_ZERO + 1)},
             {**_SEARCH_TIES, "sub_en": 0}, normalises_fp32_subnormals=False),
)}


def contract(name: str) -> Contract:
    """The contract called ``name``, or a ValueError listing the known ones."""
    try:
        return CONTRACTS[name]
    except KeyError:
        raise ValueError(f"unknown contract {name!r}; known: {', '.join(CONTRACTS)}") from None


def pin(m: Module, k, name: str):
    """``k`` with the contract's constants wired in (a new record; ``k`` itself is untouched)."""
    ties = contract(name).ties
    bad = sorted(set(ties) - set(CONST_LAYOUT.members))
    if bad:
        raise ValueError(f"contract {name!r} pins unknown constants {bad}")
    if not ties:
        return k
    pinned = Signal(CONST_LAYOUT, name=f"k_{name}")
    m.d.comb += pinned.eq(k)
    for fname, tie in ties.items():
        m.d.comb += getattr(pinned, fname).eq(tie(k) if callable(tie) else tie)
    return pinned
