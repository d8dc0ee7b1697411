"""The run-time format record: how a :class:`sieve.Format` travels on wires.

Every engine netlist serves every legal Format.  The format enters the hardware as one
25-bit record, :data:`FORMAT_LAYOUT`, whose fields are the Format's fields in binary:

=========== ====== ============================================================
field       bits   meaning
=========== ====== ============================================================
exp_bits    4      1 .. 8
man_bits    5      0 .. 23
bias        9      two's complement, -256 .. 255 (legal Formats use -126 .. 150)
signed      1      1 = sign bit present
rounding    1      0 = nearest_even, 1 = truncate
subnormals  1      1 = subnormals on
overflow    2      0 = saturate, 1 = inf, 2 = nan (3 is illegal)
specials    2      0 = none, 1 = ieee, 2 = fn, 3 = fnuz
=========== ====== ============================================================

Illegal run-time fields (any combination :meth:`sieve.Format.validate` rejects, or the
overflow value 3) are *defined behaviour*: the constant calculator raises its ``error``
output; the lane unit (:mod:`sieve_hw.lanes`) then latches the record, holds ``cfg_error``
high and keeps every data stream closed (``i_ready`` = 0, ``o_valid`` = 0, output data
zero) until a legal record is loaded.  Nothing in flight is lost: a record is only accepted
when every pipeline is empty (see :mod:`sieve_hw.lanes`).
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data

import sieve
from sieve.cfloat import OVERFLOWS, ROUNDINGS, SPECIALS

__all__ = ["FORMAT_LAYOUT", "FORMAT_WIDTH", "format_fields", "pack_format", "pack_fields"]

FORMAT_LAYOUT = data.StructLayout({
    "exp_bits": unsigned(4),
    "man_bits": unsigned(5),
    "bias": signed(9),
    "signed": unsigned(1),
    "rounding": unsigned(1),
    "subnormals": unsigned(1),
    "overflow": unsigned(2),
    "specials": unsigned(2),
})
FORMAT_WIDTH = FORMAT_LAYOUT.size


def format_fields(fmt: sieve.Format) -> dict[str, int]:
    """The record's field values for a Format (the inverse of reading the wires)."""
    return {
        "exp_bits": fmt.exp_bits,
        "man_bits": fmt.man_bits,
        "bias": fmt.bias,
        "signed": int(fmt.signed),
        "rounding": ROUNDINGS.index(fmt.rounding),
        "subnormals": int(fmt.subnormals),
        "overflow": OVERFLOWS.index(fmt.overflow),
        "specials": SPECIALS.index(fmt.specials),
    }


def pack_fields(fields: dict[str, int]) -> int:
    """Pack raw field values (legal or not) into the record's integer value."""
    value = 0
    for name, (shape, offset) in ((n, (f.shape, f.offset)) for n, f in FORMAT_LAYOUT):
        width = shape.width
        raw = int(fields[name])
        lo = -(1 << (width - 1)) if shape.signed else 0
        hi = (1 << (width - 1)) - 1 if shape.signed else (1 << width) - 1
        if not lo <= raw <= hi:
            raise ValueError(f"format field {name}={raw} does not fit its {width}-bit wire")
        value |= (raw & ((1 << width) - 1)) << offset
    return value


def pack_format(fmt: sieve.Format) -> int:
    """The record's integer value for a legal Format (drive it onto ``cfg`` as one number)."""
    return pack_fields(format_fields(fmt))
