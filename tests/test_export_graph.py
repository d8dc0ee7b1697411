"""The ONNX decode and rounding subgraphs, run in onnxruntime, against the golden emulator.

Everything is compared bit for bit (uint32 views): -0, NaN signs and payloads included.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper

import sieve
from sieve import Format
from sieve.export.onnx_graph import GraphBuilder
from sieve.export.rounding import ACTIVATION_OPSET, add_blocked_rounding, add_rounding, blocked_eligible, rounding_method
from sieve.export.weight_decode import (WEIGHT_OPSET, CodesItem, add_codes_decode, add_fields_decodes, add_weight_decode,
                                        add_weight_decodes, fields_eligible)
from tests.formats import formats, small_formats

# one of every policy, widths 1..32, the presets, biases far from the default
ROUND_FORMATS = [
    "e4m3", "ue4m3b5", "e5m2", "e2m1", "e3m0", "ue4m0b8", "e1m0", "ue1m0", "e1m2", "e7m1",
    "e4m3+sub", "e4m3+rtz", "e4m3b11+sub+rtz", "ue3m2b-2+rtz", "e3m4b20", "ue5m6b40+sub",
    "e4m22b-100", "e2m23b-120", "e8m20b127+ieee", "ue8m20b127+sub+ieee+ovnan", "e8m7b127+ieee+sub+ovinf",
    "e5m10+sub", "e6m9b60+sub", "e4m3+fn", "e4m3+fn+ovnan", "ue4m3+fn+ovnan", "e5m2+ieee",
    "ue4m3+ieee", "e5m2+sub+fnuz", "e3m0+fn+ovnan", "e2m0+sub+rtz", "e8m1b127+sub+ieee",
    *sieve.PRESETS,
]


def _session(b: GraphBuilder, inputs: list[str], outputs: list[str], opset: int,
             shape=("n",)) -> ort.InferenceSession:
    graph = helper.make_graph(
        b.nodes, "g", [helper.make_tensor_value_info(i, TensorProto.FLOAT, list(shape)) for i in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(shape)) for o in outputs],
        initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _values(fmt: Format, seed: int = 0, random: int = 1 << 17, stride: int = 65521) -> np.ndarray:
    """Corners, every representable value and midpoint +-2 ulps, random and strided bit patterns."""
    rng = np.random.default_rng(seed)
    parts = [rng.integers(0, 2**32, random, dtype=np.uint64).astype(np.uint32),
             np.arange(seed % stride, 2**32, stride, dtype=np.uint64).astype(np.uint32)]
    special = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,
               0x7FFFFFFF, 0xFFFFFFFF, 1, 0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF]
    for v in (fmt.min_normal, fmt.min_normal / 2, fmt.max_value, fmt.min_value, fmt.min_value / 2):
        bits = int(np.float32(v).view(np.uint32))
        special += [(bits + d) & 0x7FFFFFFF for d in range(-2, 3)]
    parts.append(np.array(special, dtype=np.uint64).astype(np.uint32))
    if fmt.width <= 16:
        table = sieve.decode_table(fmt)
        mags = np.unique(np.abs(table[np.isfinite(table)]).astype(np.float64))
        if mags.size > 2048:  # wide formats: a sample of neighbouring pairs keeps the test fast
            start = np.random.default_rng(seed).integers(0, mags.size - 1, 2048)
            mags = np.unique(np.concatenate([mags[start], mags[start + 1], mags[:64], mags[-64:]]))
        mids = ((mags[1:] + mags[:-1]) / 2).astype(np.float32)
        for base in (mags.astype(np.float32), mids):
            bits = base.view(np.uint32).astype(np.int64)
            for d in range(-2, 3):
                parts.append(np.clip(bits + d, 0, 0x7FFFFFFF).astype(np.uint32))
    pos = np.concatenate(parts)
    return np.concatenate([pos, pos | np.uint32(0x80000000)]).view(np.float32)


def _methods(fmt: Format) -> list[str]:
    """Every rounding method valid for ``fmt`` (the chosen one first)."""
    best = rounding_method(fmt)
    return {"fast": ["fast", "veltkamp", "integer"], "veltkamp": ["veltkamp", "integer"]}.get(best, [best])


def _check_rounding(fmts: list[Format], all_methods: bool = True, **kw) -> None:
    b = GraphBuilder()
    outs = []
    for fmt in fmts:
        for m in _methods(fmt) if all_methods else [rounding_method(fmt)]:
            outs.append((fmt, m, add_rounding(b, "x", f"y{len(outs)}", fmt, method=m)))
    sess = _session(b, ["x"], [o for _, _, o in outs], ACTIVATION_OPSET)
    xs = {fmt: _values(fmt, seed=i, **kw) for i, fmt in enumerate(fmts)}
    # one input per format family would need one session each; run all outputs on each value set
    for fmt, values in xs.items():
        got = dict(zip([o for _, _, o in outs], sess.run(None, {"x": values})))
        ref = sieve.quantize(values, fmt).view(np.uint32)
        for f2, method, out in outs:
            if f2 != fmt:
                continue
            bad = np.nonzero(got[out].view(np.uint32) != ref)[0]
            assert bad.size == 0, (
                f"{fmt} ({method}): {bad.size} of {values.size} differ, e.g. x={values.view(np.uint32)[bad[0]]:#x}"
                f" want {ref[bad[0]]:#x} got {got[out].view(np.uint32)[bad[0]]:#x}")


@pytest.mark.parametrize("group", range(4))
def test_rounding_bit_identical_to_emulator(group):
    fmts = [Format.parse(f) for f in ROUND_FORMATS[group::4]]
    _check_rounding(fmts)


def _small_formats() -> list[Format]:
    return [f for f in small_formats(max_width=8) if f.min_exponent >= -126]


def test_rounding_small_formats_sample():
    """A fixed fifth of every legal policy combination up to 8 bits (all of them: the slow test)."""
    fmts = _small_formats()[::5]
    for start in range(0, len(fmts), 64):
        _check_rounding(fmts[start:start + 64], all_methods=False, random=1 << 10, stride=(1 << 22) + 15)


@pytest.mark.slow
def test_rounding_every_small_format():
    """Every legal policy combination up to 8 bits (biases kept in float32's normal range)."""
    fmts = _small_formats()
    for start in range(0, len(fmts), 64):
        _check_rounding(fmts[start:start + 64], all_methods=False, random=1 << 10, stride=(1 << 22) + 15)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(formats(max_width=32))
def test_rounding_random_formats(fmt):
    if fmt.min_exponent < -126:
        with pytest.raises(ValueError, match="smallest normal"):
            add_rounding(GraphBuilder(), "x", "y", fmt)
        return
    _check_rounding([fmt], random=1 << 12, stride=(1 << 20) + 7)


def test_veltkamp_is_used_only_where_proven():
    assert rounding_method(Format.parse("e4m3")) == "fast"
    assert rounding_method(Format.parse("ue4m3b5")) == "fast"
    assert rounding_method(Format.parse("e4m3+sub")) == "veltkamp"
    assert rounding_method(Format.parse("e4m3+fn+ovnan")) == "veltkamp"
    assert rounding_method(Format.parse("e3m0")) == "integer"      # ties follow fp32 exponent parity
    assert rounding_method(Format.parse("e4m3+rtz")) == "integer"  # truncation
    assert rounding_method(Format.parse("bfloat16")) == "integer"  # 2^128 * (2^16+1) would overflow
    with pytest.raises(ValueError, match="not exact"):
        add_rounding(GraphBuilder(), "x", "y", Format.parse("e3m0"), method="veltkamp")
    with pytest.raises(ValueError, match="corner cases"):
        add_rounding(GraphBuilder(), "x", "y", Format.parse("e4m3+sub"), method="fast")


@pytest.mark.slow
@pytest.mark.parametrize("text", ["e4m3", "ue4m3b5", "e5m2", "e3m0"])
def test_rounding_exhaustive_all_float32(text):
    """All 2^32 float32 bit patterns (about a minute per format)."""
    fmt = Format.parse(text)
    b = GraphBuilder()
    add_rounding(b, "x", "y", fmt)
    sess = _session(b, ["x"], ["y"], ACTIVATION_OPSET)
    chunk = 1 << 24
    for start in range(0, 1 << 32, chunk):
        x = np.arange(start, start + chunk, dtype=np.uint64).astype(np.uint32).view(np.float32)
        got = sess.run(None, {"x": x})[0].view(np.uint32)
        ref = sieve.quantize(x, fmt).view(np.uint32)
        assert np.array_equal(got, ref), f"{fmt}: first mismatch at {x.view(np.uint32)[np.argmax(got != ref)]:#x}"


# ---------------------------------------------------------------------------- blocked rounding
BLOCKED_FORMATS = ["ue3m2b5", "ue3m3b5", "ue3m4b6", "ue2m1b2", "ue4m6b13", "ue3m1b5", "ue4m3b5", "ue5m2b20",
                   "ue3m6b5", "ue2m22b3", "ue4m1b-10", "ue5m3b60"]
CHANNELS = 16


def _blocked_session(fmt: Format, optimized: str | None = None) -> ort.InferenceSession:
    """The blocked rounding of an (n, 16, 64, 64) tensor, as onnxruntime optimizes it."""
    b = GraphBuilder()
    add_blocked_rounding(b, "x", "y", fmt, CHANNELS)
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", CHANNELS, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", CHANNELS, 64, 64])],
                              initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", WEIGHT_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _blocked_check(sess: ort.InferenceSession, fmt: Format, bits: np.ndarray) -> None:
    x = bits.view(np.float32)
    x = x[~np.isnan(x)]
    block = CHANNELS * 64 * 64
    n = -(-x.size // block) * block
    xs = np.resize(x, n).reshape(-1, CHANNELS, 64, 64)
    got = sess.run(None, {"x": xs})[0].reshape(-1).view(np.uint32)
    ref = sieve.quantize(xs.reshape(-1), fmt).view(np.uint32)
    bad = np.nonzero(got != ref)[0]
    assert bad.size == 0, (f"{fmt}: {bad.size} differ, e.g. x={xs.reshape(-1).view(np.uint32)[bad[0]]:#x}"
                           f" want {ref[bad[0]]:#x} got {got[bad[0]]:#x}")


@pytest.mark.parametrize("text", BLOCKED_FORMATS)
def test_blocked_rounding_bit_identical_on_finite_inputs(text, tmp_path):
    """The NCHWc-friendly rounding (depthwise Conv + Clip, Adds that onnxruntime fuses into the
    Convs or runs blocked) equals sieve.quantize on every non-NaN input tried, and onnxruntime runs
    it as four blocked Convs and one blocked Add, with no layout reorder inside."""
    fmt = Format.parse(text)
    assert blocked_eligible(fmt)
    sess = _blocked_session(fmt, optimized=str(tmp_path / "opt.onnx"))
    ops = sorted(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops == ["Add"] + ["Conv"] * 4 + ["ReorderInput", "ReorderOutput"], ops  # reorders only at the edges
    values = _values(fmt, random=1 << 16, stride=(1 << 20) + 7).view(np.uint32)
    _blocked_check(sess, fmt, values)


def test_blocked_rounding_scope():
    assert not blocked_eligible(Format.parse("e4m3"))          # signed: the elementwise chain
    assert not blocked_eligible(Format.parse("ue4m3b5+sub"))   # subnormals
    assert not blocked_eligible(Format.parse("ue3m0b2"))       # no mantissa bit: no Veltkamp
    sess = _blocked_session(Format.parse("ue3m2b5"))
    x = np.full((1, CHANNELS, 64, 64), np.nan, np.float32)
    assert np.isnan(sess.run(None, {"x": x})[0]).all()  # why the exporter proves its inputs finite


@pytest.mark.slow
@pytest.mark.parametrize("text", ["ue3m2b5", "ue4m6b13"])
def test_blocked_rounding_exhaustive_finite_float32(text):
    """Every finite float32 and both infinities (2^32 - 2^24 + 2 patterns), a few minutes each."""
    fmt = Format.parse(text)
    sess = _blocked_session(fmt)
    chunk = 1 << 24
    for start in range(0, 1 << 32, chunk):
        _blocked_check(sess, fmt, np.arange(start, start + chunk, dtype=np.uint64).astype(np.uint32))


# ---------------------------------------------------------------------------- weights
DECODE_FORMATS = ["ue1m0", "e1m0", "e2m1", "e3m2", "e4m3", "ue4m3b3", "e5m2+ieee+sub+ovinf", "e4m3+fn+sub+ovnan",
                  "e4m3+fnuz+sub+ovnan", "e5m4", "e6m5b40+sub", "e5m10+sub+ieee", "e8m7b127+sub+ieee+ovinf",
                  "e4m11", "ue5m10b20+fn", "e8m15b128+sub+fn", "e6m17b20+fnuz+sub", "e8m23b127+sub+ieee+ovinf",
                  "ue8m23b127+sub+ieee", "e7m16b60", *sieve.PRESETS]


@pytest.mark.parametrize("text", DECODE_FORMATS)
def test_decode_every_code_bit_identical(text):
    """Every code (all 2^w for w <= 16, a sample for wider) decodes exactly as sieve.decode, both ways."""
    fmt = Format.parse(text)
    if fmt.width <= 16:
        codes = np.arange(1 << fmt.width, dtype=np.uint64)
    else:
        rng = np.random.default_rng(fmt.width)
        codes = np.concatenate([rng.integers(0, 1 << fmt.width, 200_000, dtype=np.uint64),
                                np.arange(0, 1 << 12, dtype=np.uint64), (1 << fmt.width) - 1 - np.arange(1 << 12),
                                (1 << (fmt.width - 1)) + np.arange(-2048, 2048)])
    codes = codes.astype(fmt.code_dtype)
    methods = ["arithmetic"] + (["table"] if fmt.width <= 16 else [])
    b = GraphBuilder()
    names = [add_codes_decode(b, method, codes, fmt, (codes.size,), name=f"t_{method}", method=method)[0]
             for method in methods]
    if fields_eligible(fmt):
        names.append(add_fields_decodes(b, [(CodesItem("fields", codes, (codes.size,), "t_fields"), fmt)])[0][0])
        methods.append("fields")
    sess = _session(b, [], methods, WEIGHT_OPSET, shape=(codes.size,))
    ref = sieve.decode(codes, fmt).view(np.uint32)
    for method, got in zip(methods, sess.run(None, {})):
        bad = np.nonzero(got.view(np.uint32) != ref)[0]
        assert bad.size == 0, f"{fmt} {method}: code {codes[bad[0]]:#x} want {ref[bad[0]]:#x} got {got.view(np.uint32)[bad[0]]:#x}"
    packed = [t for t in b.initializers if t.name in names]
    assert len(packed) == len(methods) and all(t.data_type == TensorProto.UINT8 for t in packed)
    assert all(len(t.raw_data) == (codes.size * fmt.width + 7) // 8 for t in packed)


@pytest.mark.parametrize("text", ["e2m1", "e3m3", "ue4m2b3", "e4m3", "e5m6", "e5m10", "e7m13b60"])
@pytest.mark.parametrize("n", [1, 7, 1000, 4099])
def test_weight_decode_equals_quantize(text, n):
    fmt = Format.parse(text)
    rng = np.random.default_rng(n)
    w = (rng.standard_normal(n) * 10.0 ** rng.integers(-6, 3, n)).astype(np.float32).reshape(n, 1, 1)
    w.reshape(-1)[: min(n, 3)] = [0.0, -0.0, 1e-40][: min(n, 3)]
    b = GraphBuilder()
    rec = add_weight_decode(b, "w", w, fmt, original_name="layer.weight")
    assert rec.bytes_stored == (n * fmt.width + 7) // 8
    got = _session(b, [], ["w"], WEIGHT_OPSET, shape=w.shape).run(None, {})[0]
    assert got.shape == w.shape
    np.testing.assert_array_equal(got.view(np.uint32), sieve.quantize(w, fmt).view(np.uint32))
    decode_docs = [nd.doc_string for nd in b.nodes if nd.doc_string]
    assert decode_docs == [f"sieve: decode layer.weight from {fmt} ({n} codes, {rec.bytes_stored} bytes, {rec.method})"]


def test_constants_are_shared_between_tensors():
    b = GraphBuilder()
    fmt = Format.parse("e3m2")
    for i in range(3):
        add_weight_decode(b, f"w{i}", np.ones((10 + i,), np.float32), fmt)
    tables = [t for t in b.initializers if len(t.dims) == 1 and t.dims[0] == 1 << fmt.width
              and t.data_type == TensorProto.FLOAT]
    assert len(tables) == 1  # one decode table per format, not per tensor


@pytest.mark.parametrize("text", ["ue1m0", "e2m0", "e2m1", "e3m1", "e4m2", "e3m6", "e4m6", "e4m8", "e5m7", "e6m8",
                                  "e7m8b60", "e7m16b60"])
def test_tensors_of_one_format_share_a_decode_chain(text):
    """Several tensors of one Format (sizes that leave partial groups): one chain, exact values."""
    fmt = Format.parse(text)
    rng = np.random.default_rng(fmt.width)
    shapes = [(1,), (7, 1), (3, 5, 7), (1001,), (16, 8)]
    weights = [(f"t{i}.weight", (rng.standard_normal(s) * 0.3).astype(np.float32), fmt) for i, s in enumerate(shapes)]
    b = GraphBuilder()
    recs = add_weight_decodes(b, weights, method="table" if fmt.width <= 8 else "arithmetic")
    assert [r.bytes_stored for r in recs] == [(int(np.prod(s)) * fmt.width + 7) // 8 for s in shapes]
    assert sum(n.op_type == "Gather" for n in b.nodes) <= 2  # one decode (table, or lead+scale), not one per tensor
    graph = helper.make_graph(b.nodes, "g", [], [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(w.shape))
                                                 for n, w, _ in weights], initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", WEIGHT_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    outs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    for (name, w, _), got in zip(weights, outs):
        np.testing.assert_array_equal(got.view(np.uint32), sieve.quantize(w, fmt).view(np.uint32), err_msg=name)


FIELD_FORMATS = ["se3m6b7", "se4m6b16", "se3m1b8", "se2m1b5", "ue3m2b5", "e4m3+sub", "ue1m0", "e1m0",
                 "e5m10+sub", "e8m15b135+sub", "ue3m2b-2", "e7m16b60", "e2m0+sub", "e3m0b-20"]


def test_formats_share_one_field_decode():
    """Tensors of many Formats (signed, unsigned, subnormals, partial bytes) decode through ONE
    chain: the graph does not grow with the number of Formats, and every value is exact."""
    rng = np.random.default_rng(5)
    weights = []
    for i, text in enumerate(FIELD_FORMATS):
        fmt = Format.parse(text)
        w = (rng.standard_normal(37 + 11 * i) * 10.0 ** rng.integers(-8, 4, 37 + 11 * i)).astype(np.float32)
        w[:3] = [0.0, -0.0, 1e-40]
        if fmt.width <= 12:  # every value of the format, both signs
            values = sieve.decode_table(fmt)
            w = np.concatenate([w, values[np.isfinite(values)]]).astype(np.float32)
        weights.append((f"t{i}.weight", w.reshape(-1, 1) if i % 2 else w, fmt))
    b = GraphBuilder()
    recs = add_weight_decodes(b, weights)
    assert {r.method for r in recs} == {"fields"}
    assert sum(n.op_type == "Gather" for n in b.nodes) == 3  # parameters, bits, powers of two
    graph = helper.make_graph(b.nodes, "g", [], [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(w.shape))
                                                 for n, w, _ in weights], initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", WEIGHT_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    outs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})
    for (name, w, fmt), got, rec in zip(weights, outs, recs):
        assert rec.bytes_stored == (w.size * fmt.width + 7) // 8
        np.testing.assert_array_equal(got.view(np.uint32), sieve.quantize(w, fmt).view(np.uint32), err_msg=name)


def test_field_decode_refuses_special_codes():
    assert not fields_eligible(Format.parse("e4m3+fn")) and not fields_eligible(Format.parse("e5m2+ieee"))
    with pytest.raises(ValueError):
        add_weight_decodes(GraphBuilder(), [("w", np.ones(4, np.float32), Format.parse("e4m3+fn"))], method="fields")
