"""The importer on CNN graphs the project did not write: the ONNX model zoo's classic CNNs.

The installed ``onnx`` package ships them as "light" test models (Caffe/Caffe2 conversions,
opset 9) under ``onnx/backend/test/data/light/``, with the big weights generated in the graph by
``ConstantOfShape`` (every weight 0.02) and one reference output computed by onnx's reference
evaluator on the input ``arange(n) / n``.  Three checks per graph:

* the file as shipped, against onnxruntime on a random image and against the shipped reference
  output on onnx's own deterministic input (the ``ConstantOfShape`` weights must have become the
  parameters of ordinary ``Conv2d``/``Linear`` layers);
* the same graph with each ``ConstantOfShape`` weight replaced by seeded random values — the
  shipped constant weights make every class score equal, so only this variant shows that the
  layers are wired right (max |difference| ≤ 1e-4 of the output range, range > 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sieve.cli.main import main
from sieve.export.verify import compare
from sieve.model_source import resolve
from sieve.onnx_import import import_onnx
from sieve.plan_io import load_plan

ort = pytest.importorskip("onnxruntime")

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FAST = ["bvlc_alexnet", "squeezenet", "resnet50", "shufflenet", "inception_v1", "densenet121", "inception_v2"]
HEAVY = ["zfnet512", "vgg19"]    # 87 M / 144 M weights: 25-40 s each for the randomized variant on 2 shared cores
GRAPHS = FAST + [pytest.param(n, marks=pytest.mark.slow) for n in HEAVY]


def light_path(name: str) -> Path:
    """The shipped light model ``name``, or skip with the reason when this onnx build lacks it."""
    path = LIGHT / f"light_{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not shipped by the installed onnx {onnx.__version__}")
    return path


def _ort_run(model_or_path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    src = model_or_path if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(str(src) if isinstance(src, Path) else src, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _torch_run(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def randomized(path: Path, seed: int = 0, keep_generated: frozenset = frozenset()) -> onnx.ModelProto:
    """The graph with every ``ConstantOfShape`` output (but ``keep_generated``) replaced by a seeded random initializer:
    weights (≥ 2-D) He-scaled normal, 1-D tensors (biases, BN scale/shift/mean/var) in [0.5, 1.5]
    so that variances stay positive and activations neither vanish nor explode."""
    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    rng = np.random.default_rng(seed)
    keep = []
    for node in g.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits or node.output[0] in keep_generated:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in inits[node.input[0]].reshape(-1))
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            value = rng.uniform(0.5, 1.5, shape)
        g.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        if model.ir_version < 4:   # before IR 4 every initializer must also be a graph input
            g.input.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, shape))
    del g.node[:]
    g.node.extend(keep)
    return model


def _generated_layer_weights(path: Path) -> int:
    """How many Conv/Gemm weight elements the file generates with ``ConstantOfShape``."""
    g = onnx.load(str(path)).graph
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    made = {n.output[0]: int(np.prod(shapes[n.input[0]])) for n in g.node
            if n.op_type == "ConstantOfShape" and n.input[0] in shapes}
    return sum(made.get(n.input[1], 0) for n in g.node if n.op_type in ("Conv", "Gemm"))


def _image(shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", GRAPHS)
def test_shipped_light_graph_matches_onnxruntime_and_reference(name):
    path = light_path(name)
    imported = import_onnx(path)
    n_params = sum(p.numel() for p in imported.module.parameters())
    assert n_params >= _generated_layer_weights(path) > 0, "ConstantOfShape weights did not become layer parameters"

    x = _image(imported.input_shape)
    ref = _ort_run(path, x)
    out = _torch_run(imported.module, x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)

    ref_file = LIGHT / f"light_{name}_output_0.pb"
    if ref_file.is_file():   # onnx's backend runner feeds arange(n) / n for these models
        n = int(np.prod((1, *imported.input_shape)))
        x0 = (np.arange(n).reshape((1, *imported.input_shape)) / n).astype(np.float32)
        expected = numpy_helper.to_array(onnx.load_tensor(str(ref_file)))
        np.testing.assert_allclose(_torch_run(imported.module, x0), expected, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("name", GRAPHS)
def test_randomized_light_graph_matches_onnxruntime(name, tmp_path):
    model = randomized(light_path(name))
    file = tmp_path / f"{name}_random.onnx"
    onnx.save(model, str(file))
    imported = import_onnx(file)
    x = _image(imported.input_shape)
    ref = _ort_run(file, x)
    out = _torch_run(imported.module, x)
    spread = float(ref.max() - ref.min())
    assert spread > 0 and np.isfinite(ref).all(), "the randomized graph's outputs are degenerate"
    assert float(np.abs(out - ref).max()) <= 1e-4 * spread
    assert out.reshape(-1).argmax() == ref.reshape(-1).argmax()


def test_cli_search_and_export_of_a_zoo_squeezenet_graph(tmp_path, capsys):
    """``sieve search`` then ``sieve export`` on the zoo's Caffe SqueezeNet graph (opset 9, IR 3,
    N×1000×1×1 output, first conv weight generated by ``ConstantOfShape``, the others seeded
    random): the compressed copy of that file agrees 100 % top-1 with the emulated model."""
    torch.set_num_threads(1)
    model = randomized(light_path("squeezenet"), keep_generated=frozenset({"conv1_w_0"}))
    path = tmp_path / "zoo_squeezenet.onnx"
    onnx.save(model, str(path))
    loaded = resolve(str(path))
    images = torch.randn(16, *loaded.input_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = loaded.model(images).argmax(1).numpy()   # N×1000 logits, not N×1000×1×1
    data = tmp_path / "d.npz"
    np.savez(data, x=images.numpy(), y=labels)
    out_dir = tmp_path / "search"
    assert main(["search", "--model", str(path), "--data", str(data), "--out", str(out_dir), "--quiet",
                 "--threads", "1"]) == 0
    assert (out_dir / "report.md").is_file() and (out_dir / "plan.json").is_file()
    plan = load_plan(out_dir / "plan.json", "accurate")
    generated = [k for k, v in loaded.tensor_map.items() if v.get("initializer") == "conv1_w_0"]
    assert generated and generated[0] in plan      # the ConstantOfShape weight is packed too
    out = tmp_path / "zoo_squeezenet.sieve.onnx"
    assert main(["export", "--model", str(path), "--plan", str(out_dir / "plan.json"), "--out", str(out)]) == 0
    assert "packed weights" in capsys.readouterr().out
    report = compare(loaded.model, plan, str(out), images, batch=1)
    assert report["top1_agreement"] == 1.0 and report["max_relative_logit_diff"] <= 1e-5
