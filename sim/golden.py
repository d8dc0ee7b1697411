"""What the RTL must produce: format sweeps, corner values and the expected codes/values.

The golden model is :mod:`sieve.emulator`, used as it is: the RTL equals it bit for bit.
"""

from __future__ import annotations

import functools

import numpy as np

import sieve
from sieve.cfloat import FormatError, OVERFLOWS, SPECIALS

FP32_MIN_NORMAL_BITS = 0x00800000

__all__ = ["expected_encode", "expected_decode", "corner_values", "random_values", "fp32_subnormals", "legal_biases",
           "sweep_formats", "decode_codes"]

@functools.lru_cache(maxsize=None)
def legal_biases(exp_bits: int, man_bits: int, signed: bool, specials: str, overflow: str) -> tuple[int, ...]:
    """Every bias for which the combination is a legal Format (empty if none)."""
    out = []
    for b in range(-130, 160):
        try:
            sieve.Format(exp_bits, man_bits, b, signed=signed, specials=specials, overflow=overflow)
        except FormatError:
            continue
        out.append(b)
    return tuple(out)


def expected_encode(x: np.ndarray, fmt: sieve.Format) -> np.ndarray:
    """``sieve.encode`` as uint64 codes."""
    return sieve.encode(np.ascontiguousarray(x, dtype=np.float32), fmt).astype(np.uint64)


def expected_decode(codes: np.ndarray, fmt: sieve.Format) -> np.ndarray:
    """``sieve.decode`` as fp32 bit patterns (NaN is the canonical quiet NaN with the code's sign)."""
    return sieve.decode(np.asarray(codes, dtype=np.uint64), fmt).view(np.uint32).astype(np.uint64)


def _f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def _neighbours(v: np.ndarray) -> list[np.ndarray]:
    v = v.astype(np.float32)
    return [v, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(0))]


def corner_values(fmt: sieve.Format, rng: np.random.Generator, ties: int = 64) -> np.ndarray:
    """Every corner of a format: ±0, ±Inf, NaNs, around Min/2, Min, Min normal, Max and the
    overflow threshold, exact ties between neighbouring codes, fp32 subnormals and extremes."""
    fixed = [0.0, 1.0, 2.0, 0.5, 3.0, 1.5, np.float32(3.4028235e38), 2.0 ** -126, 2.0 ** -149, 2.0 ** -127,
             (1 - 2.0 ** -23) * 2.0 ** -126, 1e-40, 1e-45, 1e-38]
    pts = [_f32(fixed), _f32([np.inf]), _f32([np.nan])]
    for v in (fmt.min_value, fmt.min_value / 2, fmt.min_normal, fmt.min_normal / 2, fmt.max_value,
              fmt.min_value * 1.5, fmt.min_value * 0.75, fmt.min_value * 0.25):
        if v >= 2.0 ** -149 and v < 3.4e38:
            pts += _neighbours(_f32([v]))
    # the rounding threshold above Max: Max + ulp/2
    ulp = np.ldexp(1.0, fmt.max_exponent - fmt.man_bits)
    for v in (fmt.max_value + ulp / 2, fmt.max_value + ulp, 2 * fmt.max_value):
        if v < 3.4e38 and v >= 2.0 ** -149:
            pts += _neighbours(_f32([v]))
    # exact ties between neighbouring finite codes, and their neighbours
    table = sieve.decode(np.arange(min(1 << fmt.width, 1 << 16), dtype=np.uint64), fmt) if fmt.width <= 16 else None
    if table is not None:
        fin = np.unique(np.abs(table[np.isfinite(table)]).astype(np.float64))
    else:
        codes = rng.integers(0, 1 << (fmt.width - int(fmt.signed)), 4 * ties, dtype=np.uint64)
        vals = sieve.decode(codes, fmt).astype(np.float64)
        fin = np.unique(np.abs(vals[np.isfinite(vals)]))
    if fin.size > 1:
        pick = rng.choice(fin.size - 1, size=min(ties, fin.size - 1), replace=False)
        mids = (fin[pick] + fin[pick + 1]) / 2
        mids = mids[(mids >= 2.0 ** -149) & (mids < 3.4e38)]
        pts += _neighbours(_f32(mids))
    # fp32 subnormals: smallest, largest, random bit patterns
    pts.append(rng.integers(1, FP32_MIN_NORMAL_BITS, 16, dtype=np.uint32).view(np.float32))
    pts.append(np.array([1, FP32_MIN_NORMAL_BITS - 1, 0x00400000, 0x00400001, 0x003FFFFF], np.uint32).view(np.float32))
    # NaN payloads and signalling NaN
    pts.append(np.array([0x7F800001, 0x7FFFFFFF, 0x7FC00000, 0x7FA00000], np.uint32).view(np.float32))
    out = np.concatenate([p.reshape(-1).astype(np.float32) for p in pts])
    return np.concatenate([out, -out])


def random_values(fmt: sieve.Format, rng: np.random.Generator, n: int) -> np.ndarray:
    """Random fp32: half uniform bit patterns, half log-uniform over the format's range."""
    half = n // 2
    raw = rng.integers(0, 1 << 32, half, dtype=np.uint64).astype(np.uint32).view(np.float32)
    lo = np.log2(max(fmt.min_value / 4, 2.0 ** -149))
    hi = np.log2(min(fmt.max_value * 4, 3.4e38))
    mag = np.exp2(rng.uniform(lo, hi, n - half))
    sign = np.where(rng.random(n - half) < 0.5, -1.0, 1.0)
    return np.concatenate([raw, _f32(mag * sign)])


def fp32_subnormals(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random fp32 subnormals of both signs (nonzero fraction, zero exponent field)."""
    bits = rng.integers(1, 1 << 23, n, dtype=np.uint32) | (rng.integers(0, 2, n, dtype=np.uint32) << 31)
    return bits.view(np.float32)


def decode_codes(fmt: sieve.Format, rng: np.random.Generator, limit_bits: int = 12, sample: int = 4096) -> np.ndarray:
    """Every code when the format has at most ``limit_bits`` bits, else corners plus a sample."""
    w = fmt.width
    if w <= limit_bits:
        return np.arange(1 << w, dtype=np.uint64)
    top = (1 << w) - 1
    mag_top = (1 << (w - int(fmt.signed))) - 1
    fixed = np.array([0, 1, 2, top, top - 1, mag_top, mag_top - 1, mag_top + 1 if fmt.signed else 0,
                      (1 << fmt.man_bits) - 1, 1 << fmt.man_bits, (1 << fmt.man_bits) + 1], dtype=np.uint64)
    fixed = fixed[fixed <= top]
    return np.concatenate([fixed, rng.integers(0, top + 1, sample, dtype=np.uint64)])


def sweep_formats(level: str = "ci", seed: int = 1) -> list[sieve.Format]:
    """Formats for the RTL sweep.

    ``ci``: every exponent width 1..8 at least once with extreme and default biases, several
    mantissa widths, signed/unsigned, both roundings, subnormals on/off, every specials and
    overflow policy and every ml_dtypes preset (about 60 formats).  ``full``: for every
    exponent width and mantissa width in {0,1,2,3,4,5,7,10,15,23}, every specials/overflow
    combination, signed and unsigned, both roundings and subnormals, with the lowest, the
    default and the highest legal bias (several thousand formats).
    """
    rng = np.random.default_rng(seed)
    out: list[sieve.Format] = list(sieve.PRESETS.values())
    policies = [(sp, ov) for sp in SPECIALS for ov in OVERFLOWS]
    if level == "full":
        for e in range(1, 9):
            for mb in (0, 1, 2, 3, 4, 5, 7, 10, 15, 23):
                for sg in (True, False):
                    for sp, ov in policies:
                        biases = legal_biases(e, mb, sg, sp, ov)
                        if not biases:
                            continue
                        default = (1 << (e - 1)) - 1
                        for b in sorted({biases[0], biases[-1], default if default in biases else biases[len(biases) // 2]}):
                            for rnd in ("nearest_even", "truncate"):
                                for sub in (False, True):
                                    out.append(sieve.Format(e, mb, b, signed=sg, rounding=rnd, subnormals=sub,
                                                            overflow=ov, specials=sp))
        return list(dict.fromkeys(out))
    if level != "ci":
        raise ValueError(f"sweep level must be 'ci' or 'full', got {level!r}")
    mans = (0, 1, 2, 3, 5, 7, 10, 23)
    for e in range(1, 9):
        for i in range(6):
            mb = mans[(e + 3 * i) % len(mans)]
            sg = bool(i % 3 != 2)
            sp, ov = policies[(e * 5 + i * 7) % len(policies)]
            biases = legal_biases(e, mb, sg, sp, ov)
            if not biases:
                sp, ov = "none", "saturate"
                biases = legal_biases(e, mb, sg, sp, ov)
                if not biases:
                    continue
            pick = (biases[0], biases[-1], (1 << (e - 1)) - 1, int(rng.choice(biases)))[i % 4]
            if pick not in biases:
                pick = biases[len(biases) // 2]
            out.append(sieve.Format(e, mb, pick, signed=sg, rounding=("nearest_even", "truncate")[i % 2],
                                    subnormals=bool((i // 2) % 2), overflow=ov, specials=sp))
    return list(dict.fromkeys(out))
