"""What --data is: data sets known by content (never by folder name), --dataset, explicit
preprocessing (presets, overrides, recorded in plan.json), .npz inputs, the input shape export
takes from the plan, and the data readers' messages (issues 12 and 13)."""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sieve import zoo
from sieve.cli.main import main
from sieve.datasets.identity import FASHION_CLASSES, identify_idx
from sieve.datasets.idx import load_idx_dir
from sieve.errors import SieveError
from sieve.models import fashion, imagenet
from sieve.preprocess import PRESETS, Preprocess, with_overrides
from tests.conftest import shared_path
from tests.test_data import FASHION, _png, make_idx_dir, needs_fashion

def _lenet_weights(tmp_path: Path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "lenet5.pt"
    torch.save(fashion.build("lenet5").state_dict(), path)
    return str(path)


def _copy_t10k(src: Path, dst: Path, decompress: bool = False) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("t10k-*.gz"):
        if decompress:
            (dst / f.name[:-3]).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copyfile(f, dst / f.name)
    return dst


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- known by content

@needs_fashion
@pytest.mark.parametrize("decompress", [False, True])
def test_fashion_copy_in_a_folder_named_mnist_is_fashion(tmp_path, decompress):
    copy = _copy_t10k(FASHION, tmp_path / "mnist_copy", decompress)
    _, ds = zoo.load("lenet5", data=str(copy), weights=_lenet_weights(tmp_path))
    assert ds.name == "fashion-mnist" and ds.classes == FASHION_CLASSES
    assert ds.preprocess == PRESETS["fashion-mnist"]
    raw = load_idx_dir(copy).test_images[0::2][:3]
    expected = (torch.from_numpy(raw.astype(np.float32)) / 255.0 - 0.2860) / 0.3530
    assert torch.equal(ds.val.images[:3, 0], expected)


@needs_fashion
def test_fashion_copy_with_training_files_reuses_the_trained_model(tmp_path):
    """The same recipe as the default directory: no retraining, the same cached weights."""
    copy = tmp_path / "mnist_copy"
    shutil.copytree(FASHION, copy)
    assert load_idx_dir(copy).name == "fashion-mnist"
    keys = []
    for directory in (str(copy), None):
        idx, name, prep = zoo._idx_data(directory, None, PRESETS.get)
        keys.append((name, zoo._normalisation_key(prep, idx.fingerprint("train"))))
    assert keys[0] == keys[1] and keys[0][0] == "fashion-mnist" and keys[0][1][1:] == (0.2860, 0.3530)
    assert zoo.fashion_record("lenet5", str(copy)) == zoo.fashion_record("lenet5")


@pytest.mark.shared
def test_mnist_is_known_by_content_and_dataset_overrides(tmp_path):
    copy = _copy_t10k(shared_path("data", "mnist-test"), tmp_path / "fashion_like_name")
    weights = _lenet_weights(tmp_path)
    _, ds = zoo.load("lenet5", data=str(copy), weights=weights, val=4, test=4)
    assert ds.name == "mnist" and ds.classes[3] == "3" and ds.preprocess.name == "mnist"
    _, told = zoo.load("lenet5", data=str(copy), weights=weights, val=4, test=4, dataset="fashion-mnist")
    assert told.name == "fashion-mnist" and told.classes == FASHION_CLASSES
    assert not torch.equal(told.val.images, ds.val.images)     # Fashion normalisation now


def test_unknown_idx_set_asks_for_dataset(tmp_path, capsys):
    make_idx_dir(tmp_path / "mnist", 20)        # named like MNIST, content made up
    weights = _lenet_weights(tmp_path)
    code, out, err = _cli(capsys, "models", "--eval", "lenet5", "--data", tmp_path / "mnist", "--weights", weights)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "neither Fashion-MNIST nor MNIST" in err and "--dataset" in err
    code, out, err = _cli(capsys, "models", "--eval", "lenet5", "--data", tmp_path / "mnist", "--weights", weights,
                          "--dataset", "fashion-mnist", "--json")
    result = json.loads(out)
    assert code == 0 and result["dataset"] == "fashion-mnist" and result["input_shape"] == [1, 28, 28]
    assert result["preprocess"]["mean"] == [0.2860]
    code, _, err = _cli(capsys, "models", "--eval", "lenet5", "--data", tmp_path / "mnist", "--weights", weights,
                        "--dataset", "cifar10")
    assert code == 2 and "--dataset cifar10 does not fit" in err


def test_identify_needs_both_test_files_and_no_conflicting_training_files():
    f_img, f_lab, f_tr, m_img, m_lab = ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                                        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                                        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                                        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                                        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2")
    assert identify_idx({"t10k-images": f_img, "t10k-labels": f_lab}) == "fashion-mnist"
    assert identify_idx({"t10k-images": m_img, "t10k-labels": m_lab, "train-images": "custom"}) == "mnist"
    assert identify_idx({"t10k-images": f_img, "t10k-labels": m_lab}) is None
    assert identify_idx({"t10k-images": m_img, "t10k-labels": m_lab, "train-images": f_tr}) is None


def test_cifar_and_imagenet_names_come_from_structure(tmp_path):
    root = tmp_path / "pets"
    for c, cls in enumerate(["cat", "dog"]):
        _png(root / cls / "0.png", seed=c)
    torch.save({f"module.{k}": v for k, v in __import__("sieve.models.cifar_resnet", fromlist=["build"])
                .build("resnet20").state_dict().items()}, tmp_path / "r.th")
    _, own = zoo.load("resnet20", data=str(root), weights=str(tmp_path / "r.th"))
    assert own.name == "pets" and own.classes == ["cat", "dog"] and own.preprocess.name == "cifar10"
    _, ds = zoo.load("resnet20", data=str(root), weights=str(tmp_path / "r.th"), dataset="cifar10")
    assert ds.name == "cifar10" and ds.classes == ["cat", "dog"]
    with pytest.raises(SieveError, match="--dataset imagenet does not fit"):
        zoo.load("resnet20", data=str(root), weights=str(tmp_path / "r.th"), dataset="imagenet")
    from sieve.datasets.imagenet import TORCH_PREPROCESS, load_imagenet

    flowers = load_imagenet(root, TORCH_PREPROCESS)
    assert flowers.name == "pets" and flowers.classes == ["cat", "dog"]
    assert load_imagenet(root, TORCH_PREPROCESS, "imagenet").name == "imagenet"


# ----------------------------------------------------------------------------- reader messages

def test_corrupt_tar_member_is_named_not_a_bytesio(tmp_path):
    from sieve.datasets.imagenet import TORCH_PREPROCESS, load_imagenet

    broken = tmp_path / "src" / "broken.JPEG"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "d").mkdir()
    with tarfile.open(tmp_path / "d" / "imgs.tar", "w") as tar:
        tar.add(broken, arcname="sub/broken.JPEG")
    (tmp_path / "d" / "labels.csv").write_text("filename,class_index_sorted_wnid\nbroken.JPEG,1\n")
    with pytest.raises(SieveError) as exc:
        load_imagenet(tmp_path / "d" / "imgs.tar", TORCH_PREPROCESS)
    message = str(exc.value)
    assert "BytesIO" not in message and "imgs.tar:sub/broken.JPEG" in message and "\n" not in message


def test_folder_holding_the_tar_and_labels_is_accepted(tmp_path):
    from sieve.datasets.imagenet import TORCH_PREPROCESS, load_imagenet

    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        _png(tmp_path / "src" / name, size=(260, 240), seed=i)
    sample = tmp_path / "sample"
    sample.mkdir()
    with tarfile.open(sample / "images.tar", "w") as tar:
        for name in ["a.png", "b.png", "c.png", "d.png"]:
            tar.add(tmp_path / "src" / name, arcname=f"imgs/{name}")
    (sample / "labels.csv").write_text("filename,class_index_sorted_wnid\na.png,5\nb.png,2\nc.png,5\nd.png,9\n")
    folder = load_imagenet(sample, TORCH_PREPROCESS)
    from_tar = load_imagenet(sample / "images.tar", TORCH_PREPROCESS)
    assert folder.name == "imagenet" and sorted(folder.val.labels.tolist() + folder.test.labels.tolist()) == [2, 5, 5, 9]
    assert torch.equal(folder.val.images, from_tar.val.images) and torch.equal(folder.test.labels, from_tar.test.labels)


@pytest.mark.shared
def test_real_imagenet_sample_folder_lists_every_image():
    from sieve.datasets.imagenet import _folder

    sample = shared_path("data", "imagenet-sample")
    items, classes, standard = _folder(sample)
    assert len(items) == 1000 and standard and len(classes) == 1000


# ----------------------------------------------------------------------------- preprocessing

def test_presets_reproduce_the_zoo_arithmetic():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    old_fashion = torch.from_numpy(grey.copy()).float().div_(255.0).sub_(0.2860).div_(0.3530).unsqueeze(1)
    assert torch.equal(PRESETS["fashion-mnist"].to_tensor(grey), old_fashion)
    old_caffe = (torch.from_numpy(grey.copy()).float() * float(np.float32(0.00390625))).unsqueeze(1)
    assert torch.equal(PRESETS["caffe-mnist"].to_tensor(grey), old_caffe)
    rgb = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb.copy()).permute(0, 3, 1, 2).float()
    bgr = x.flip(1) - torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1)
    assert torch.equal(PRESETS["caffe-imagenet"].to_tensor(rgb), bgr)
    cifar = (x / 255.0 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.equal(PRESETS["cifar10"].to_tensor(rgb), cifar)
    assert torch.equal(PRESETS["none"].to_tensor(rgb), x)


def test_preprocess_json_round_trip_and_overrides():
    for prep in PRESETS.values():
        assert Preprocess.from_json(json.loads(json.dumps(prep.to_json()))) == prep
    custom = with_overrides(PRESETS["imagenet"], resize="300x300", crop=256, mean="1,2,3", std="4", bgr=True, scale=2)
    assert (custom.name, custom.resize, custom.square, custom.crop, custom.mean, custom.std, custom.bgr, custom.scale) \
        == ("custom", 300, True, 256, (1.0, 2.0, 3.0), (4.0,), True, 2.0)
    assert with_overrides(PRESETS["imagenet"], crop=224) is PRESETS["imagenet"] or \
        with_overrides(PRESETS["imagenet"], crop=224) == PRESETS["imagenet"]
    for bad, match in [(dict(resize="12x13"), "--resize"), (dict(mean="a,b"), "--mean"), (dict(crop=0), "crop"),
                       (dict(scale=0), "scale"), (dict(std="0"), "std")]:
        with pytest.raises(SieveError, match=match):
            with_overrides(PRESETS["imagenet"], **bad)
    with pytest.raises(SieveError, match="unknown fields"):
        Preprocess.from_json({"name": "x", "zoom": 2})


def test_cli_preprocess_overrides_change_the_inputs(tmp_path, capsys):
    from tests.test_data import make_imagenet_folder

    make_imagenet_folder(tmp_path / "images")
    torch.manual_seed(0)
    torch.save(imagenet.SqueezeNet1_0().state_dict(), tmp_path / "s.pth")
    common = ["models", "--eval", "squeezenet1_0", "--data", tmp_path / "images", "--weights", tmp_path / "s.pth",
              "--json"]
    code, out, _ = _cli(capsys, *common, "--preprocess", "caffe-imagenet")
    assert code == 0 and json.loads(out)["input_shape"] == [3, 227, 227]
    code, out, _ = _cli(capsys, *common, "--crop", "200", "--mean", "0", "--std", "1")
    result = json.loads(out)
    assert code == 0 and result["input_shape"] == [3, 200, 200] and result["preprocess"]["name"] == "custom"
    code, _, err = _cli(capsys, "models", "--eval", "lenet5", "--data", FASHION, "--weights",
                        _lenet_weights(tmp_path), "--crop", "20")
    assert code == 2 and "apply to image files only" in err


# ----------------------------------------------------------------------------- .npz data

def test_npz_data_for_a_zoo_model(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 1, 28, 28)).astype(np.float32)
    y = np.arange(12) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y)
    weights = _lenet_weights(tmp_path)
    model, ds = zoo.load("lenet5", data=str(tmp_path / "d.npz"), weights=weights, dataset="fashion-mnist")
    assert ds.name == "fashion-mnist" and ds.classes == FASHION_CLASSES and ds.preprocess is None
    assert len(ds.val) + len(ds.test) == 12 and ds.input_shape == (1, 28, 28)
    assert torch.equal(torch.sort(torch.cat([ds.val.images, ds.test.images]).flatten())[0],
                       torch.sort(torch.from_numpy(x).flatten())[0])
    code, out, _ = _cli(capsys, "models", "--eval", "lenet5", "--data", tmp_path / "d.npz", "--weights", weights, "--json")
    assert code == 0 and json.loads(out)["dataset"] == "d"


@pytest.mark.parametrize("arrays, match", [
    (dict(x=np.zeros((4, 1, 28, 28), np.float64), y=np.arange(4)), "float32"),
    (dict(x=np.zeros((4, 28, 28), np.float32), y=np.arange(4)), "N x C x H x W"),
    (dict(x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(3)), "N x C x H x W"),
    (dict(x=np.zeros((4, 1, 28, 28), np.float32), y=np.linspace(0, 1, 4)), "integer class indices"),
    (dict(x=np.full((4, 1, 28, 28), np.nan, np.float32), y=np.arange(4)), "NaN/Inf"),
    (dict(images=np.zeros((4, 1, 28, 28), np.float32)), "needs arrays x"),
    (dict(x=np.zeros((4, 3, 32, 32), np.float32), y=np.arange(4)), "cannot take the 3x32x32 inputs"),
    (dict(x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4) * 5), "class index 15"),
    (dict(x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4)), "cannot read .* as an .npz of arrays"),
])
def test_bad_npz_is_one_line(tmp_path, capsys, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    code, out, err = _cli(capsys, "models", "--eval", "lenet5", "--data", tmp_path / "bad.npz",
                          "--weights", _lenet_weights(tmp_path))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert __import__("re").search(match, err), err


def test_npz_refuses_preprocessing(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4))
    with pytest.raises(SieveError, match="already preprocessed"):
        zoo.load("lenet5", data=str(tmp_path / "d.npz"), weights=_lenet_weights(tmp_path), preprocess="mnist")


# ----------------------------------------------------------------------------- input shape in plan, export

def test_models_lists_the_input_each_weights_source_implies(capsys):
    code, out, _ = _cli(capsys, "models")
    squeeze = [line for line in out.splitlines() if "227" in line]
    assert code == 0 and len(squeeze) == 1 and "Caffe" in squeeze[0] and "caffe-imagenet" in squeeze[0]
    assert zoo.input_shape("squeezenet1_0", "x.npz") == (3, 227, 227) == tuple(
        zoo.weights_input_shapes("squeezenet1_0")[1]["input_shape"])
    assert zoo.input_shape("squeezenet1_0") == (3, 224, 224) and zoo.input_shape("lenet5") == (1, 28, 28)


def test_old_plans_without_input_shape_still_load(tmp_path):
    from sieve.plan_io import data_record, load_plan_document, plan_input_shape, plan_preprocess

    doc = _plan_doc([])
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = load_plan_document(tmp_path / "old.json")
    assert plan_input_shape(old) is None and plan_preprocess(old) is None
    ds = zoo.load("lenet5", data=None, weights=None, val=2, test=2)[1] if FASHION.is_dir() else None
    if ds is not None:
        record = data_record(ds)
        assert record["input_shape"] == [1, 28, 28] and Preprocess.from_json(record["preprocess"]) == PRESETS["fashion-mnist"]
    (tmp_path / "bad.json").write_text(json.dumps(dict(doc, input_shape=[3, 0, 2])))
    with pytest.raises(SieveError, match="input_shape"):
        load_plan_document(tmp_path / "bad.json")


def _plan_doc(tensors: list[dict], model: str = "squeezenet1_0", **extra) -> dict:
    variant = {"val_accuracy": 0.5, "test_accuracy": 0.5, "normalized_test_accuracy": 1.0, "mean_bits_weights": 8,
               "mean_bits_activations": 8, "mean_bits": 8, "compression_ratio": 4, "tensors": tensors}
    return {"model": model, "dataset": "imagenet", "strategy": "test", "baseline": {"val_accuracy": 0.5,
            "test_accuracy": 0.5}, "variants": {v: variant for v in ("exact", "accurate", "approximate")},
            "search_seconds": 0, "evaluations": 0, **extra}


def test_export_takes_the_input_shape_from_the_plan(tmp_path, capsys):
    """SqueezeNet searched at 227x227 (Caffe preprocessing) exports at 227x227."""
    import onnx

    from tests.test_data import make_imagenet_folder

    make_imagenet_folder(tmp_path / "images")
    torch.manual_seed(0)
    torch.save(imagenet.SqueezeNet1_0().state_dict(), tmp_path / "s.pth")
    tensors = [{"name": "features.0.weight", "kind": "weight", "elements": 96 * 3 * 7 * 7, "format": "e4m3", "bits": 8},
               {"name": "features.0.input", "kind": "activation", "elements": 3 * 227 * 227, "format": "e4m3",
                "bits": 8}]
    prep = PRESETS["caffe-imagenet"]
    (tmp_path / "plan.json").write_text(json.dumps(_plan_doc(tensors, input_shape=[3, 227, 227],
                                                             preprocess=prep.to_json())))
    code, out, err = _cli(capsys, "export", "--model", "squeezenet1_0", "--weights", tmp_path / "s.pth",
                          "--data", tmp_path / "images", "--preprocess", "caffe-imagenet",
                          "--plan", tmp_path / "plan.json", "--out", tmp_path / "s.onnx")
    assert code == 0, err
    dims = [d.dim_value for d in onnx.load(str(tmp_path / "s.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 227, 227]
    code, out, _ = _cli(capsys, "inspect", tmp_path / "s.onnx")
    assert code == 0 and "input 3x227x227" in out.splitlines()[0]


def test_search_records_input_shape_and_preprocessing(tmp_path):
    from sieve.data import Dataset
    from sieve.plan_io import load_plan_document, plan_input_shape, plan_preprocess
    from sieve.search import run_search
    from tests.search_models import tiny_problem

    model, data = tiny_problem(n_val=200, n_test=100)
    dataset = Dataset("synthetic", data.classes, data.val, data.test, "made up", PRESETS["mnist"])
    run_search(model, dataset, model_name="tiny", strategy="uniform", out_dir=tmp_path, progress=False,
               report=False, threads=1)
    doc = load_plan_document(tmp_path / "plan.json")
    assert plan_input_shape(doc) == (1, 8, 8) and plan_preprocess(doc) == PRESETS["mnist"]
