"""``sieve export --model net.onnx``: the imported file exported again, fp32 and compressed."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sieve.cli.main import main
from sieve.export.exporter import read_records
from sieve.export.verify import compare
from sieve.model_source import resolve
from tests.test_onnx_import import ResNet50Style, SqueezeNetStyle, _export

SHAPES = {"resnet50": (ResNet50Style, (3, 32, 32)), "squeezenet": (SqueezeNetStyle, (3, 33, 33))}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _file(tmp_path, arch, **kw):
    torch.manual_seed(0)
    cls, shape = SHAPES[arch]
    path = tmp_path / f"{arch}.onnx"
    _export(cls(), path, shape, 13, **kw)
    return path, shape


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess, sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("arch", list(SHAPES))
def test_fp32_export_of_an_imported_file_gives_the_original_outputs(arch, tmp_path):
    path, shape = _file(tmp_path, arch, preserve_bn=True)
    out = tmp_path / "fp32.onnx"
    assert main(["export", "--model", str(path), "--fp32", "--out", str(out)]) == 0
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    _, ref = _run(path, x)
    sess, got = _run(out, x)
    assert [i.name for i in sess.get_inputs()] == ["x"] and [o.name for o in sess.get_outputs()] == ["logits"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * float(ref.max() - ref.min()))


def test_search_then_compressed_export_of_an_imported_file(tmp_path):
    """A real search on the imported file (plan.json under the file's name), then
    ``sieve export --model file.onnx``: onnxruntime agrees 100 % with the emulated model."""
    from sieve.data import Dataset, to_split
    from sieve.plan_io import load_plan
    from sieve.search import run_search

    path, shape = _file(tmp_path, "squeezenet")
    loaded = resolve(str(path))
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(96, *shape, generator=gen)
    with torch.no_grad():
        labels = loaded.model(images).argmax(1)        # the fp32 model is right by construction
    data = Dataset("random", [str(i) for i in range(10)], to_split(images[:64], labels[:64]),
                   to_split(images[64:], labels[64:]), "random")
    out_dir = tmp_path / "search"
    run_search(loaded.model, data, model_name=loaded.name, out_dir=out_dir, progress=False, report=False)
    plan = load_plan(out_dir / "plan.json", "accurate")
    assert plan and set(plan) <= set(loaded.tensor_map)          # plan names map back to the file
    out = tmp_path / "q.onnx"
    assert main(["export", "--model", str(path), "--plan", str(out_dir / "plan.json"), "--out", str(out)]) == 0
    report = compare(loaded.model, plan, str(out), images)
    assert report["top1_agreement"] == 1.0
    records = read_records(onnx.load(str(out)))
    assert {r.name for r in records} == set(plan)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    # the user's graph itself (export.onnx_rewrite): every node of the file, in its order
    original = [(n.op_type, list(n.output)) for n in onnx.load(str(path)).graph.node]
    mine = {o for _, outs in original for o in outs}
    assert [(n.op_type, list(n.output)) for n in onnx.load(str(out)).graph.node if n.output[0] in mine] == original


def test_export_refuses_weights_for_an_onnx_file(tmp_path, capsys):
    path, _ = _file(tmp_path, "squeezenet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["export", "--model", str(path), "--fp32", "--weights", "w.pt", "--out", str(tmp_path / "o.onnx")])
    assert code == 2
    assert "--weights does not apply to an ONNX file" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()


def test_cli_search_and_export_of_an_onnx_file_on_npz_data(tmp_path, capsys):
    """``sieve search --model net.onnx --data d.npz`` then ``sieve export --model net.onnx``."""
    path, shape = _file(tmp_path, "squeezenet")
    loaded = resolve(str(path))
    images = torch.randn(120, *shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        labels = loaded.model(images).argmax(1).numpy()
    data = tmp_path / "d.npz"
    np.savez(data, x=images.numpy(), y=labels)
    out_dir = tmp_path / "search"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["search", "--model", str(path), "--data", str(data), "--out", str(out_dir), "--quiet",
                     "--threads", "1"]) == 0
    doc = json.loads((out_dir / "plan.json").read_text())
    assert doc["model"] == "squeezenet" and (out_dir / "report.md").is_file()
    out = tmp_path / "q.onnx"
    assert main(["export", "--model", str(path), "--plan", str(out_dir / "plan.json"), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    from sieve.plan_io import load_plan

    report = compare(loaded.model, load_plan(out_dir / "plan.json", "accurate"), str(out), images)
    assert report["top1_agreement"] == 1.0
    # an image size the file does not take is one line, before any search
    wrong = tmp_path / "w.npz"
    np.savez(wrong, x=np.zeros((4, 3, 20, 20), np.float32), y=np.zeros(4, np.int64))
    assert main(["search", "--model", str(path), "--data", str(wrong), "--out", str(tmp_path / "s2")]) == 2
    assert "3x20x20 images but" in capsys.readouterr().err
