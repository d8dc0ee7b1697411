"""Block-scaled (OCP MX) and per-channel-bias formats: spec examples worked by hand, element
types and scales against ml_dtypes, an independent MX reference built on ml_dtypes, exhaustive
small-block checks, NaN/zero/subnormal blocks, and torch bit-identity."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from sieve import Format, FormatError, PRESETS
from sieve.blockfmt import (MX_ELEMENTS, OCP_MX, BlockFormat, ChannelFormat, decode, encode, parse_format,
                            quantize, quantize_torch, scale_values, stored_bits)
from sieve.qeval import quantize_tensor

ML_TYPES = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2,
            "fp6_e3m2": ml_dtypes.float6_e3m2fn, "fp6_e2m3": ml_dtypes.float6_e2m3fn,
            "fp4_e2m1": ml_dtypes.float4_e2m1fn}
EMAX = {"fp8_e4m3": 8, "fp8_e5m2": 15, "fp6_e3m2": 4, "fp6_e2m3": 2, "fp4_e2m1": 2}  # OCP MX Table 1


def f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def bits(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


# ---------------------------------------------------------------------------- hand-worked
def test_mxfp8_e4m3_worked_example():
    fmt = OCP_MX["mxfp8_e4m3"]
    v = np.zeros(32, np.float32)
    v[:3] = [3.0, 0.001, -0.75]
    codes, scales = encode(v, fmt)
    # max|V| = 3 -> floor(log2 3) = 1; emax(E4M3) = 8 -> shared exponent 1 - 8 = -7, E8M0 code 127-7 = 120
    assert scales.tolist() == [120]
    # 3 / 2^-7 = 384 = 1.5 * 2^8 -> exponent field 8+7 = 15 (1111), mantissa .100 -> 0 1111 100 = 0x7C
    assert codes[0] == 0x7C
    # 0.001 * 128 = 0.128 = 1.024 * 2^-3 -> mantissa 1.024*8 = 8.19 rounds to 8 -> 1.000 * 2^-3:
    # field -3+7 = 4 (0100), mantissa 000 -> 0x20; decodes to 0.125 * 2^-7 = 2^-10
    assert codes[1] == 0x20
    # -0.75 * 128 = -96 = -1.5 * 2^6 -> sign 1, field 13 (1101), mantissa 100 -> 1 1101 100 = 0xEC
    assert codes[2] == 0xEC
    assert (codes[3:] == 0).all()
    out = decode((codes, scales), fmt)
    assert out[:3].tolist() == [3.0, 2.0 ** -10, -0.75]


def test_mxfp8_e4m3_overflow_saturates():
    fmt = OCP_MX["mxfp8_e4m3"]
    # max 500: floor(log2 500) = 8 -> shared exponent 0, X = 1 (code 127).  500 > Max(E4M3) = 448
    # and 470 rounds to 480 > 448: both clamp to 448 (code 0x7E), as OCP MX §6.3 clamps normal numbers
    # (E4M3's own overflow rule would give NaN, 0x7F)
    codes, scales = encode(f32(500.0, -470.0, 256.0), fmt)
    assert scales.tolist() == [127]
    assert codes.tolist() == [0x7E, 0xFE, 0x78]
    assert decode((codes, scales), fmt).tolist() == [448.0, -448.0, 256.0]


def test_mxfp4_e2m1_worked_example():
    fmt = OCP_MX["mxfp4_e2m1"]
    # E2M1 values: 0, 0.5 (subnormal), 1, 1.5, 2, 3, 4, 6; emax = 2.  max 6 -> floor(log2 6) = 2 ->
    # shared exponent 0, X = 1.  6 -> 0 11 1 = 0x7; 1 -> 0 01 0 = 0x2; 0.3 -> nearest 0.5 = 0x1;
    # -0.25 -> tie between 0 and 0.5, even -> -0 = 0x8; 5 -> tie between 4 (0x6) and 6 (0x7), even -> 4
    codes, scales = encode(f32(6.0, 1.0, 0.3, -0.25, 5.0), fmt)
    assert scales.tolist() == [127]
    assert codes.tolist() == [0x7, 0x2, 0x1, 0x8, 0x6]
    out = decode((codes, scales), fmt)
    assert bits(out).tolist() == bits(f32(6.0, 1.0, 0.5, -0.0, 4.0)).tolist()


def test_mxfp6_and_e5m2_scales():
    # E5M2: emax 15; max 1.0 -> shared exponent 0 - 15 = -15 -> code 112; 1.0 / 2^-15 = 2^15 = 0 11110 00
    codes, scales = encode(f32(1.0, 0.5), OCP_MX["mxfp8_e5m2"])
    assert scales.tolist() == [112] and codes.tolist() == [0x78, 0x74]
    # E3M2: emax 4; max 40 = 1.25 * 2^5 -> shared exponent 1 -> code 128; 40/2 = 20 = 1.25*2^4 -> 0 111 01
    codes, scales = encode(f32(40.0, -1.0), OCP_MX["mxfp6_e3m2"])
    assert scales.tolist() == [128] and codes[0] == 0b011101
    # (-1.0 / 2 = -0.5 = -1.0*2^-1 -> sign 1, field -1+3 = 2 (010), mantissa 00 -> 1 010 00 = 0b101000)
    assert codes[1] == 0b101000
    # E2M3: emax 2; max 7.5 = 1.875*2^2 -> shared exponent 0; 7.5 = 0 11 111 (its Max)
    codes, scales = encode(f32(7.5), OCP_MX["mxfp6_e2m3"])
    assert scales.tolist() == [127] and codes.tolist() == [0b011111]


def test_zero_nan_inf_and_subnormal_blocks():
    fmt = BlockFormat(MX_ELEMENTS["fp8_e4m3"], 4)
    x = f32(0.0, -0.0, 0.0, 0.0,                       # zero block -> smallest scale, code 0
            1.0, np.nan, 2.0, 3.0,                     # NaN -> scale NaN (255), whole block NaN
            -np.inf, 1.0, 0.0, 0.0,                    # Inf -> NaN scale too
            2.0 ** -130, -(2.0 ** -134), 0.0, 2.0 ** -149)  # max below 2^-126 -> scale 2^-127 (code 0)
    codes, scales = encode(x, fmt)
    assert scales.tolist() == [0, 255, 255, 0]
    assert codes[4:12].tolist() == [0] * 8
    out = decode((codes, scales), fmt)
    assert bits(out[:4]).tolist() == bits(x[:4]).tolist()  # signed zeros kept
    assert np.isnan(out[4:12]).all()
    # 2^-130 / 2^-127 = 2^-3 -> E4M3 0x20, decoded back exactly (a float32 subnormal); -2^-134 / 2^-127 =
    # -2^-7, below E4M3's smallest normal 2^-6 -> subnormal -(4 * 2^-9) = 1 0000 100; 2^-149 / 2^-127 = 2^-22, far below 2^-10 -> 0
    assert codes[12:].tolist() == [0x20, 0x84, 0x00, 0x00]
    assert bits(out[12:]).tolist() == bits(f32(2.0 ** -130, -(2.0 ** -134), 0.0, 0.0)).tolist()


def test_largest_scale_and_element_nan_codes():
    fmt = OCP_MX["mxfp8_e4m3"]
    big = np.float32(1.5 * 2.0 ** 127)
    codes, scales = encode(f32(big, 1.0), fmt)
    assert scales.tolist() == [127 + 127 - 8]  # floor(log2) = 127 -> shared 119
    assert decode((codes, scales), fmt)[0] == big
    # an element NaN code (E4M3 s1111111) with a finite scale decodes to NaN
    out = decode((np.array([0x7F, 0x01], np.uint8), np.array([127], np.uint8)), fmt)
    assert np.isnan(out[0]) and out[1] == 2.0 ** -9


# ---------------------------------------------------------------------------- ml_dtypes
@pytest.mark.parametrize("name", sorted(MX_ELEMENTS))
def test_element_types_match_ml_dtypes(name):
    el, T = MX_ELEMENTS[name], ML_TYPES[name]
    assert el.max_exponent == EMAX[name]
    every = np.arange(1 << el.width, dtype=np.uint8)
    ref = every.view(T).astype(np.float32) if el.width == 8 else _ml_decode(every, T)
    got = decode(every, el)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    assert bits(got[~np.isnan(got)]).tolist() == bits(ref[~np.isnan(ref)]).tolist()
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(200_000) * el.max_value / 3).astype(np.float32)
    x = np.clip(x, -el.max_value, el.max_value)
    assert bits(quantize(x, el)).tolist() == bits(x.astype(T).astype(np.float32)).tolist()
    # beyond Max: the MX element saturates (ml_dtypes' own E4M3/E5M2 cast gives NaN/Inf)
    assert quantize(f32(el.max_value * 4, -np.float32(el.max_value) * 4), el).tolist() == [el.max_value, -el.max_value]


def _ml_decode(codes: np.ndarray, T) -> np.ndarray:
    """Sub-byte ml_dtypes types: their value table, built by casting every value they hold."""
    table = {int(np.array(v, dtype=T).view(np.uint8)): np.float32(v) for v in
             np.array(range(1 << 8), dtype=np.uint8).view(T).astype(np.float32)}
    return np.array([table[int(c)] for c in codes], dtype=np.float32)


def test_e8m0_scale_matches_ml_dtypes():
    every = np.arange(256, dtype=np.uint8)
    ref = every.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    got = scale_values(every)
    assert np.isnan(got[255]) and np.isnan(ref[255])
    assert bits(got[:255]).tolist() == bits(ref[:255]).tolist()


def reference_mx(v: np.ndarray, name: str, k: int) -> np.ndarray:
    """An independent OCP MX quantizer along the last axis: log2 of the block max, ml_dtypes'
    element cast of the clamped quotient, float64 products rounded once to float32."""
    T, emax = ML_TYPES[name], EMAX[name]
    el_max = float(MX_ELEMENTS[name].max_value)
    out = np.empty_like(v)
    for start in range(0, v.shape[-1], k):
        blk = v[..., start:start + k].astype(np.float64)
        m = np.abs(blk).max(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            e = np.where(m > 0, np.floor(np.log2(np.where(m > 0, m, 1))), -127)
        x = np.ldexp(1.0, np.maximum(e - emax, -127).astype(np.int32))
        p = np.clip(blk / x, -el_max, el_max).astype(np.float32).astype(T).astype(np.float64)
        out[..., start:start + k] = (p * x).astype(np.float32)
    return out


@pytest.mark.parametrize("name", sorted(MX_ELEMENTS))
def test_mx_matches_independent_reference(name):
    fmt = BlockFormat(MX_ELEMENTS[name], 32)
    rng = np.random.default_rng(11)
    spread = np.exp2(rng.integers(-140, 120, (300, 1))).astype(np.float64)  # each row its own range
    v = (rng.standard_normal((300, 70)) * spread * np.exp2(rng.integers(-6, 6, (300, 70)))).astype(np.float32)
    v[5, :] = 0.0
    got = quantize(v, fmt)  # 1-D semantics per row: axis 1 of a 2-D array is the blocked axis
    assert bits(got).tolist() == bits(reference_mx(v, name, 32)).tolist()


@pytest.mark.parametrize("name", sorted(MX_ELEMENTS))
def test_exhaustive_small_blocks(name):
    """k = 2: every pair of element values times a range of scales, against the reference, and
    encode is a fixed point of decode (the encoder's own output re-encodes to the same codes)."""
    el = MX_ELEMENTS[name]
    fmt = BlockFormat(el, 2)
    values = decode(np.arange(1 << el.width), el)
    values = values[np.isfinite(values)]
    pairs = np.stack(np.meshgrid(values, values), -1).reshape(-1, 2)
    for scale in (-127, -100, -3, 0, 5, 90, 127 - EMAX[name] - 1):
        v = (pairs.astype(np.float64) * 2.0 ** scale).astype(np.float32)
        got = quantize(v, fmt)
        assert bits(got).tolist() == bits(reference_mx(v, name, 2)).tolist()
        enc = encode(v, fmt)
        again = encode(decode(enc, fmt), fmt)
        assert np.array_equal(enc[0], again[0]) and np.array_equal(enc[1], again[1])


# ---------------------------------------------------------------------------- layout and text
def test_block_layout_axis1_and_partial_blocks():
    fmt = BlockFormat(Format.parse("e3m2"), 16)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 20, 3, 3)).astype(np.float32)  # I = 20: one full and one 4-element block
    codes, scales = encode(w, fmt)
    assert codes.shape == w.shape and scales.shape == (4, 2, 3, 3)
    # block (o=1, blocks 0 and 1, kh=2, kw=0) is exactly the 1-D encoding of that fibre
    fibre = w[1, :, 2, 0]
    c1, s1 = encode(fibre, fmt)
    assert np.array_equal(codes[1, :, 2, 0], c1) and scales[1, :, 2, 0].tolist() == s1.tolist()
    assert stored_bits(fmt, w.shape) == w.size * 6 + 8 * 4 * 2 * 9


def test_text_forms_round_trip_and_refusals():
    for text in ("mx32:fp8_e4m3", "mx16:se3m2b3", "mx64:fp4_e2m1", "ch4:se4m3b7", "ch2:fp6_e2m3", "se5m2b15"):
        assert str(parse_format(text)) == text
        assert parse_format(str(parse_format(text))) == parse_format(text)
    assert parse_format("mxfp6_e3m2") == BlockFormat(MX_ELEMENTS["fp6_e3m2"], 32)
    assert parse_format("mx:e4m3") == BlockFormat(Format.parse("e4m3"), 32)
    assert parse_format("ch:e4m3b3") == ChannelFormat(Format.parse("e4m3"), 4)  # bias chosen per channel
    for bad in ("mx0:e4m3", "mx32:ue4m3", "ch9:e4m3", "mx32:e4m3b20", "mx32:e4m3+rtz", "mx32:nonsense"):
        with pytest.raises(FormatError):
            parse_format(bad)


# ---------------------------------------------------------------------------- per-channel bias
def test_channel_bias_follows_each_channel():
    fmt = ChannelFormat(Format.parse("e3m3"), 4)
    rng = np.random.default_rng(5)
    base = rng.standard_normal((1, 16, 3, 3)).astype(np.float32)
    w = np.concatenate([base * np.float32(2.0 ** s) for s in (0, -4, 3, -9)])
    codes, biases = encode(w, fmt)
    # scaling a channel by 2^s moves its bias by -s and leaves its codes unchanged
    assert (biases - biases[0]).tolist() == [0, 4, -3, 9]
    assert all(np.array_equal(codes[0], codes[i]) for i in range(4))
    q = decode((codes, biases), fmt)
    assert bits(q[3]).tolist() == bits(q[0] * np.float32(2.0 ** -9)).tolist()
    # per-tensor e3m3 (best single bias) loses the small channels; per-channel keeps them
    tensor = min((quantize(w, Format(3, 3, b)) for b in range(-4, 14)),
                 key=lambda t: float(((t - w) ** 2).sum()))
    rel = lambda t, i: float(((t[i] - w[i]) ** 2).sum() / (w[i] ** 2).sum())
    assert rel(q, 3) < 0.01 < rel(tensor, 3)
    assert stored_bits(fmt, w.shape) == w.size * 7 + 4 * 4 + 8


def test_channel_offsets_clamp_to_bias_bits():
    fmt = ChannelFormat(Format.parse("e3m3"), 2)  # offsets 0..3 from the smallest bias
    w = np.stack([np.full((2, 2), 2.0 ** s, np.float32) for s in (0, -2, -8)])
    _, biases = encode(w, fmt)
    assert (biases - biases.min()).tolist() == [0, 2, 3]
    with pytest.raises(ValueError):
        encode(np.ones(4, np.float32), fmt)


# ---------------------------------------------------------------------------- torch
@pytest.mark.parametrize("text", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1",
                                  "mx16:se3m2b3", "mx64:se2m3b1"])
def test_torch_bit_identical(text):
    fmt = parse_format(text)
    rng = np.random.default_rng(9)
    act = (rng.standard_normal((3, 40, 5, 5)) * np.exp2(rng.integers(-20, 20, (3, 40, 5, 5)))).astype(np.float32)
    act[0, :32, 0, 0] = 0.0
    act[1, 3, 1, 1] = np.nan
    act[2, 35, 2, 2] = -np.inf
    act[2, :32, 3, 3] = np.float32(2.0 ** -140)
    w = rng.standard_normal((6, 70)).astype(np.float32) * np.float32(1e-3)
    for x in (act, w, act[0, :, 0, 0]):
        ref = quantize(x, fmt)
        got = quantize_torch(torch.from_numpy(x), fmt, quantize_tensor).numpy()
        assert bits(got).tolist() == bits(ref).tolist()


def test_torch_channel_format_matches_emulator():
    fmt = parse_format("ch4:e2m3")
    w = np.random.default_rng(1).standard_normal((5, 3, 3, 3)).astype(np.float32)
    got = quantize_torch(torch.from_numpy(w), fmt, quantize_tensor).numpy()
    assert bits(got).tolist() == bits(quantize(w, fmt)).tolist()


def test_presets_unchanged_by_mx_elements():
    # the MX elements share ml_dtypes' layouts but saturate: the scalar presets keep their own rule
    assert MX_ELEMENTS["fp8_e4m3"] == PRESETS["float8_e4m3fn"].with_(overflow="saturate")
    assert MX_ELEMENTS["fp4_e2m1"] == PRESETS["float4_e2m1fn"]


# ---------------------------------------------------------------------------- plans on a model
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 40, 3)
        self.conv2 = torch.nn.Conv2d(40, 8, 3)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


PLAN_TEXT = {"conv1.input": "mxfp8_e4m3", "conv1.weight": "ch4:e3m2", "conv2.input": "mxfp4_e2m1",
             "conv2.weight": "mx16:se3m2b3", "fc.input": "mx32:fp6_e3m2", "fc.weight": "mxfp6_e2m3"}


def test_apply_plan_and_prefix_evaluator_match_emulator():
    from sieve.qeval import PrefixEvaluator, apply_plan

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(6, 3, 8, 8)
    plan = {k: parse_format(v) for k, v in PLAN_TEXT.items()}
    em = lambda t, key: torch.from_numpy(quantize(t.detach().numpy(), plan[key]))
    h = torch.relu(torch.nn.functional.conv2d(em(x, "conv1.input"), em(model.conv1.weight, "conv1.weight"), model.conv1.bias))
    h = torch.relu(torch.nn.functional.conv2d(em(h, "conv2.input"), em(model.conv2.weight, "conv2.weight"), model.conv2.bias))
    want = torch.nn.functional.linear(em(h.flatten(1), "fc.input"), em(model.fc.weight, "fc.weight"), model.fc.bias)
    with torch.no_grad():
        got = apply_plan(model, plan)(x)
    assert torch.equal(got, want)
    ev = PrefixEvaluator(model, x, batch_size=4)
    assert torch.equal(ev.run(plan, checkpoint="conv2.input"), want)
    assert torch.equal(ev.run(plan), want)  # from the stored cut


def test_plan_refuses_channel_format_on_activation():
    from sieve.errors import SieveError
    from sieve.qeval import apply_plan

    with pytest.raises(SieveError, match="for weights"):
        apply_plan(Net(), {"conv2.input": parse_format("ch4:e3m2")})


def test_plan_bits_count_scales_and_biases():
    from sieve.qeval import quantizable_tensors
    from sieve.search.formats import plan_bits

    infos = quantizable_tensors(Net(), (3, 8, 8))
    shapes = {i.name: i.shape for i in infos}
    assert shapes["conv2.input"] == (40, 6, 6) and shapes["conv2.weight"] == (8, 40, 3, 3)
    assert shapes["fc.input"] == (128,)
    plan = {k: parse_format(v) for k, v in PLAN_TEXT.items()}
    bits = plan_bits(plan, infos)
    # conv1.input: 3x8x8 e4m3 + one scale per pixel (3 < 32 channels: a partial block) = 192*8 + 64*8
    # conv1.weight: 40x3x3x3 e3m2 (6 bits) + 40 4-bit biases + an 8-bit base
    # conv2.input: 40x6x6 fp4 + 2 blocks (32 + 8 channels) per pixel; conv2.weight: 8x40x3x3 6-bit + 8*3*9 scales
    # (k = 16: blocks of 16, 16 and 8 input channels)
    # fc.input: 128 fp6 + 4 scales; fc.weight: 10x128 fp6 + 10*4 scales
    weights = (1080 * 6 + 40 * 4 + 8) + (2880 * 6 + 8 * 3 * 9 * 8) + (1280 * 6 + 40 * 8)
    acts = (192 * 8 + 64 * 8) + (1440 * 4 + 2 * 36 * 8) + (128 * 6 + 4 * 8)
    assert bits["total_bits"] == weights + acts
    assert bits["mean_bits_weights"] == weights / (1080 + 2880 + 1280)


def test_family_ladder_candidates():
    from sieve.histograms import ExponentHistogram
    from sieve.search.formats import family_ladder

    hist = ExponentHistogram("w", "weight")
    hist.add(torch.randn(16, 32, 3, 3) * 0.05)
    kinds = {type(c.fmt).__name__ for c in family_ladder(hist, True, "all", 8)}
    assert kinds == {"Format", "ChannelFormat", "BlockFormat"}
    block = [c.fmt for c in family_ladder(hist, True, "block", 8, block=16)]
    assert all(isinstance(f, BlockFormat) and f.block == 16 for f in block)
    assert [f.width for f in block] == list(range(3, 9))
    act = ExponentHistogram("a", "activation")
    act.add(torch.rand(1000))
    assert not any(isinstance(c.fmt, ChannelFormat) for c in family_ladder(act, True, "all", 8))


def test_ocp_baselines_on_a_small_model():
    from sieve.mx_baselines import OCP_BASELINES, ocp_baselines

    torch.manual_seed(1)
    model = Net().eval()
    images = torch.randn(64, 3, 8, 8)
    with torch.no_grad():
        labels = model(images).argmax(1)  # fp32 is right on every image
    res = ocp_baselines(model, images, labels, target=0.9, names=OCP_BASELINES)
    assert list(res) == list(OCP_BASELINES)
    # uniform mxfp8: 8 bits per element plus the scales (conv1's 3 input channels: one scale per pixel)
    assert 8.0 < res["mxfp8_e4m3"]["mean_bits"] < res["mxfp6_e3m2"]["mean_bits"] + 2.01
    assert res["mxfp4_e2m1"]["mean_bits"] < res["mxfp6_e2m3"]["mean_bits"] < res["mxfp8_e5m2"]["mean_bits"]
    v = res["mxfp8_e4m3"]["test"]
    assert v["images"] == 64 and v["reference_correct"] == 64 and v["gains"] == 0
    assert v["correct"] == 64 - v["losses"] and v["holds"] == (v["p_worse"] >= 0.05)
    assert res["mxfp8_e4m3"]["format"] == "mx32:fp8_e4m3"


def test_sieve_top_level_functions_take_layouts():
    import sieve

    x = np.random.default_rng(2).standard_normal((4, 40, 2, 2)).astype(np.float32)
    assert bits(sieve.quantize(x, "mxfp6_e3m2")).tolist() == bits(quantize(x, OCP_MX["mxfp6_e3m2"])).tolist()
    codes, scales = sieve.encode(x, "mx16:fp8_e5m2")
    assert scales.shape == (4, 3, 2, 2)
    assert bits(sieve.decode((codes, scales), "mx16:fp8_e5m2")).tolist() == \
        bits(quantize(x, parse_format("mx16:fp8_e5m2"))).tolist()
    codes, biases = sieve.encode(x, ChannelFormat(Format.parse("e3m3")))
    assert biases.shape == (4,)
    assert sieve.quantize(x, "e4m3").dtype == np.float32  # scalar text still works
    with pytest.raises(TypeError):
        sieve.encode(x, 3)
