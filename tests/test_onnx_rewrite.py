"""``sieve export --model net.onnx``: the user's graph edited in place (export.onnx_rewrite)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from sieve import Format
from sieve.cli.main import main
from sieve.errors import SieveError
from sieve.export.exporter import quantizable_names, read_records
from sieve.export.onnx_rewrite import rewrite_model, rewrite_onnx
from sieve.export.verify import compare, explain
from sieve.model_source import resolve

P = Format.parse
SHAPE = (3, 10, 10)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class SmallCNN(nn.Module):
    """Conv + BatchNorm + ReLU, a residual add, max pooling, Flatten and two Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc1 = nn.Linear(8 * 5 * 5, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        y = F.relu(self.bn(self.stem(x)))
        y = F.max_pool2d(F.relu(self.conv(y)) + y, 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(y, 1))))


TORCH_PLAN = {
    "stem.weight": P("e4m3"), "stem.input": P("e4m3"),          # signed input: BitCast, opset 26
    "conv.weight": P("e3m2"), "conv.input": P("ue4m3b5"),
    "fc1.weight": P("e5m9b20"), "fc1.input": P("ue3m4b3+rtz"),
    "fc2.weight": P("e2m1"),                                     # fc2.input stays fp32
}


def _torch_file(tmp_path, opset: int):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / f"cnn{opset}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(2, *SHAPE), str(path), dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["scores"],
                          dynamic_axes={"image": {0: "N"}, "scores": {0: "N"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    return path


def _images(n: int = 64, shape=SHAPE) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(3))


def _run(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _signature(graph: onnx.GraphProto) -> list[tuple[str, tuple[str, ...]]]:
    return [(n.op_type, tuple(n.output)) for n in graph.node]


def _assert_graph_kept(original: onnx.ModelProto, rewritten: onnx.ModelProto) -> None:
    """Every original node is there, in the original order, with its operator and outputs, and the
    graph's input/output names are the user's."""
    mine = {o for n in original.graph.node for o in n.output}
    kept = [s for s in _signature(rewritten.graph) if s[1][0] in mine]
    assert kept == _signature(original.graph)
    real = {t.name for t in rewritten.graph.initializer}
    assert [v.name for v in rewritten.graph.input if v.name not in real] == \
        [v.name for v in original.graph.input if v.name not in {t.name for t in original.graph.initializer}]
    assert [v.name for v in rewritten.graph.output] == [v.name for v in original.graph.output]


def _assert_packed(original: onnx.ModelProto, rewritten: onnx.ModelProto, plan: dict, tensor_map: dict) -> None:
    """Each planned weight is stored as ceil(n*w/8) uint8 bytes, its fp32 initializer gone (no
    unplanned node reads it in these models)."""
    inits = {t.name: t for t in rewritten.graph.initializer}
    originals = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    records = {r.name: r for r in read_records(rewritten)}
    for name, fmt in plan.items():
        if not name.endswith(".weight"):
            continue
        rec = records[name]
        packed = inits[rec.packed]
        assert packed.data_type == TensorProto.UINT8
        n = originals[tensor_map[name]["initializer"]].size
        assert len(numpy_helper.to_array(packed).tobytes()) == -(-n * fmt.width // 8) == rec.bytes_stored
        assert tensor_map[name]["initializer"] not in inits      # the fp32 initializer is gone


def _assert_agrees(model, plan, path, images) -> None:
    """The tolerance test_export.py uses: 100 % top-1, at most two images whose logits move by more
    than 1e-5 of their range, and only where fp32 summation order moved a rounding input."""
    r = compare(model, plan, str(path), images)
    assert r["top1_agreement"] == 1.0, r
    if r["images_over_tolerance"]:
        for e in explain(model, plan, str(path), images[r["over_tolerance_indices"]]):
            assert e["onnx_rounding_matches_emulator_on_onnx_inputs"], e
            assert e["max_input_diff_vs_tensor_max"] < 1e-5, e
    assert r["images_over_tolerance"] <= 2, r


@pytest.mark.parametrize("opset", [13, 17])
def test_torch_cnn_rewritten_in_place(opset, tmp_path):
    path = _torch_file(tmp_path, opset)
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, SHAPE)
    original = onnx.load(str(path))
    out = tmp_path / "q.onnx"
    result = rewrite_onnx(path, loaded.tensor_map, TORCH_PLAN, known, out, model_name="cnn", variant="accurate")
    rewritten = onnx.load(str(out))
    assert result.opset == 26 and rewritten.opset_import[0].version == 26    # raised for BitCast
    _assert_graph_kept(original, rewritten)
    assert "BatchNormalization" in {n.op_type for n in rewritten.graph.node}   # the user's operators
    _assert_packed(original, rewritten, TORCH_PLAN, loaded.tensor_map)
    assert {r.name for r in read_records(rewritten)} == set(TORCH_PLAN)
    meta = {p.key: p.value for p in rewritten.metadata_props}
    assert meta["sieve.model"] == "cnn" and meta["sieve.variant"] == "accurate" and meta["sieve.mode"] == "full"
    # the rounding reads the planned node's own input, and feeds that node only
    conv = next(n for n in rewritten.graph.node if n.op_type == "Conv" and "conv.weight" in n.input)
    assert conv.input[0] == "conv.input.rounded"
    _assert_agrees(loaded.model, TORCH_PLAN, out, _images())


@pytest.mark.parametrize("opset", [13, 17])
def test_fp32_export_gives_the_original_outputs_exactly(opset, tmp_path):
    path = _torch_file(tmp_path, opset)
    out = tmp_path / "fp32.onnx"
    assert main(["export", "--model", str(path), "--fp32", "--out", str(out)]) == 0
    x = _images(8).numpy()
    np.testing.assert_array_equal(_run(out, x), _run(path, x))
    original, copy = onnx.load(str(path)), onnx.load(str(out))
    assert _signature(copy.graph) == _signature(original.graph)
    assert copy.opset_import[0].version == opset          # nothing needed a newer opset
    assert {p.key: p.value for p in copy.metadata_props}["sieve.mode"] == "fp32"


def test_weights_only_keeps_the_opset_it_needs(tmp_path):
    """Weights only: no BitCast, so opset 18 (the decode's) is enough."""
    path = _torch_file(tmp_path, 17)
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, SHAPE)
    out = tmp_path / "w.onnx"
    result = rewrite_onnx(path, loaded.tensor_map, TORCH_PLAN, known, out, mode="weights-only")
    assert result.opset == 18
    assert {r.kind for r in result.tensors} == {"weight"}
    _assert_agrees(loaded.model, TORCH_PLAN, out, _images())


def _hand_built(path) -> None:
    """A weight (W2) read by three Conv nodes -- two of them one layer (same attributes: the
    layer's call sites 1 and 2), the third another layer -- and a tensor (r1) read by two planned
    Convs and an unplanned Add."""
    rng = np.random.default_rng(0)
    init = lambda a, n: numpy_helper.from_array(a.astype(np.float32), n)  # noqa: E731
    inits = [init(rng.standard_normal((4, 3, 3, 3)) * 0.3, "W1"), init(rng.standard_normal(4) * 0.1, "b1"),
             init(rng.standard_normal((4, 4, 3, 3)) * 0.3, "W2"), init(rng.standard_normal((5, 4)) * 0.5, "Wf"),
             init(rng.standard_normal(5) * 0.1, "bf")]
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r1", "W2"], ["c3"], name="c3", pads=[2, 2, 2, 2], dilations=[2, 2]),
        helper.make_node("Add", ["c2", "c3"], ["s"], name="add1"),
        helper.make_node("Add", ["s", "r1"], ["s2"], name="add2"),
        helper.make_node("Conv", ["s2", "W2"], ["c4"], name="c4", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "Wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


HAND_PLAN = {
    "c1.weight": P("e4m3"), "c1.input": P("e3m2"),
    "c2.weight": P("e3m2"), "c2.input": P("ue4m3b5"), "c2.input#2": P("ue3m4b3+rtz"),
    "c3.weight": P("e2m1"), "c3.input": P("ue4m2b6"),
    "fc.weight": P("e5m9b20"),
}


def test_shared_weight_and_tensor_read_twice(tmp_path):
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    loaded = resolve(str(path))
    tensor_map = loaded.tensor_map
    assert tensor_map["c2.weight"]["initializer"] == tensor_map["c3.weight"]["initializer"] == "W2"
    assert "c2.input#2" in tensor_map
    known = quantizable_names(loaded.model, (3, 8, 8))
    original = onnx.load(str(path))
    out = tmp_path / "q.onnx"
    rewrite_onnx(path, tensor_map, HAND_PLAN, known, out, model_name="hand", variant="accurate")
    rewritten = onnx.load(str(out))
    _assert_graph_kept(original, rewritten)
    _assert_packed(original, rewritten, HAND_PLAN, tensor_map)
    nodes = {n.name: n for n in rewritten.graph.node if n.name}
    # W2 read by two layers with two formats: each reads its own decoded copy, W2 itself is gone
    assert "W2" not in {t.name for t in rewritten.graph.initializer}
    assert nodes["c2"].input[1] == nodes["c4"].input[1] == "c2.weight" and nodes["c3"].input[1] == "c3.weight"
    # W1 only read by c1: decoded under its own name, c1 untouched
    assert nodes["c1"].input[1] == "W1"
    assert any(n.op_type == "Identity" and list(n.input) == ["c1.weight"] and list(n.output) == ["W1"]
               for n in rewritten.graph.node)
    # r1: rounded on the edges into c2 and c3 only (each its own format); the Add reads fp32
    assert nodes["c2"].input[0] == "c2.input.rounded" and nodes["c3"].input[0] == "c3.input.rounded"
    assert list(nodes["add2"].input) == ["s", "r1"]
    assert nodes["c4"].input[0] == "c2.input#2.rounded"
    # each rounding right before its node
    order = [n.output[0] for n in rewritten.graph.node]
    for name, node in (("c2.input", "c2"), ("c3.input", "c3"), ("c2.input#2", "c4")):
        assert order.index(f"{name}.rounded") < order.index(node)
        assert order.index(f"{name}.rounded") > order.index({"c4": "s2"}.get(node, "r1"))
    _assert_agrees(loaded.model, HAND_PLAN, out, _images(64, (3, 8, 8)))
    # the fp32 "export" of the same file
    fp32 = tmp_path / "fp32.onnx"
    rewrite_onnx(path, tensor_map, {}, known, fp32, mode="fp32")
    x = _images(8, (3, 8, 8)).numpy()
    np.testing.assert_array_equal(_run(fp32, x), _run(path, x))


def test_weight_shared_with_an_unplanned_reader_is_kept_for_it(tmp_path):
    """Only c2's weight planned: c3 (same initializer W2) still reads the fp32 W2."""
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, (3, 8, 8))
    plan = {"c2.weight": P("e3m2")}
    proto, entries = rewrite_model(onnx.load(str(path)), loaded.tensor_map, plan, known)
    nodes = {n.name: n for n in proto.graph.node if n.name}
    assert nodes["c3"].input[1] == "W2" and "W2" in {t.name for t in proto.graph.initializer}
    assert nodes["c2"].input[1] == nodes["c4"].input[1] == "c2.weight"
    out = tmp_path / "q.onnx"
    onnx.save(proto, str(out))
    _assert_agrees(loaded.model, plan, out, _images(64, (3, 8, 8)))


def test_plan_for_another_file_is_one_line(tmp_path):
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    loaded = resolve(str(path))
    known = {"ghost.weight": ("weight", 9), **quantizable_names(loaded.model, (3, 8, 8))}
    with pytest.raises(SieveError, match="ghost.weight"):
        rewrite_model(onnx.load(str(path)), loaded.tensor_map, {"ghost.weight": P("e4m3")}, known)


def test_weight_in_a_constant_node_and_a_failed_opset_conversion(tmp_path, monkeypatch):
    """A weight stored by a Constant node is compressed like an initializer; when the opset cannot
    be raised to what the new nodes need, one line and no file."""
    path = tmp_path / "hand.onnx"
    _hand_built(path)
    model = onnx.load(str(path))
    w1 = next(t for t in model.graph.initializer if t.name == "W1")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["W1"], value=w1))
    keep = [t for t in model.graph.initializer if t.name != "W1"]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    onnx.save(model, str(path))
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, (3, 8, 8))
    plan = {"c1.weight": P("e4m3"), "c2.input": P("ue4m3b5")}
    out = tmp_path / "q.onnx"
    rewrite_onnx(path, loaded.tensor_map, plan, known, out)
    rewritten = onnx.load(str(out))
    assert "Constant" not in {n.op_type for n in rewritten.graph.node}
    assert [n.name for n in rewritten.graph.node if n.name] == [n.name for n in model.graph.node if n.op_type != "Constant"]
    _assert_agrees(loaded.model, plan, out, _images(64, (3, 8, 8)))

    from onnx import version_converter

    def fail(*args, **kwargs):
        raise RuntimeError("No adapter for Conv\nmore detail")

    monkeypatch.setattr(version_converter, "convert_version", fail)
    bad = tmp_path / "bad.onnx"
    with pytest.raises(SieveError, match=r"cannot raise opset 13 to 18, .*No adapter for Conv\); re-export") as info:
        rewrite_onnx(path, loaded.tensor_map, plan, known, bad)
    assert "\n" not in str(info.value) and not bad.exists()


@pytest.mark.parametrize("arch", ["alexnet", "googlenet", "resnet50", "squeezenet", "densenet", "shufflenet"])
def test_classic_cnn_styles_at_opset_9_every_tensor_planned(arch, tmp_path):
    """The importer's CNN styles (LRN, grouped conv, Concat, channel shuffle, kept BatchNorm ...)
    exported at opset 9 and raised to 26 by the converter: graph kept, 100 % agreement."""
    from tests.test_onnx_import import CNNS, _export, random_bn_statistics

    torch.manual_seed(0)
    cls, shape, kw = CNNS[arch]
    model = cls().eval()
    if kw.get("preserve_bn"):
        random_bn_statistics(model)
    path = _export(model, tmp_path / f"{arch}.onnx", shape, 9, **kw)
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, shape)
    weights, acts = ("e4m3", "e3m2", "e5m9b20", "e2m1"), ("e4m3", "ue4m3b5", "ue3m4b3+rtz")
    plan = {n: P(weights[i % 4] if kind == "weight" else acts[i % 3]) for i, (n, (kind, _)) in enumerate(known.items())}
    out = tmp_path / "q.onnx"
    result = rewrite_onnx(path, loaded.tensor_map, plan, known, out)
    assert result.opset == 26
    rewritten = onnx.load(str(out))
    _assert_graph_kept(onnx.load(str(path)), rewritten)
    _assert_packed(onnx.load(str(path)), rewritten, plan, loaded.tensor_map)
    _assert_agrees(loaded.model, plan, out, _images(32, shape))


def _two_layers_one_weight(path) -> None:
    """``a.weight`` (a torch-style name, so layer ``a`` decodes under the initializer's own name)
    read by two Conv nodes with different padding: two layers."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array((rng.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32), "a.weight")
    nodes = [helper.make_node("Conv", ["x", "a.weight"], ["y1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "a.weight"], ["y2"], pads=[2, 2, 2, 2], dilations=[2, 2]),
             helper.make_node("Add", ["y1", "y2"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_initializer_named_like_the_layer_and_read_by_another_layer(tmp_path):
    path = tmp_path / "tied.onnx"
    _two_layers_one_weight(path)
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, (3, 6, 6))
    layers = sorted(n for n in known if n.endswith(".weight"))
    assert len(layers) == 2 and "a.weight" in layers
    other = next(n for n in layers if n != "a.weight")
    x = _images(32, (3, 6, 6))
    # only a planned: a reads the decoded a.weight, the other layer keeps the fp32 copy
    proto, _ = rewrite_model(onnx.load(str(path)), loaded.tensor_map, {"a.weight": P("e2m1")}, known)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs[0].input[1] == "a.weight" and convs[1].input[1] != "a.weight"
    assert numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == convs[1].input[1])).dtype \
        == np.float32
    onnx.save(proto, str(tmp_path / "one.onnx"))
    _assert_agrees(loaded.model, {"a.weight": P("e2m1")}, tmp_path / "one.onnx", x)
    # both planned: no fp32 copy left
    plan = {"a.weight": P("e2m1"), other: P("e4m3")}
    proto, _ = rewrite_model(onnx.load(str(path)), loaded.tensor_map, plan, known)
    assert not any(t.data_type == TensorProto.FLOAT and list(t.dims) == [3, 3, 3, 3] for t in proto.graph.initializer)
    onnx.save(proto, str(tmp_path / "both.onnx"))
    _assert_agrees(loaded.model, plan, tmp_path / "both.onnx", x)


class WideCNN(nn.Module):
    """16/32 channels (whole NCHWc blocks) behind BatchNorm + ReLU: the blocked rounding's case."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc((torch.relu(self.c3(x)) + x).mean((2, 3)))


def test_blocked_rounding_where_the_bound_proves_the_input_finite(tmp_path):
    """Behind a kept BatchNormalization (bounded by its statistics) the Conv inputs take the
    NCHWc-friendly rounding; the image input (may hold NaN) does not; still 100 % agreement."""
    from tests.test_onnx_import import _export, random_bn_statistics

    torch.manual_seed(0)
    model = random_bn_statistics(WideCNN().eval())
    shape = (3, 12, 12)
    path = _export(model, tmp_path / "wide.onnx", shape, 17, preserve_bn=True)
    loaded = resolve(str(path))
    known = quantizable_names(loaded.model, shape)
    plan = {n: P("e4m3" if kind == "weight" else "ue4m3b5") for n, (kind, _) in known.items()}
    out = tmp_path / "q.onnx"
    result = rewrite_onnx(path, loaded.tensor_map, plan, known, out)
    methods = {t.name: t.method for t in result.tensors if t.kind == "activation"}
    assert methods == {"c1.input": "fast", "c2.input": "blocked", "c3.input": "blocked", "fc.input": "fast"}
    assert {r.name: r.method for r in read_records(onnx.load(str(out))) if r.kind == "activation"} == methods
    _assert_agrees(loaded.model, plan, out, _images(64, shape))


def test_batchnorm_magnitude_bound():
    from sieve.export.bounds import magnitude_bounds

    arrays = {"s": [2.0, -1.0], "b": [0.5, 0.0], "m": [1.0, 0.0], "v": [3.0, 0.0]}
    graph = helper.make_graph(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1.0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 1])],
        initializer=[numpy_helper.from_array(np.array(v, np.float32), k) for k, v in arrays.items()])
    assert magnitude_bounds(graph, {}, {})["y"] == np.inf                 # the image: unbounded
    # |x| <= 7 after rounding: channel 0 (7 + 1) * 2 / 2 + 0.5 = 8.5, channel 1 7 * 1 / 1 = 7
    assert magnitude_bounds(graph, {}, {0: P("ue3m2b5")})["y"] == pytest.approx(8.5)
