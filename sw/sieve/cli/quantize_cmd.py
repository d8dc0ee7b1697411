"""``sieve quantize --format F in.npy out.npy``: round an array file and report what happened."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SieveError


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a .npy array to a format and print error statistics")
    p.add_argument("--format", "-f", required=True, help="target format (text form or preset name)")
    p.add_argument("input", help="input .npy file (float32; float16/bfloat16/float64 are converted)")
    p.add_argument("output", help="output .npy file of float32 quantized values")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.set_defaults(func=run)


def quantization_stats(x: np.ndarray, q: np.ndarray, fmt) -> dict:
    """Error statistics of quantizing ``x`` (float32) to ``q`` in format ``fmt``."""
    finite = np.isfinite(x)
    xf, qf = x[finite].astype(np.float64), q[finite].astype(np.float64)
    err = qf - xf
    nonzero = xf != 0
    rel = np.abs(err[nonzero]) / np.abs(xf[nonzero]) if nonzero.any() else np.zeros(0)
    both_finite = np.isfinite(qf)
    return {
        "format": str(fmt),
        "count": int(x.size),
        "mse": float(np.mean(err[both_finite] ** 2)) if both_finite.any() else 0.0,
        "max_abs_error": float(np.max(np.abs(err[both_finite]))) if both_finite.any() else 0.0,
        "max_relative_error": float(np.nanmax(rel)) if rel.size else 0.0,
        "saturated": int(np.count_nonzero(finite & (np.abs(x) > fmt.max_value))),
        "flushed_to_zero": int(np.count_nonzero((x != 0) & finite & (q == 0))),
        "nan_inputs": int(np.count_nonzero(np.isnan(x))),
        "inf_inputs": int(np.count_nonzero(np.isinf(x))),
    }


def run(args) -> int:
    from ..cfloat import Format
    from ..emulator import as_float32, quantize
    from ..io_utils import atomic_path, check_output_file

    fmt = Format.parse(args.format)
    check_output_file(args.output)
    src = Path(args.input)
    if not src.is_file():
        raise SieveError(f"input file {src} does not exist; give a .npy array file")
    try:
        raw = np.load(src, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a bad file
        raise SieveError(f"cannot read {src} as a .npy array ({exc}); save it with numpy.save") from exc
    try:
        x = as_float32(raw)
    except TypeError as exc:
        raise SieveError(f"{src}: {exc}") from exc
    q = quantize(x, fmt)
    with atomic_path(args.output) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, q)
    stats = quantization_stats(x, q, fmt)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        for key, value in stats.items():
            print(f"{key:<20}{value}")
        print(f"wrote {args.output}")
    return 0
