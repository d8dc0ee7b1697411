"""The model zoo contract: names, shapes, training cache, pretrained weights, bad input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sieve import zoo
from sieve.cli.main import main as cli_main
from sieve.errors import SieveError
from sieve.models import cifar_resnet, fashion, imagenet
from tests.conftest import shared_path
from tests.test_data import _png, make_idx_dir, needs_fashion

EXPECTED = ["lenet5", "convnet", "minivgg", "lenet_caffe", "resnet20", "resnet32", "resnet44", "resnet56",
            "alexnet", "squeezenet1_0"]


def _quantizable(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]


def test_known_models_and_info():
    assert zoo.known_models() == EXPECTED
    assert zoo.model_info("lenet5")["input_shape"] == (1, 28, 28)
    assert zoo.model_info("resnet56") == {**zoo.model_info("resnet56"), "dataset": "cifar10", "num_classes": 10}
    assert zoo.model_info("alexnet")["num_classes"] == 1000


def test_unknown_model_lists_known_ones():
    with pytest.raises(SieveError, match="unknown model 'lenet7'; known models: lenet5, convnet"):
        zoo.load("lenet7")
    with pytest.raises(SieveError, match="known models"):
        zoo.model_info("vgg16")


@pytest.mark.parametrize("name", ["lenet5", "convnet", "minivgg", "resnet20", "resnet56"])
def test_architectures_output_shapes(name):
    info = zoo.model_info(name)
    model = fashion.build(name) if info["dataset"] == "fashion-mnist" else cifar_resnet.build(name)
    out = model.eval()(torch.zeros(2, *info["input_shape"]))
    assert out.shape == (2, info["num_classes"])


def test_lenet5_follows_caffe_exactly():
    model = fashion.build("lenet5")
    assert _quantizable(model) == ["conv1", "conv2", "ip1", "ip2"]
    assert [type(m).__name__ for m in model.children()] == [
        "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert model.conv1.weight.shape == (20, 1, 5, 5) and model.ip1.weight.shape == (500, 800)


def test_pool_cost_is_ordered():
    def macs(model, shape):
        total = 0

        def hook(m, inp, out):
            nonlocal total
            w = m.weight
            total += out.numel() // out.shape[0] * (w[0].numel())
        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        model.eval()(torch.zeros(1, *shape))
        for h in handles:
            h.remove()
        return total
    costs = [macs(fashion.build(n), (1, 28, 28)) for n in ("lenet5", "convnet", "minivgg")]
    assert costs == sorted(costs) and costs[0] < costs[1] < costs[2]


def test_torchvision_parameter_names():
    alex = imagenet.AlexNet().state_dict()
    assert [k for k in alex if k.endswith("weight")] == [
        "features.0.weight", "features.3.weight", "features.6.weight", "features.8.weight", "features.10.weight",
        "classifier.1.weight", "classifier.4.weight", "classifier.6.weight"]
    squeeze = imagenet.SqueezeNet1_0().state_dict()
    assert len(squeeze) == 52 and "features.12.expand3x3.weight" in squeeze and "classifier.1.bias" in squeeze
    assert squeeze["features.3.squeeze.weight"].shape == (16, 96, 1, 1)


# ----------------------------------------------------------------------------- Fashion-MNIST pool

@needs_fashion
def test_lenet5_trained_cached_and_accurate():
    start = time.perf_counter()
    model, ds = zoo.load("lenet5")
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert ds.name == "fashion-mnist" and len(ds.classes) == 10 and ds.classes[9] == "Ankle boot"
    assert ds.val.images.shape == (5000, 1, 28, 28) and ds.test.images.shape == (10000, 1, 28, 28)
    assert ds.val.labels.dtype == torch.int64 and abs(float(ds.val.images.mean())) < 0.05
    acc, logits = zoo.evaluate(model, ds.test)
    assert acc > 0.85 and logits.shape == (10000, 10)
    record = zoo.fashion_record("lenet5")
    assert record is not None and abs(record["test_accuracy"] - acc) < 1e-6
    # second load comes from the cache: fast and bit-identical
    start = time.perf_counter()
    again, ds2 = zoo.load("lenet5", val=100, test=50)
    assert time.perf_counter() - start < 10
    assert len(ds2.val) == 100 and len(ds2.test) == 50
    assert torch.equal(ds2.test.images, ds.test.images[:50])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@needs_fashion
def test_train_only_with_a_training_set(tmp_path):
    make_idx_dir(tmp_path, 10)
    with pytest.raises(SieveError, match="lenet5 is trained on the train-\\* idx files"):
        zoo.load("lenet5", data=str(tmp_path), dataset="fashion-mnist")


def test_cache_lock_trains_once(tmp_path, monkeypatch):
    from sieve.models import training

    monkeypatch.setenv("SIEVE_CACHE", str(tmp_path))
    rec = training.recipe("lenet5", "fingerprint", 0.5, 0.5, 10)
    calls = []

    def train_fn():
        calls.append(1)
        time.sleep(0.3)
        return fashion.build("lenet5")

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        training.trained_state("lenet5", rec, train_fn, lambda m: {"test_accuracy": 0.5}))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    weights, record = training.cache_paths(rec)
    assert weights.is_file() and record.is_file() and weights.parent == tmp_path / "models"
    assert not list(weights.parent.glob("*.part"))
    assert training.read_record(rec)["test_accuracy"] == 0.5


def test_recipe_hash_depends_on_everything():
    from sieve.cache import recipe_hash
    from sieve.models import training

    base = training.recipe("lenet5", "abc", 0.286, 0.353, 55000)
    assert recipe_hash(base) == recipe_hash(dict(reversed(list(base.items()))))
    assert recipe_hash(base) != recipe_hash(training.recipe("lenet5", "abd", 0.286, 0.353, 55000))
    assert recipe_hash(base) != recipe_hash(training.recipe("convnet", "abc", 0.286, 0.353, 55000))


# ----------------------------------------------------------------------------- weights checks

def test_weights_mismatch_missing_nan_unreadable(tmp_path):
    make_idx_dir(tmp_path / "d", 10)
    data = str(tmp_path / "d")
    state = fashion.build("lenet5").state_dict()
    bad_shape = dict(state, **{"conv2.weight": torch.zeros(50, 20, 3, 3)})
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(SieveError, match=r"key 'conv2.weight' has shape \(50, 20, 3, 3\) in the file, "
                                         r"the model expects \(50, 20, 5, 5\)"):
        zoo.load("lenet5", data=data, weights=str(tmp_path / "shape.pt"))
    torch.save({k: v for k, v in state.items() if k != "ip1.bias"}, tmp_path / "missing.pt")
    with pytest.raises(SieveError, match=r"missing key 'ip1.bias' \(model expects shape \(500,\)\)"):
        zoo.load("lenet5", data=data, weights=str(tmp_path / "missing.pt"))
    torch.save(dict(state, extra=torch.zeros(3)), tmp_path / "extra.pt")
    with pytest.raises(SieveError, match="unexpected key 'extra'"):
        zoo.load("lenet5", data=data, weights=str(tmp_path / "extra.pt"))
    nan = dict(state)
    nan["ip2.weight"] = nan["ip2.weight"].clone()
    nan["ip2.weight"][0, 0] = float("inf")
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(SieveError, match="tensor 'ip2.weight' contains 1 NaN/Inf"):
        zoo.load("lenet5", data=data, weights=str(tmp_path / "nan.pt"))
    (tmp_path / "junk.pt").write_bytes(b"definitely not a torch file")
    with pytest.raises(SieveError, match="cannot read weights .*junk.pt"):
        zoo.load("lenet5", data=data, weights=str(tmp_path / "junk.pt"))
    with pytest.raises(SieveError, match="does not exist"):
        zoo.load("lenet5", data=data, weights=str(tmp_path / "nothing.pt"))
    torch.save(state, tmp_path / "ok.pt")
    model, _ = zoo.load("lenet5", data=data, weights=str(tmp_path / "ok.pt"), dataset="mnist")
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_missing_and_bad_data_dirs(tmp_path):
    with pytest.raises(SieveError, match="does not exist"):
        zoo.load("lenet5", data=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SieveError, match="no MNIST-style test set"):
        zoo.load("lenet_caffe", data=str(tmp_path / "empty"), weights=str(_caffe_weights(tmp_path)))
    with pytest.raises(SieveError, match="no CIFAR-10 images found"):
        zoo.load("resnet20", data=str(tmp_path / "empty"), weights=str(_resnet_weights(tmp_path)))


def _caffe_weights(tmp_path: Path) -> Path:
    """Made-up Caffe LeNet weights in the Caffe .npz layout (so the test needs no ../shared)."""
    from sieve.models.caffe_lenet import CaffeLeNet

    path = tmp_path / "lenet_caffe.npz"
    arrays = {f"{name.rsplit('.', 1)[0]}/{'w' if name.endswith('weight') else 'b'}": t.detach().numpy()
              for name, t in CaffeLeNet().state_dict().items()}
    np.savez(path, **arrays)
    return path


def _resnet_weights(tmp_path: Path) -> Path:
    path = tmp_path / "r20.th"
    if not path.exists():
        sd = {f"module.{k}": v for k, v in cifar_resnet.build("resnet20").state_dict().items()}
        torch.save({"state_dict": sd, "best_prec1": 0.0}, path)
    return path


def test_resnet_from_pickles_with_made_up_weights(tmp_path):
    import pickle

    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    rng = np.random.default_rng(1)
    with open(batches / "test_batch", "wb") as handle:
        pickle.dump({b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3, 4, 5]}, handle)
    model, ds = zoo.load("resnet20", data=str(batches), weights=str(_resnet_weights(tmp_path)))
    assert ds.val.labels.tolist() == [0, 2, 4] and ds.test.images.shape == (3, 3, 32, 32)
    assert zoo.evaluate(model, ds.test)[1].shape == (3, 10)


# ----------------------------------------------------------------------------- ImageNet paths

@pytest.mark.parametrize("name", ["alexnet", "squeezenet1_0"])
def test_imagenet_models_with_made_up_weights(tmp_path, name):
    from tests.test_data import make_imagenet_folder

    make_imagenet_folder(tmp_path / "images")
    torch.manual_seed(0)
    net = imagenet.BUILDERS[name]()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    model, ds = zoo.load(name, data=str(tmp_path / "images"), weights=str(tmp_path / "w.pth"))
    assert len(ds.val) == 2 and len(ds.test) == 2 and ds.test.images.shape[1:] == (3, 224, 224)
    acc, logits = zoo.evaluate(model, ds.test)
    assert logits.shape == (2, 1000) and bool(torch.isfinite(logits).all()) and 0.0 <= acc <= 1.0
    with torch.no_grad():
        assert torch.allclose(logits, net.eval()(ds.test.images), atol=1e-5)


def test_imagenet_missing_weights_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    with pytest.raises(SieveError, match=r"alexnet needs ImageNet weights: pass --weights FILE .*alexnet-owt-7be5be79\.pth"):
        zoo.load("alexnet", data=str(tmp_path))
    monkeypatch.setenv("SIEVE_SHARED", str(tmp_path / "no-shared"))
    torch.save(imagenet.SqueezeNet1_0().state_dict(), tmp_path / "s.pth")
    with pytest.raises(SieveError, match="squeezenet1_0 needs ImageNet images via --data"):
        zoo.load("squeezenet1_0", weights=str(tmp_path / "s.pth"))
    with pytest.raises(SieveError, match="Caffe .npz weights are supported for squeezenet1_0 only"):
        np.savez(tmp_path / "a.npz", **{"conv1/w": np.zeros((64, 3, 11, 11), np.float32)})
        _png(tmp_path / "img" / "n01440764" / "x.png", size=(64, 64))
        zoo.load("alexnet", data=str(tmp_path / "img"), weights=str(tmp_path / "a.npz"))


# ----------------------------------------------------------------------------- pretrained, ../shared

def test_lenet_caffe_on_shared_mnist():
    shared_path("models", "lenet-caffe-mnist", "lenet_caffe_mnist.npz")
    shared_path("data", "mnist-test")
    model, ds = zoo.load("lenet_caffe")
    assert ds.name == "mnist" and len(ds.val) == len(ds.test) == 5000
    assert _quantizable(model) == ["conv1", "conv2", "ip1", "ip2"]
    hits = sum(zoo.evaluate(model, split)[0] * len(split) for split in (ds.val, ds.test))
    assert abs(hits / 10000 - 0.9904) < 0.0005        # the measured figure in ../shared/README.md


def test_resnet20_on_shared_cifar_jpeg():
    shared_path("data", "cifar10-test-jpeg.tar")
    checkpoint = shared_path("models", "cifar10-resnet", "resnet20-12fca82f.th")
    model, ds = zoo.load("resnet20", test=1000)
    assert ds.name == "cifar10" and len(ds.test) == 1000 and len(ds.val) == 5000
    assert np.bincount(ds.test.labels.numpy(), minlength=10).tolist() == [100] * 10
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert [k.removeprefix("module.") for k in raw if not k.endswith("num_batches_tracked")] == [
        k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    acc, _ = zoo.evaluate(model, ds.test)
    assert abs(acc - 0.810) < 0.015


@pytest.mark.slow
@pytest.mark.parametrize("name,expected", [("resnet20", 0.810), ("resnet56", 0.837)])
def test_resnets_full_jpeg_test_set(name, expected):
    """Against ../shared/README.md's figures on all 10,000 JPEGs (measured here: 81.03 %, 83.20 %)."""
    shared_path("data", "cifar10-test-jpeg.tar")
    model, ds = zoo.load(name)
    hits = sum(zoo.evaluate(model, split)[0] * len(split) for split in (ds.val, ds.test))
    assert abs(hits / 10000 - expected) < 0.008


@pytest.mark.slow
def test_squeezenet_deep_compression_on_imagenet_sample():
    weights = shared_path("models", "squeezenet1.0-deepcompression", "squeezenet1.0_deepcompression_decoded.npz")
    shared_path("data", "imagenet-sample", "imagenet-sample-images.tar")
    model, ds = zoo.load("squeezenet1_0", weights=str(weights))
    assert ds.test.images.shape[1:] == (3, 227, 227)
    hits = sum(zoo.evaluate(model, split, batch_size=50)[0] * len(split) for split in (ds.val, ds.test))
    assert abs(hits / 1000 - 0.655) < 0.02


# ----------------------------------------------------------------------------- CLI

def test_cli_lists_models(capsys):
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out


def test_cli_errors_are_one_line(capsys):
    assert cli_main(["models", "--eval", "nonet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'nonet'") and err.count("\n") == 1
    assert cli_main(["models", "--train", "resnet20"]) == 2
    assert "pretrained, not trained here" in capsys.readouterr().err


def test_cli_eval_lenet_caffe_json(capsys):
    import json

    shared_path("models", "lenet-caffe-mnist", "lenet_caffe_mnist.npz")
    shared_path("data", "mnist-test")
    assert cli_main(["models", "--eval", "lenet_caffe", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "mnist" and result["test_images"] == 5000
    assert 0.985 < result["test_accuracy"] < 0.995


@pytest.mark.slow
@needs_fashion
def test_pool_spans_accuracy():
    """lenet5 < convnet < minivgg on the Fashion-MNIST test set (trains what is not cached)."""
    accs = []
    for name in ("lenet5", "convnet", "minivgg"):
        model, ds = zoo.load(name)
        accs.append(zoo.evaluate(model, ds.test)[0])
    assert 0.85 < accs[0] < accs[1] < accs[2]
