"""cocotb (Icarus) checks of the lane unit against the emulator, started from pytest.

* sweep: every compressor output equals ``sieve.encode`` and every decompressor output
  ``sieve.decode`` (bit patterns; NaN canonical) for the format sweep of
  :func:`sim.golden.sweep_formats`, on corners plus random fp32, and every code of each
  format up to 12 bits — through ``lanes8`` (eight values per clock per side);
* streaming: 100 k values with random valid and ready stalls on both sides, format changes
  raised while values are in flight, a reset in the middle of a stream, an illegal record;
* the slow ``full`` sweep runs 1,500 formats drawn from an 11.8 k-format grid (``make test-all``).

Every run writes a summary (formats, values, cycles) to ``build/sim/results/<test>.json``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import sieve
from sieve_hw.compressor import Compressor
from sieve_hw.config import FORMAT_LAYOUT, pack_fields, pack_format
from sieve_hw.constants import ConstCalc
from sieve_hw.decompressor import Decompressor
from sieve_hw.generate import DEPTHS

from .golden import corner_values, decode_codes, expected_decode, expected_encode, random_values, sweep_formats
from .harness import SIM_BUILD, run_job

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _segment(fmt, rng, n_random: int, *, p_valid=1.0, p_ready=1.0, reset_at=-1, cfg_early=False,
             comp_values=None, dec_codes=None, limit_bits=12) -> dict:
    if comp_values is None:
        comp_values = np.concatenate([corner_values(fmt, rng), random_values(fmt, rng, n_random)])
    if dec_codes is None:
        dec_codes = decode_codes(fmt, rng, limit_bits=limit_bits)
    return {"fmt": fmt, "record": pack_format(fmt), "error": 0,
            "c": np.asarray(comp_values, np.float32).view(np.uint32).astype(np.uint64),
            "d": np.asarray(dec_codes, np.uint64), "p_valid": p_valid, "p_ready": p_ready,
            "reset_at": reset_at, "cfg_early": cfg_early}


def _job(segments: list[dict], seed: int) -> dict:
    job = {"seed": np.array(seed), "records": np.array([s["record"] for s in segments], np.int64),
           "errors": np.array([s["error"] for s in segments]),
           "p_valid": np.array([s["p_valid"] for s in segments], float),
           "p_ready": np.array([s["p_ready"] for s in segments], float),
           "reset_at": np.array([s["reset_at"] for s in segments], np.int64),
           "cfg_early": np.array([s["cfg_early"] for s in segments], bool),
           "cfg_latency": np.array(ConstCalc.LATENCY)}
    for i, s in enumerate(segments):
        job[f"c_{i}"] = s["c"]
        job[f"d_{i}"] = s["d"]
    return job


def _check(segments: list[dict], res: dict, lanes: int) -> dict:
    """Compare every recorded transfer with the golden model; return counts."""
    counts = {"formats": len({str(s["fmt"]) for s in segments if s["fmt"] is not None}),
              "encoded": 0, "decoded": 0, "lost_to_reset": 0, "cycles": int(res["cycles"])}
    problems = []
    for side in ("c", "d"):
        for i, s in enumerate(segments):
            got_in, got_out = [], []
            for j in range(lanes):
                sel = res[f"{side}_{j}_seg"] == i
                got_in.append(res[f"{side}_{j}_in"][sel])
                got_out.append(res[f"{side}_{j}_out"][sel])
            vin = np.concatenate(got_in)
            vout = np.concatenate(got_out)
            if s["error"]:
                assert vin.size == 0, f"segment {i}: values accepted under an illegal format"
                continue
            fmt = s["fmt"]
            if side == "c":
                exp = expected_encode(vin.astype(np.uint32).view(np.float32), fmt)
                counts["encoded"] += vin.size
            else:
                exp = expected_decode(vin, fmt)
                counts["decoded"] += vin.size
            bad = np.nonzero(exp != vout)[0]
            for b in bad[:5]:
                what = "encode" if side == "c" else "decode"
                problems.append(f"{fmt}: {what}(0x{int(vin[b]):08x}) RTL 0x{int(vout[b]):x} emulator 0x{int(exp[b]):x}")
            if bad.size > 5:
                problems.append(f"{fmt}: ... {bad.size} mismatches on the {side} side")
            if s["reset_at"] < 0:
                offered = np.sort(s[side])
                assert np.array_equal(np.sort(vin), offered), \
                    f"segment {i} ({fmt}) side {side}: accepted values differ from those offered (lost or duplicated)"
    counts["lost_to_reset"] = int(sum(res[f"{side}_{j}_lost"] for side in ("c", "d") for j in range(lanes)))
    assert not problems, "RTL disagrees with the emulator:\n" + "\n".join(problems[:40])
    return counts


def _save(name: str, counts: dict) -> None:
    out = SIM_BUILD / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(counts, indent=2) + "\n")


def _sweep(level: str, name: str, n_random: int, seed: int, max_formats: int | None = None,
           limit_bits: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    fmts = sweep_formats(level)
    if max_formats is not None and len(fmts) > max_formats:
        keep = sorted(rng.choice(len(fmts), size=max_formats, replace=False))
        fmts = list(sieve.PRESETS.values()) + [fmts[i] for i in keep]
    segments = [_segment(f, rng, n_random, limit_bits=limit_bits) for f in fmts]
    res = run_job("lanes8", _job(segments, seed), name)
    counts = _check(segments, res, 8)
    _save(name, counts)
    return counts


def test_sweep_ci():
    """~60 formats (every exp width, presets, all policies): corners + random, codes <= 12 bits exhaustive."""
    counts = _sweep("ci", "sweep_ci", n_random=256, seed=11)
    assert counts["formats"] >= 50 and counts["encoded"] > 30_000 and counts["decoded"] > 50_000


def test_streaming_stalls_reset_and_format_changes():
    """100 k values with random stalls on both sides; format changes in flight; reset; illegal record."""
    rng = np.random.default_rng(5)
    fa = sieve.Format.parse("se4m3b7")
    fb = sieve.Format.parse("float8_e5m2")
    fc = sieve.Format.parse("ue5m10b20+sub+rtz")
    fd = sieve.Format.parse("se8m7b128")

    def big(fmt, n, **kw):
        vals = random_values(fmt, rng, n)
        codes = rng.integers(0, 1 << fmt.width, n, dtype=np.uint64)
        return _segment(fmt, rng, 0, comp_values=vals, dec_codes=codes, **kw)

    illegal = {"fmt": None, "record": pack_fields({"exp_bits": 4, "man_bits": 3, "bias": 7, "signed": 0,
                                                  "rounding": 0, "subnormals": 0, "overflow": 0, "specials": 3}),
               "error": 1, "c": np.zeros(8, np.uint64), "d": np.zeros(8, np.uint64),
               "p_valid": 1.0, "p_ready": 1.0, "reset_at": -1, "cfg_early": False}
    segments = [
        big(fa, 10_000, p_valid=0.7, p_ready=0.6, cfg_early=True),
        big(fb, 10_000, p_valid=0.5, p_ready=0.9, cfg_early=True),
        big(fc, 10_000, p_valid=0.9, p_ready=0.5, reset_at=6_000),
        illegal,
        big(fd, 10_000, p_valid=0.8, p_ready=0.8, cfg_early=True),
        big(fa, 10_000, p_valid=1.0, p_ready=0.7),
    ]
    total = sum(s["c"].size + s["d"].size for s in segments)
    assert total >= 100_000
    res = run_job("lanes8", _job(segments, 5), "streaming")
    counts = _check(segments, res, 8)
    assert counts["lost_to_reset"] > 0, "the reset hit an empty pipeline: the test proved nothing"
    assert counts["encoded"] + counts["decoded"] + counts["lost_to_reset"] >= 100_000 - 16
    assert max(res["cfg_wait"]) > 0, "no format change waited for values in flight"
    _save("streaming", counts)


def test_lanes1_full_rate():
    """One lane at full rate: one value per clock with no bubbles (cycles ~ values + latency)."""
    rng = np.random.default_rng(3)
    fmt = sieve.Format.parse("se5m2b15+sub+ieee+ovinf")
    n = 2000
    seg = _segment(fmt, rng, 0, comp_values=random_values(fmt, rng, n),
                   dec_codes=rng.integers(0, 256, n, dtype=np.uint64))
    res = run_job("lanes1", _job([seg], 3), "full_rate")
    counts = _check([seg], res, 1)
    from sieve_hw.generate import latency
    # the format load takes ConstCalc.LATENCY cycles (the tb checks that exactly), then no bubbles
    bound = n + max(latency("lanes1").values()) + ConstCalc.LATENCY + 3
    assert counts["cycles"] <= bound, f"{counts['cycles']} cycles for {n} values: bubbles"
    _save("full_rate", counts)


#: depths both engines offer, each through an 8-lane unit of that depth (``lanes8_s<N>``
#: sets both engines); a depth only one engine offers must be its default, which the tests
#: above cover through ``lanes8``
SHARED_DEPTHS = sorted(set(DEPTHS["compressor"]) & set(DEPTHS["decompressor"]))


def test_depths_only_one_engine_offers_are_defaults():
    for engine, cls in (("compressor", Compressor), ("decompressor", Decompressor)):
        assert set(DEPTHS[engine]) - set(SHARED_DEPTHS) <= {cls.DEFAULT_STAGES}


@pytest.mark.parametrize("stages", SHARED_DEPTHS)
def test_every_depth_matches_emulator(stages):
    """The ci format sweep (corners and random fp32 with stalls on both sides, format changes in
    flight, every code of formats up to 8 bits, 512 codes of wider ones) through engines of each depth."""
    rng = np.random.default_rng(100 + stages)
    segments = [_segment(f, rng, 32, p_valid=0.85, p_ready=0.85, cfg_early=True,
                         dec_codes=decode_codes(f, rng, limit_bits=8, sample=512))
                for f in sweep_formats("ci")]
    res = run_job(f"lanes8_s{stages}", _job(segments, 100 + stages), f"depth{stages}")
    counts = _check(segments, res, 8)
    assert counts["formats"] >= 50 and counts["encoded"] > 10_000 and counts["decoded"] > 10_000
    _save(f"depth{stages}", counts)


@pytest.mark.slow
def test_sweep_full():
    """1,500 formats drawn from the full grid (every exp width x 10 mantissa widths x every
    policy x signed x rounding x subnormals x lowest/default/highest bias; ~11.8 k in all)."""
    counts = _sweep("full", "sweep_full", n_random=128, seed=17, max_formats=1500, limit_bits=10)
    assert counts["formats"] > 1400


def test_format_layout_width():
    assert FORMAT_LAYOUT.size == 25
