"""Emulator throughput side by side with ml_dtypes, in one run, on 16 M values (N(0, 0.1)).

Figures (issue: foundation): encode >= 1.0x ml_dtypes' float32 -> float8_e4m3fn astype;
decode >= 3x ml_dtypes' float8_e4m3fn -> float32; pack + unpack >= 1 GB/s of packed bytes.
Each timing is the best of several repetitions, taken in the same process, so the ratios
compare like with like even on a busy machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import ml_dtypes
import numpy as np

import sieve
from sieve.io_utils import write_json, write_text


def best_seconds(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(out_dir: Path, quick: bool = False) -> dict:
    n = 1_000_000 if quick else 16_000_000
    repeat = 3 if quick else 7
    x = (np.random.default_rng(0).standard_normal(n) * 0.1).astype(np.float32)
    fmt = sieve.PRESETS["float8_e4m3fn"]

    codes = sieve.encode(x, fmt)
    ref = x.astype(ml_dtypes.float8_e4m3fn)
    assert np.array_equal(codes, ref.view(np.uint8)), "encode disagrees with ml_dtypes"

    t_enc = best_seconds(lambda: sieve.encode(x, fmt), repeat)
    t_enc_ml = best_seconds(lambda: x.astype(ml_dtypes.float8_e4m3fn), repeat)
    t_dec = best_seconds(lambda: sieve.decode(codes, fmt), repeat)
    t_dec_ml = best_seconds(lambda: ref.astype(np.float32), repeat)

    packing = {}
    for text in ("ue1m0b0", "e2m1", "e3m1", "e3m2", "e4m3", "e5m5", "e8m10b127+ieee"):
        f = sieve.Format.parse(text)
        c = np.random.default_rng(1).integers(0, 1 << f.width, n).astype(f.code_dtype)
        blob = sieve.pack(c, f)
        t_pack = best_seconds(lambda: sieve.pack(c, f), repeat)
        t_unpack = best_seconds(lambda: sieve.unpack(blob, f, n), repeat)
        packing[text] = {
            "width": f.width,
            "packed_bytes": len(blob),
            "pack_GBps": len(blob) / t_pack / 1e9,
            "unpack_GBps": len(blob) / t_unpack / 1e9,
            "round_trip_GBps": len(blob) / (t_pack + t_unpack) / 1e9,
        }

    result = {
        "values": n,
        "format": str(fmt),
        "encode_values_per_s": n / t_enc,
        "ml_dtypes_encode_values_per_s": n / t_enc_ml,
        "encode_ratio": t_enc_ml / t_enc,
        "decode_values_per_s": n / t_dec,
        "ml_dtypes_decode_values_per_s": n / t_dec_ml,
        "decode_ratio": t_dec_ml / t_dec,
        "packing": packing,
        "targets": {"encode_ratio": 1.0, "decode_ratio": 3.0, "pack_unpack_GBps": 1.0},
    }
    write_json(out_dir / "emulator.json", result)
    lines = [
        f"# Emulator throughput ({n:,} values, N(0, 0.1), {fmt})",
        "",
        "| operation | sieve (M values/s) | ml_dtypes (M values/s) | ratio | target |",
        "|---|---|---|---|---|",
        f"| encode | {n / t_enc / 1e6:.0f} | {n / t_enc_ml / 1e6:.0f} | {t_enc_ml / t_enc:.2f}x | >= 1.0x |",
        f"| decode | {n / t_dec / 1e6:.0f} | {n / t_dec_ml / 1e6:.0f} | {t_dec_ml / t_dec:.2f}x | >= 3.0x |",
        "",
        "| format | width | pack GB/s | unpack GB/s | pack+unpack GB/s |",
        "|---|---|---|---|---|",
    ]
    for text, p in packing.items():
        lines.append(f"| {text} | {p['width']} | {p['pack_GBps']:.2f} | {p['unpack_GBps']:.2f} | {p['round_trip_GBps']:.2f} |")
    write_text(out_dir / "emulator.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result
