"""ONNX export of block-scaled (OCP MX) and per-channel-bias formats (issue 16): packed element
codes + E8M0 scales / channel biases decoded in-graph, block-scaled activations rounded in-graph,
onnxruntime bit-identical to the emulated torch model (``sieve.qeval.apply_plan``).

Why the logits can be compared with ``np.array_equal``: the model's weights and images are short
dyadic numbers (a few significant bits at a few scales), so every product and every partial sum
of the small conv/linear layers is exact in float32 whatever order torch and onnxruntime add
them in; what differs between the two can then only come from the formats' rounding, which is
what is tested.  (With random float32 data the two runtimes' summation orders differ in the
last bit; ``tests/test_export.py`` handles that case with a tolerance.)
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sieve.blockfmt import BlockFormat, ChannelFormat, parse_format, quantize, stored_bits
from sieve.errors import SieveError
from sieve.export.block_rounding import add_block_rounding
from sieve.export.exporter import export_onnx, read_records
from sieve.export.inspect import format_table, inspect_onnx
from sieve.export.onnx_graph import GraphBuilder
from sieve.export.rounding import ACTIVATION_OPSET
from sieve.export.verify import decoded_weights, explain, session
from sieve.qeval import apply_plan

SHAPE = (3, 8, 8)
P = parse_format


class Net(nn.Module):
    """conv (3 -> 40) -> conv 1x1 (40 -> 16: blocks of 32 and 16 with a partial last block) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 40, 3, padding=1)
        self.conv2 = nn.Conv2d(40, 16, 1)
        self.pool = nn.MaxPool2d(4)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(self.pool(x).flatten(1))


def _dyadic(shape, bits: int, exp: int, g: torch.Generator) -> torch.Tensor:
    """Integers of ``bits`` bits (and a sign) times 2^(exp - bits)."""
    return torch.randint(-(2 ** bits - 1), 2 ** bits, shape, generator=g).float() * 2.0 ** (exp - bits)


def net() -> Net:
    g = torch.Generator().manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        # per output channel scales 1, 1/2, 1/4: the per-channel biases have something to do
        m.conv1.weight.copy_(_dyadic((40, 3, 3, 3), 5, 0, g)
                             * 2.0 ** -torch.randint(0, 3, (40, 1, 1, 1), generator=g).float())
        m.conv1.bias.copy_(_dyadic((40,), 3, -1, g))
        m.conv2.weight.copy_(_dyadic((16, 40, 1, 1), 5, -1, g))
        m.conv2.bias.copy_(_dyadic((16,), 3, -1, g))
        m.fc.weight.copy_(_dyadic((10, 64), 3, -1, g))
        m.fc.bias.copy_(_dyadic((10,), 3, -1, g))
    return m


def images(n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(-2, 3, (n, *SHAPE), generator=g).float() / 2


PLANS = {
    "block-weights": {"conv1.weight": P("mx32:fp8_e4m3"), "conv2.weight": P("mxfp4_e2m1"),
                      "fc.weight": P("mx16:se3m2b3")},
    "channel-weights": {"conv1.weight": P("ch4:e3m2"), "conv2.weight": P("ch2:e2m1"),
                        "fc.weight": P("ch4:e4m3+sub")},
    "block-activations": {"conv1.input": P("mx32:fp8_e4m3"), "conv2.input": P("mxfp4_e2m1"),
                          "fc.input": P("mx16:fp6_e2m3")},
    "mixed": {"conv1.weight": P("e4m3"), "conv1.input": P("mxfp8_e5m2"), "conv2.weight": P("mxfp6_e3m2"),
              "conv2.input": P("ue4m3b5"), "fc.weight": P("ch4:e3m2"), "fc.input": P("mx16:se3m2b3")},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("layouts")
    model = net()
    paths = {k: out / f"{k}.onnx" for k in PLANS}
    for k, plan in PLANS.items():
        export_onnx(model, plan, paths[k], SHAPE, model_name="net", variant=k)
    fp32 = out / "fp32.onnx"
    export_onnx(model, {}, fp32, SHAPE, mode="fp32", model_name="net")
    return model, paths, fp32


@pytest.mark.parametrize("variant", list(PLANS))
def test_onnxruntime_bit_identical_to_emulated_model(exported, variant):
    model, paths, _ = exported
    plan, x = PLANS[variant], images()
    with torch.no_grad():
        want = apply_plan(model, plan, SHAPE)(x).numpy()
        fp32 = model(x).numpy()
    got = session(str(paths[variant])).run(None, {"input": x.numpy()})[0]
    assert got.dtype == np.float32 and np.array_equal(got, want), np.abs(got - want).max()
    assert not np.array_equal(want, fp32)  # the formats changed the model: not a vacuous comparison
    # and each rounded activation is the emulator's, element for element (-0 and all)
    assert explain(model, plan, str(paths[variant]), x) == []


@pytest.mark.parametrize("variant", list(PLANS))
def test_weights_packed_with_scales_and_decoded_exactly(exported, variant, tmp_path):
    model, paths, fp32 = exported
    plan = PLANS[variant]
    proto = onnx.load(str(paths[variant]))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain for o in proto.opset_import} == {""}
    inits = {t.name: t for t in proto.graph.initializer}
    records = {e.name: e for e in read_records(proto)}
    assert set(records) == set(plan)
    if variant == "block-activations":  # the image may hold NaN, and a block format passes it on
        assert {records[n].method for n in plan} == {"block"}
    if variant == "mixed":  # behind a scalar rounding (NaN -> 0, bounded by Max): proven finite
        assert records["conv1.input"].method == "block" and records["fc.input"].method == "block-finite"
    params = dict(model.named_parameters())
    for name, fmt in plan.items():
        rec = records[name]
        assert parse_format(rec.format) == fmt
        if not name.endswith(".weight"):
            assert rec.kind == "activation" and rec.method in (("block", "block-finite") if isinstance(fmt, BlockFormat) else ("fast",))
            continue
        w = params[name].detach().numpy()
        assert name not in inits  # no fp32 copy left
        packed = inits[rec.packed]
        assert packed.data_type == TensorProto.UINT8 and len(packed.raw_data) == (w.size * fmt.width + 7) // 8
        if isinstance(fmt, BlockFormat):
            side = numpy_helper.to_array(inits[rec.side])
            assert side.dtype == np.uint8 and 8 * side.size == stored_bits(fmt, w.shape) - w.size * fmt.width
        elif isinstance(fmt, ChannelFormat):
            side = numpy_helper.to_array(inits[rec.side])   # bias_bits per channel, packed
            assert side.dtype == np.uint8 and side.size == -(-w.shape[0] * fmt.bias_bits // 8)
        else:
            assert rec.side == "" and rec.side_bytes == 0
        assert rec.bytes_stored == len(packed.raw_data) + rec.side_bytes
    for name, value in decoded_weights(str(paths[variant])).items():
        want = quantize(params[name].detach().numpy(), plan[name])
        assert value.view(np.uint32).tolist() == want.view(np.uint32).tolist(), name
    if any(n.endswith(".weight") for n in plan):
        # the packed weights make the file smaller than fp32 (the activation roundings' nodes,
        # large against this tiny model, are left out here)
        small = tmp_path / "weights-only.onnx"
        export_onnx(model, plan, small, SHAPE, mode="weights-only")
        assert small.stat().st_size < fp32.stat().st_size


def test_inspect_lists_layouts_and_counts_scales(exported, tmp_path):
    _, paths, _ = exported
    info = inspect_onnx(paths["mixed"])
    rows = {r["name"]: r for r in info["tensors"]}
    for name, fmt in PLANS["mixed"].items():
        assert rows[name]["format"] == str(fmt)
    conv2 = rows["conv2.weight"]   # 16 x 40 x 1 x 1 in mx32: 2 blocks per output channel
    assert conv2["side_bytes"] == 32 and conv2["bytes_stored"] == 640 * 6 // 8 + 32
    assert rows["fc.weight"]["side_bytes"] == 5 and rows["conv1.weight"]["side_bytes"] == 0   # 10 x 4 bits
    assert info["weights"]["side_bytes"] == 37
    assert info["weights"]["bytes_stored"] == sum(r["bytes_stored"] for r in rows.values())
    text = format_table(info)
    for piece in ("mx32:fp6_e3m2", "ch4:se3m2b3", "mx16:se3m2b3", "mx32:fp8_e5m2", "E8M0 scales",
                  "channel biases", "incl. 37 of scales/biases"):
        assert piece in text, piece
    # a file whose scales do not fit the weight's shape is refused, not misreported
    proto = onnx.load(str(paths["block-weights"]))
    side = next(e.side for e in read_records(proto) if e.name == "conv2.weight")
    init = next(t for t in proto.graph.initializer if t.name == side)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(-1)[:-1].copy(), side))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(SieveError, match="E8M0 scales"):
        inspect_onnx(bad)


def test_cli_inspect_shows_layouts(exported, capsys):
    from sieve.cli.main import main

    _, paths, _ = exported
    assert main(["inspect", str(paths["block-weights"])]) == 0
    out = capsys.readouterr().out
    assert "mx32:fp8_e4m3" in out and "mx32:fp4_e2m1" in out and "360 B E8M0 scales" in out


def _linear(weight: np.ndarray) -> nn.Module:
    m = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0], bias=False)).eval()
    with torch.no_grad():
        m[1].weight.copy_(torch.from_numpy(weight))
    return m


def test_ocp_block_decodes_to_hand_computed_values(tmp_path):
    """OCP MX v1.0 §6.3 by hand, through the file: shared_exp = floor(log2(amax)) - emax_elem,
    X = 2^shared_exp (E8M0 code shared_exp + 127), P_i = element(V_i / X) (RNE, clamped), value P_i X."""
    v = np.zeros((3, 32), np.float32)
    # MXFP8 E4M3 (emax 8): amax 7.5 -> shared -6, X = 2^-6; 7.5*64 = 480 clamps to Max 448 -> 7.0;
    # 1.0 -> 64 -> 1.0; -0.3*64 = -19.2 -> -20 (step 2 in [16, 32)) -> -0.3125;
    # 0.001*64 = 0.064 -> 0.0625 (step 2^-7 in [2^-4, 2^-3)) -> 2^-10; 2^-20*64 = 2^-14 < E4M3's
    # smallest subnormal 2^-9 / 2 -> 0
    v[0, :5] = [7.5, 1.0, -0.3, 0.001, 2.0 ** -20]
    # the second row: a zero block (scale code 0, 2^-127) with a -0
    v[1, 3] = -0.0
    # third: amax 3.0 -> shared 1 - 8 = -7 (code 120); 3.0*128 = 384 exact; 0.1*128 = 12.8 -> 13 -> 0.1015625
    v[2, :2] = [3.0, 0.1]
    want_scales = [127 - 6, 0, 127 - 7]
    want = np.zeros_like(v)
    want[0, :5] = [7.0, 1.0, -0.3125, 2.0 ** -10, 0.0]
    want[1, 3] = -0.0
    want[2, :2] = [3.0, 13 / 128]
    path = tmp_path / "e4m3.onnx"
    export_onnx(_linear(v), {"1.weight": P("mxfp8_e4m3")}, path, (2, 4, 4))
    proto = onnx.load(str(path))
    rec = read_records(proto)[0]
    scales = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == rec.side))
    assert scales.reshape(-1).tolist() == want_scales
    got = decoded_weights(str(path))["1.weight"]
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()

    # MXFP4 E2M1 (emax 2; values 0 0.5 1 1.5 2 3 4 6): amax 6 -> shared 0 (code 127); ties to even:
    # 5 -> 4, 0.25 -> 0, 0.75 -> 1; -2.9 -> -3; 0.3 -> 0.5; and one block of 32 per row, so the
    # second row (amax 0.2 -> floor(log2) -3, shared -5, X = 1/32: 0.2*32 = 6.4 -> 6 -> 0.1875)
    w = np.zeros((2, 32), np.float32)
    w[0, :7] = [6.0, 5.0, 0.25, 0.75, -2.9, 0.3, -7.0]   # -7 / 1 clamps to -6
    w[1, :2] = [0.2, -0.01]                             # -0.01*32 = -0.32 -> -0.5 -> -1/64
    path = tmp_path / "e2m1.onnx"
    export_onnx(_linear(w), {"1.weight": P("mxfp4_e2m1")}, path, (2, 4, 4))
    proto = onnx.load(str(path))
    rec = read_records(proto)[0]
    inits = {t.name: t for t in proto.graph.initializer}
    assert numpy_helper.to_array(inits[rec.side]).reshape(-1).tolist() == [127, 127 - 5]
    # E2M1 codes, two per byte, first in the low nibble: 6 = 0111, 4 = 0110, 0 = 0000, 1 = 0010,
    # -3 = 1101, 0.5 = 0001, -6 = 1111
    assert list(inits[rec.packed].raw_data[:4]) == [0x67, 0x20, 0x1D, 0x0F]
    expected = np.zeros_like(w)
    expected[0, :7] = [6.0, 4.0, 0.0, 1.0, -3.0, 0.5, -6.0]
    expected[1, :2] = [0.1875, -1 / 64]
    got = decoded_weights(str(path))["1.weight"]
    assert got.view(np.uint32).tolist() == expected.view(np.uint32).tolist()


def _round_in_onnxruntime(x: np.ndarray, fmt: BlockFormat, finite: bool = False) -> np.ndarray:
    b = GraphBuilder()
    add_block_rounding(b, "x", "y", fmt, x.shape[1:], finite=finite)
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
                              initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ACTIVATION_OPSET)])
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


def _hard_activations() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 40, 3, 3)) * np.exp2(rng.integers(-20, 20, (5, 40, 1, 1)))).astype(np.float32)
    x.reshape(-1)[rng.integers(0, x.size, 60)] = -0.0
    x[0, :32, 0, 0] = 0.0                          # a zero block (and a -0 in it)
    x[0, 3, 0, 0] = -0.0
    x[1, 5, 1, 1] = np.nan                         # NaN and infinite blocks: all NaN
    x[1, 7, 2, 2] = -np.inf
    x[2, 33, 0, 1] = np.inf                        # in the last, partial block
    x[2, :32, 2, 2] = 2.0 ** -135                  # float32 subnormal maxima: binade -127
    x[3, :16, 1, 2] = -(2.0 ** -140)
    x[3, 32:, 0, 0] = rng.standard_normal(8).astype(np.float32) * np.float32(1e-40)
    x[4, :, 0, 0] = 3e38                           # the E8M0 clamp at the top
    x[4, 1, 0, 0] = -0.0
    return x


@pytest.mark.parametrize("text", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4_e2m1",
                                  "mx16:se3m2b3", "mx64:se4m1b7+sub", "mx8:fp8_e4m3"])
def test_block_rounding_subgraph_is_the_emulator(text):
    """Every float32 case blockfmt defines: NaN/Inf blocks, zero blocks, -0, subnormal maxima,
    partial blocks, the E8M0 range clamp; NCHW and (N, F) tensors."""
    fmt = P(text)
    hard = _hard_activations()
    for x in (hard, np.random.default_rng(1).standard_normal((7, 70)).astype(np.float32),
              np.random.default_rng(2).standard_normal((3, 20, 5)).astype(np.float32)):  # 20 channels: one short block
        got = _round_in_onnxruntime(x, fmt)
        assert got.view(np.uint32).tolist() == quantize(x, fmt).view(np.uint32).tolist()
    # the variant without NaN/Inf handling, for inputs proven finite: same values on finite data
    finite = np.where(np.isfinite(hard), hard, np.float32(-0.0))
    got = _round_in_onnxruntime(finite, fmt, finite=True)
    assert got.view(np.uint32).tolist() == quantize(finite, fmt).view(np.uint32).tolist()


def test_channel_format_on_an_activation_is_refused(tmp_path):
    with pytest.raises(SieveError, match="per-output-channel") as exc:
        export_onnx(net(), {"conv2.input": P("ch4:e4m3")}, tmp_path / "x.onnx", SHAPE)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "x.onnx").exists()


def _onnx_source(path) -> None:
    """``net()`` written by hand as an ONNX file whose linear layer is a MatMul with the weight
    stored transposed, ``(in, out)``, as many exporters write it."""
    m = net()
    w = {k: v.detach().numpy() for k, v in m.state_dict().items()}
    inits = [numpy_helper.from_array(w["conv1.weight"], "W1"), numpy_helper.from_array(w["conv1.bias"], "b1"),
             numpy_helper.from_array(w["conv2.weight"], "W2"), numpy_helper.from_array(w["conv2.bias"], "b2"),
             numpy_helper.from_array(np.ascontiguousarray(w["fc.weight"].T), "Wf"),
             numpy_helper.from_array(w["fc.bias"], "bf")]
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "W2", "b2"], ["c2"], name="c2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "Wf"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "bf"], ["y"], name="fc_bias")]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *SHAPE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def test_onnx_source_rewritten_with_layouts(tmp_path):
    """The in-place rewrite of a user's ONNX file: block and channel weights (the MatMul's
    transposed one encoded in the torch layout and transposed back), block activations."""
    from sieve.export.from_source import export_source
    from sieve.export.exporter import quantizable_names
    from sieve.model_source import resolve

    src = tmp_path / "net.onnx"
    _onnx_source(src)
    loaded = resolve(str(src))
    known = quantizable_names(loaded.model, SHAPE)
    weights = sorted(n for n, (k, _) in known.items() if k == "weight")
    acts = sorted(n for n, (k, _) in known.items() if k == "activation")
    fc = next(n for n in weights if loaded.tensor_map[n].get("transposed"))
    convs = [n for n in weights if n != fc]
    plan = {convs[0]: P("mx16:fp6_e2m3"), convs[1]: P("ch4:e3m2"), fc: P("mxfp4_e2m1"),
            acts[0]: P("mxfp8_e4m3"), acts[1]: P("mx16:se3m2b3"), acts[2]: P("e4m3")}
    tensors = [{"name": n, "kind": k, "elements": e, "format": str(plan[n]), "bits": plan[n].width}
               for n, (k, e) in known.items() if n in plan]
    variant = {"val_accuracy": 0.9, "test_accuracy": 0.9, "normalized_test_accuracy": 1.0, "mean_bits_weights": 5.0,
               "mean_bits_activations": 7.0, "mean_bits": 6.0, "compression_ratio": 5.0, "tensors": tensors}
    import json
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps({"model": "net", "dataset": "synthetic", "strategy": "handmade",
                                     "baseline": {"val_accuracy": 0.9, "test_accuracy": 0.9},
                                     "variants": {"exact": variant, "accurate": variant, "approximate": variant}, "search_seconds": 0.0, "evaluations": 0,
                                     "input_shape": list(SHAPE)}))
    out = tmp_path / "q.onnx"
    export_source(str(src), out, plan_path, "accurate", "full", progress=False)
    proto = onnx.load(str(out))
    assert {r.name: parse_format(r.format) for r in read_records(proto)} == plan
    assert any(n.op_type == "Transpose" and n.output[0] == fc for n in proto.graph.node)
    x = images()
    with torch.no_grad():
        want = apply_plan(loaded.model, plan, SHAPE)(x).numpy()
        fp32 = loaded.model(x).numpy()
    got = session(str(out)).run(None, {"x": x.numpy()})[0]
    assert np.array_equal(got, want) and not np.array_equal(want, fp32)
    assert explain(loaded.model, plan, str(out), x) == []
    params = dict(loaded.model.named_parameters())
    for name, value in decoded_weights(str(out)).items():   # the file's layout: (in, out) for the MatMul
        ref = quantize(params[name].detach().numpy(), plan[name])
        assert value.view(np.uint32).tolist() == (ref.T if name == fc else ref).view(np.uint32).tolist(), name
    info = inspect_onnx(out)
    rows = {r["name"]: r for r in info["tensors"]}
    assert rows[fc]["side_bytes"] == 10 * 2    # (10, 64) in blocks of 32 along the 64 inputs


def test_cli_export_of_a_layout_plan_file(tmp_path, monkeypatch, capsys):
    """plan.json with layout texts -> `sieve export` -> `sieve inspect`, and the file reproduces
    the emulated model."""
    import json

    from sieve import zoo
    from sieve.cli.main import main
    from sieve.export.exporter import quantizable_names

    model, plan = net(), PLANS["mixed"]
    monkeypatch.setattr(zoo, "load", lambda name, **kw: (model, None))
    monkeypatch.setattr(zoo, "architecture", lambda name: model)
    monkeypatch.setattr(zoo, "model_info", lambda name: {"input_shape": SHAPE, "dataset": "x", "num_classes": 10})
    tensors = [{"name": n, "kind": k, "elements": e, "format": str(plan[n]), "bits": plan[n].width}
               for n, (k, e) in quantizable_names(model, SHAPE).items() if n in plan]
    variant = {"val_accuracy": 0.9, "test_accuracy": 0.9, "normalized_test_accuracy": 1.0,
               "mean_bits_weights": 5.0, "mean_bits_activations": 7.0, "mean_bits": 6.0,
               "compression_ratio": 5.0, "tensors": tensors}
    doc = {"model": "lenet5", "dataset": "synthetic", "strategy": "handmade",
           "baseline": {"val_accuracy": 0.9, "test_accuracy": 0.9},
           "variants": {"exact": variant, "accurate": variant, "approximate": variant},
           "search_seconds": 0.0, "evaluations": 0}
    plan_path, out = tmp_path / "plan.json", tmp_path / "m.onnx"
    plan_path.write_text(json.dumps(doc))
    assert main(["export", "--model", "lenet5", "--plan", str(plan_path), "--out", str(out)]) == 0
    assert "3 packed weights" in capsys.readouterr().out
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mx32:fp6_e3m2" in text and "ch4:se3m2b3" in text and "E8M0 scales" in text
    x = images()
    with torch.no_grad():
        want = apply_plan(model, plan, SHAPE)(x).numpy()
    assert np.array_equal(session(str(out)).run(None, {"input": x.numpy()})[0], want)


@pytest.mark.parametrize("bits", [1, 3, 5, 7, 8])
def test_channel_bias_offsets_packed_at_their_width(bits, tmp_path):
    """Every offset width packs and unpacks (7 bits takes the bit-by-bit path, 3 and 5 the grouped one)."""
    model, fmt = net(), P(f"ch{bits}:e2m3")
    with torch.no_grad():  # 40 channels over 12 binades: wide offsets get used
        model.conv1.weight.mul_(2.0 ** -torch.arange(40).remainder(12).float().reshape(-1, 1, 1, 1))
    path = tmp_path / "ch.onnx"
    export_onnx(model, {"conv1.weight": fmt}, path, SHAPE, mode="weights-only")
    rec = read_records(onnx.load(str(path)))[0]
    assert rec.side_bytes == -(-40 * bits // 8)
    want = quantize(model.conv1.weight.detach().numpy(), fmt)
    assert decoded_weights(str(path))["conv1.weight"].view(np.uint32).tolist() == want.view(np.uint32).tolist()


@pytest.mark.parametrize("text", ["e4m3+fn+sub", "e5m2+ieee+sub", "e2m1+sub", "e4m3", "ue4m3b5+sub", "e5m2+sub+fnuz",
                                  "e4m3+rtz+sub", "e4m3+fn+ovnan", "e3m4b20"])
def test_scalar_rounding_without_nan_handling_on_finite_inputs(text):
    """``add_rounding(finite=True)`` (the block rounding's element step) equals the emulator on
    every finite float32: -0, fp32 subnormals, ties, overflow."""
    from sieve import Format, quantize as scalar_quantize
    from sieve.export.rounding import add_rounding

    fmt = Format.parse(text)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(4000) * np.exp2(rng.integers(-40, 40, 4000))).astype(np.float32)
    x[:8] = [0.0, -0.0, 1e-45, -1e-40, 3e38, -3e38, fmt.max_value * 1.0625, -fmt.min_normal / 2]
    b = GraphBuilder()
    add_rounding(b, "x", "y", fmt, finite=True)
    graph = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [x.size])], initializer=b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ACTIVATION_OPSET)])
    so = ort.SessionOptions()
    so.log_severity_level = 3
    got = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.view(np.uint32).tolist() == scalar_quantize(x, fmt).view(np.uint32).tolist()
