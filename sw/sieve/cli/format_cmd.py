"""``sieve format FORMAT``: everything about one format, and a short table of its values."""

from __future__ import annotations

import json

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("format", help="describe a custom float format (width, range, engine constants, values)")
    p.add_argument("format", help="text form such as e4m3, ue5m2b20+sub, or a preset such as float8_e4m3fn")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--values", type=int, default=16, help="how many codes of the value table to show (default 16)")
    p.set_defaults(func=run)


def notable_codes(fmt) -> np.ndarray:
    """Zero, the smallest subnormal and normal, Max, and the special codes of both signs."""
    codes = {0, 1, 1 << fmt.man_bits, fmt.max_magnitude_code}
    if fmt.inf_magnitude_code is not None:
        codes.add(fmt.inf_magnitude_code)
    for negative in (False, True):
        if fmt.nan_code(negative) is not None:
            codes.add(fmt.nan_code(negative))
    if fmt.signed:
        codes |= {c | (1 << (fmt.width - 1)) for c in list(codes)}
    return np.array(sorted(c for c in codes if c < (1 << fmt.width)), dtype=np.int64)


def run(args) -> int:
    from ..cfloat import Format
    from ..emulator import decode

    fmt = Format.parse(args.format)
    info = fmt.describe()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"format      {info['format']}")
    print(f"width       {fmt.width} bits  (sign {int(fmt.signed)}, exponent {fmt.exp_bits}, mantissa {fmt.man_bits}, bias {fmt.bias})")
    print(f"policies    rounding={fmt.rounding} subnormals={'on' if fmt.subnormals else 'off'} "
          f"overflow={fmt.overflow} specials={fmt.specials}")
    print(f"range       Min={fmt.min_value:.9g}  min normal={fmt.min_normal:.9g}  Max={fmt.max_value:.9g}")
    print("constants")
    for key, value in info["constants"].items():
        shown = f"0x{value:08X}" if key.endswith("_bits") else str(value)
        print(f"  {key:<14}{shown}")
    n = min(args.values, 1 << fmt.width)
    if n > 0:
        codes = np.unique(np.concatenate([
            np.linspace(0, (1 << fmt.width) - 1, n).round().astype(np.int64),
            notable_codes(fmt),
        ]))
        values = decode(codes, fmt)
        print("values")
        print(f"  {'code':>10}  {'bits':>{fmt.width}}  value")
        for code, value in zip(codes, values):
            print(f"  {code:>10}  {code:0{fmt.width}b}  {value:.9g}")
    return 0
