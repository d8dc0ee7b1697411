"""``--model`` sources: zoo names, ONNX files, ``package.module:factory``, ``file.py:Factory``."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from sieve import Format, model_source
from sieve.errors import SieveError
from sieve.qeval import PrefixEvaluator, apply_plan, quantizable_tensors


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


USER_FILE = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.branch = nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.cat([y[:, :3], torch.relu(self.branch(y))[:, 3:]], 1) + y
        y = nn.functional.adaptive_avg_pool2d(y, 4)
        return self.fc(torch.flatten(y, 1))

class Branchy(Net):
    def forward(self, x):           # data-dependent control flow: torch.fx cannot trace it
        y = torch.relu(self.conv(x))
        if float(y.mean()) > 0:
            y = self.branch(y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 4), 1))

def make():
    torch.manual_seed(3)
    return Net()

def broken():
    raise ValueError("needs a config file")

def not_a_model():
    return 42
'''


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(textwrap.dedent(USER_FILE))
    return path


def _user_net_as_onnx(user_file, tmp_path, opset):
    """The user's ``make()`` model and its ONNX export (``torch.onnx.export``, dynamic batch)."""
    torch_model = model_source.resolve(f"{user_file}:make").model
    path = tmp_path / "mynet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch_model, torch.randn(1, 3, 8, 8), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    return torch_model, path


def _plan(model, shape):
    plan = {}
    for t in quantizable_tensors(model, shape):
        plan[t.name] = Format.parse("e4m3" if t.kind == "weight" else "e5m2")
    return plan


def test_kinds_and_names():
    assert model_source.source_kind("resnet20") == "zoo"
    assert model_source.source_kind("dir/Net.ONNX") == "onnx"
    assert model_source.source_kind("pkg.mod:make") == "python"
    assert model_source.source_name("dir/net.onnx") == "net"
    assert model_source.source_name("a/b/mynet.py:Net") == "mynet.Net"
    with pytest.raises(SieveError, match="unknown model 'nonet'.*zoo name"):
        model_source.source_kind("nonet")
    assert model_source.parse_input_shape("3,32,32") == (3, 32, 32)
    with pytest.raises(SieveError, match="--input-shape"):
        model_source.parse_input_shape("3,a")


def test_python_file_factory_with_weights(user_file, tmp_path):
    loaded = model_source.resolve(f"{user_file}:make")
    assert loaded.kind == "python" and loaded.name == "mynet.make" and loaded.traceable
    torch.manual_seed(9)
    other = model_source.resolve(f"{user_file}:Net").model
    weights = tmp_path / "w.pt"
    torch.save(other.state_dict(), weights)
    with_weights = model_source.resolve(f"{user_file}:make", weights=str(weights)).model
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(with_weights(x), other(x))
    assert not torch.allclose(loaded.model(x), other(x))


def test_module_factory():
    loaded = model_source.resolve("sieve.models.caffe_lenet:CaffeLeNet")
    assert loaded.model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("suffix, message", [
    (":nothing", "has no attribute 'nothing'.*defines .*Net"),
    (":broken", r"broken\(\) raised ValueError: needs a config file"),
    (":not_a_model", "returned a int, not a torch.nn.Module"),
])
def test_python_source_errors_are_one_line(user_file, suffix, message):
    with pytest.raises(SieveError, match=message) as err:
        model_source.resolve(f"{user_file}{suffix}")
    assert "\n" not in str(err.value)


def test_missing_files_and_modules(tmp_path):
    with pytest.raises(SieveError, match="does not exist"):
        model_source.resolve(str(tmp_path / "none.py") + ":Net")
    with pytest.raises(SieveError, match="does not exist"):
        model_source.resolve(str(tmp_path / "none.onnx"))
    with pytest.raises(SieveError, match="no module named 'no_such_pkg'"):
        model_source.resolve("no_such_pkg.models:make")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(SieveError, match="raised RuntimeError: boom"):
        model_source.resolve(f"{bad}:Net")


def test_onnx_source_searches_with_the_prefix_cache(user_file, tmp_path):
    """An imported file evaluates plans exactly like hooks do, with the prefix cache on."""
    torch_model, path = _user_net_as_onnx(user_file, tmp_path, 13)
    loaded = model_source.resolve(str(path))
    assert loaded.kind == "onnx" and loaded.name == "mynet" and loaded.input_shape == (3, 8, 8)
    assert {"conv.weight", "conv.input", "branch.weight", "fc.weight"} <= set(loaded.tensor_map)
    images = torch.randn(40, 3, 8, 8)
    plan = _plan(loaded.model, loaded.input_shape)
    ev = PrefixEvaluator(loaded.model, images, batch_size=16)
    assert ev.gm is not None                       # traced: the prefix cache is available
    with torch.no_grad():
        expected = apply_plan(loaded.model, plan)(images)
    torch.testing.assert_close(ev.run(plan), expected, rtol=0, atol=0)
    # the same plan on the torch model it came from gives the same predictions
    with torch.no_grad():
        same = apply_plan(torch_model, plan)(images)
    assert (same.argmax(1) == expected.argmax(1)).float().mean() >= 0.95


def test_untraceable_model_falls_back_to_hooks_and_says_so_once(user_file):
    with pytest.warns(UserWarning, match="cannot trace.*without the prefix cache"):
        loaded = model_source.resolve(f"{user_file}:Branchy")
    assert not loaded.traceable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_source.resolve(f"{user_file}:Branchy")      # said once per model
    images = torch.randn(12, 3, 8, 8)
    plan = _plan(loaded.model, (3, 8, 8))
    ev = PrefixEvaluator(loaded.model, images, batch_size=5)
    assert ev.gm is None
    with torch.no_grad():
        torch.testing.assert_close(ev.run(plan), apply_plan(loaded.model, plan)(images), rtol=0, atol=0)


def test_npz_data_for_an_outside_model(user_file, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((30, 3, 8, 8)).astype(np.float32), y=np.arange(30) % 5)
    loaded, dataset = model_source.load(f"{user_file}:make", data=str(data), val=10)
    assert len(dataset.val) == 10 and len(dataset.test) == 15 and loaded.input_shape == (3, 8, 8)
    assert set(dataset.val.labels.tolist()) == set(range(5))        # interleaved by class
    wrong = tmp_path / "w.npz"
    np.savez(wrong, x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(SieveError, match="1x8x8 images but .* takes 3x8x8"):
        model_source.load(f"{user_file}:make", data=str(wrong), input_shape=(3, 8, 8))
    with pytest.raises(SieveError, match="has no default data; pass --data"):
        model_source.load(f"{user_file}:make")
    np.savez(wrong, images=np.zeros(3))
    with pytest.raises(SieveError, match="needs arrays x"):
        model_source.load(f"{user_file}:make", data=str(wrong))


def test_models_eval_takes_an_onnx_file_and_a_python_module(user_file, tmp_path, capsys):
    import json

    from sieve.cli.main import main

    torch_model, path = _user_net_as_onnx(user_file, tmp_path, 11)
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        labels = torch_model(images).argmax(1).numpy()
    data = tmp_path / "d.npz"
    np.savez(data, x=images.numpy(), y=labels)
    for source in (str(path), f"{user_file}:make"):
        assert main(["models", "--eval", source, "--data", str(data), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["val_accuracy"] == 1.0 and result["test_accuracy"] == 1.0
    assert main(["models", "--eval", "nonet.onnx", "--data", str(data)]) == 2
    assert "does not exist" in capsys.readouterr().err
