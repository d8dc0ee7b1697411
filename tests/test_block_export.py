"""ONNX decode of block-scaled and per-channel weights: onnxruntime rebuilds exactly the
emulator's values from the stored element codes and scales (issue 16)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sieve.blockfmt import parse_format, quantize
from sieve.export.block_decode import add_block_weight_decode, add_channel_weight_decode
from sieve.export.onnx_graph import GraphBuilder
from sieve.export.weight_decode import WEIGHT_OPSET


def _run(b: GraphBuilder, outputs: dict[str, tuple]) -> dict[str, np.ndarray]:
    graph = helper.make_graph(b.nodes, "g", [], [helper.make_tensor_value_info(o, TensorProto.FLOAT, list(s))
                                                 for o, s in outputs.items()], initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", WEIGHT_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip(outputs, sess.run(None, {})))


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = (rng.standard_normal((6, 40, 3, 3)) * np.exp2(rng.integers(-12, 4, (6, 40, 1, 1)))).astype(np.float32)
    conv[0, :32, 0, 0] = 0.0           # a zero block
    conv[1, 5, 1, 1] = np.nan          # a NaN block
    conv[2, :8, 2, 2] = 2.0 ** -135    # a block below 2^-126
    fc = rng.standard_normal((10, 70)).astype(np.float32) * np.float32(0.03)
    return {"conv": conv, "fc": fc}


@pytest.mark.parametrize("text", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1",
                                  "mx16:se3m2b3", "mx64:se4m1b7+sub"])
def test_block_weight_decode_bit_identical(text):
    fmt = parse_format(text)
    b = GraphBuilder()
    records = {}
    for name, w in _weights(3).items():
        records[name] = add_block_weight_decode(b, f"{name}_w", w, fmt, name)
    got = _run(b, {f"{n}_w": w.shape for n, w in _weights(3).items()})
    for name, w in _weights(3).items():
        want = quantize(w, fmt)
        assert got[f"{name}_w"].view(np.uint32).tolist() == want.view(np.uint32).tolist()
        rec = records[name]
        assert rec["element_bytes"] == (w.size * fmt.width + 7) // 8
        assert rec["scales"] == w.shape[0] * -(-w.shape[1] // fmt.block) * int(np.prod(w.shape[2:]))


@pytest.mark.parametrize("text", ["ch4:e3m2", "ch2:e2m3", "ch4:e4m3+sub", "ch3:e5m2"])
def test_channel_weight_decode_bit_identical(text):
    fmt = parse_format(text)
    w = _weights(4)["conv"]
    w = np.nan_to_num(w) * np.exp2(np.arange(-6, 6, 2)).astype(np.float32)[:, None, None, None]
    b = GraphBuilder()
    add_channel_weight_decode(b, "w", w, fmt)
    got = _run(b, {"w": w.shape})["w"]
    assert got.view(np.uint32).tolist() == quantize(w, fmt).view(np.uint32).tolist()
