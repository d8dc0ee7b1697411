"""Data readers and split rules: idx files, CIFAR-10 layouts, ImageNet collections."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sieve import zoo
from sieve.data import Split, even_odd, interleave_by_class, split_test_only
from sieve.datasets.cifar import load_cifar10
from sieve.datasets.idx import load_idx_dir, read_idx
from sieve.datasets.imagenet import CAFFE_PREPROCESS, TORCH_PREPROCESS, load_imagenet
from sieve.errors import SieveError
from sieve.models.caffe_lenet import CaffeLeNet

FASHION = Path(zoo.DEFAULT_FASHION)
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                                   reason=f"needs Fashion-MNIST in {FASHION} (Debian dataset-fashion-mnist)")


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def make_idx_dir(directory: Path, n_test: int, n_train: int = 0, compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_test) % 10).astype(np.uint8)
    write_idx(directory / "t10k-images-idx3-ubyte", images, compress)
    write_idx(directory / "t10k-labels-idx1-ubyte", labels, compress)
    if n_train:
        write_idx(directory / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), compress)
        write_idx(directory / "train-labels-idx1-ubyte", (np.arange(n_train) % 10).astype(np.uint8), compress)
    return images, labels


# ----------------------------------------------------------------------------- split rules

def test_even_odd_disjoint_and_complete():
    val, test = even_odd(11)
    assert set(val).isdisjoint(test)
    assert sorted([*val, *test]) == list(range(11))


def test_interleave_makes_prefixes_balanced():
    labels = np.repeat(np.arange(10), 100)          # class-ordered like the CIFAR tar
    val, test = split_test_only(labels, class_ordered=True)
    assert set(val).isdisjoint(test) and len(val) == len(test) == 500
    assert np.bincount(labels[test[:100]], minlength=10).tolist() == [10] * 10
    assert np.bincount(labels[val[:50]], minlength=10).tolist() == [5] * 10
    assert sorted(interleave_by_class(np.arange(6), np.array([0, 0, 0, 1, 1, 1]))) == list(range(6))


def test_split_head():
    split = Split(np.zeros((5, 1, 2, 2), np.float32), np.arange(5))
    assert len(split.head(3)) == 3 and len(split.head(None)) == 5 and len(split.head(99)) == 5


# ----------------------------------------------------------------------------- idx

@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip_and_test_only_halves(tmp_path, compress):
    images, labels = make_idx_dir(tmp_path, 20, compress=compress)
    data = load_idx_dir(tmp_path)
    assert not data.has_train
    assert np.array_equal(data.test_images, images) and np.array_equal(data.test_labels, labels)
    np.testing.assert_array_equal(read_idx(next(tmp_path.glob("t10k-labels*"))), labels)


def test_idx_errors(tmp_path):
    with pytest.raises(SieveError, match="does not exist"):
        load_idx_dir(tmp_path / "nope")
    with pytest.raises(SieveError, match="no MNIST-style test set"):
        load_idx_dir(tmp_path)
    make_idx_dir(tmp_path, 10, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(SieveError, match="t10k-labels-idx1-ubyte.*missing"):
        load_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x0a\x01")
    with pytest.raises(SieveError, match="truncated"):
        load_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"garbage!")
    with pytest.raises(SieveError, match="not an idx file"):
        load_idx_dir(tmp_path)


def test_t10k_only_dir_gives_even_odd_halves(tmp_path):
    images, labels = make_idx_dir(tmp_path, 40)
    weights = tmp_path / "w.pt"
    torch.save(CaffeLeNet().state_dict(), weights)
    _, ds = zoo.load("lenet5", data=str(tmp_path), weights=str(weights), dataset="mnist")   # made up: say what
    assert len(ds.val) == len(ds.test) == 20
    assert ds.val.labels.tolist() == labels[0::2].tolist() and ds.test.labels.tolist() == labels[1::2].tolist()
    assert ds.name == "mnist"


@needs_fashion
def test_fashion_normalisation_constants_match_training_set():
    data = load_idx_dir(FASHION)
    x = data.train_images.astype(np.float64) / 255.0
    mean, std = zoo.NORMALISATION["fashion-mnist"]
    assert abs(x.mean() - mean) < 5e-4 and abs(x.std() - std) < 5e-4
    assert data.name == "fashion-mnist" and data.train_images.shape == (60000, 28, 28)


# ----------------------------------------------------------------------------- CIFAR-10

def _png(path: Path, size=(32, 32), seed=0) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_cifar_folder_tar_and_pickle(tmp_path):
    root = tmp_path / "folder" / "test"
    for c, cls in enumerate(["cat", "airplane", "dog"]):
        for i in range(2):
            _png(root / cls / f"{i:04d}.png", seed=10 * c + i)
    folder = load_cifar10(tmp_path / "folder")
    assert folder.classes == ["airplane", "cat", "dog"] and folder.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert folder.images.shape == (6, 32, 32, 3) and folder.class_ordered
    tar_path = tmp_path / "c.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root, arcname="test")
    from_tar = load_cifar10(tar_path)
    assert np.array_equal(from_tar.images, folder.images) and np.array_equal(from_tar.labels, folder.labels)
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    data = np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072)
    with open(batches / "test_batch", "wb") as handle:
        pickle.dump({b"data": data, b"labels": [3, 1, 4, 1]}, handle)
    pick = load_cifar10(tmp_path)
    assert pick.labels.tolist() == [3, 1, 4, 1] and not pick.class_ordered
    assert pick.images[0, 0, 1, 0] == data[0, 1] and pick.images[0, 0, 0, 2] == data[0, 2048]


def test_cifar_bad_inputs(tmp_path):
    with pytest.raises(SieveError, match="does not exist"):
        load_cifar10(tmp_path / "missing.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SieveError, match="no CIFAR-10 images found"):
        load_cifar10(tmp_path / "empty")
    bad = tmp_path / "bad" / "cat" / "0001.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(SieveError, match=r"cannot decode image .*0001\.jpg"):
        load_cifar10(tmp_path / "bad")
    (tmp_path / "notar.tar").write_bytes(b"x" * 100)
    with pytest.raises(SieveError, match="cannot read tar"):
        load_cifar10(tmp_path / "notar.tar")


# ----------------------------------------------------------------------------- ImageNet

def make_imagenet_folder(root: Path, per_class: int = 2) -> list[str]:
    wnids = ["n01440764", "n01443537", "n09999999"][:2]
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            _png(root / wnid / f"img{i}.png", size=(300 + 20 * i, 260), seed=c * 10 + i)
    return wnids


def test_imagenet_wnid_folders_map_to_standard_indices(tmp_path):
    make_imagenet_folder(tmp_path / "in")
    ds = load_imagenet(tmp_path / "in", TORCH_PREPROCESS)
    assert ds.val.images.shape == (2, 3, 224, 224) and len(ds.classes) == 1000
    assert sorted(ds.val.labels.tolist() + ds.test.labels.tolist()) == [0, 0, 1, 1]
    caffe = load_imagenet(tmp_path / "in", CAFFE_PREPROCESS)
    assert caffe.test.images.shape == (2, 3, 227, 227)


def test_imagenet_csv_folder_and_tar(tmp_path):
    flat = tmp_path / "flat"
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        _png(flat / name, size=(256, 300), seed=i)
    (flat / "labels.csv").write_text("filename,wnid,class_index_sorted_wnid,name\n"
                                     "a.png,x,7,seven\nb.png,x,3,three\nc.png,x,999,last\n")
    ds = load_imagenet(flat, TORCH_PREPROCESS)
    assert ds.val.labels.tolist() == [3, 999] and ds.test.labels.tolist() == [7]
    tar_dir = tmp_path / "tarred"
    tar_dir.mkdir()
    with tarfile.open(tar_dir / "imgs.tar", "w") as tar:
        for name in ["a.png", "b.png", "c.png"]:
            tar.add(flat / name, arcname=name)
    (tar_dir / "labels.csv").write_text((flat / "labels.csv").read_text())
    ds_tar = load_imagenet(tar_dir / "imgs.tar", TORCH_PREPROCESS)
    assert ds_tar.val.labels.tolist() == [3, 999]
    assert float((ds_tar.val.images - ds.val.images).abs().max()) == 0.0


def test_imagenet_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SieveError, match="no images found"):
        load_imagenet(tmp_path / "empty", TORCH_PREPROCESS)
    flat = tmp_path / "flat"
    _png(flat / "a.png")
    (flat / "labels.csv").write_text("filename,class_index_sorted_wnid\nb.png,1\n")
    with pytest.raises(SieveError, match=r"a\.png has no row in .*labels\.csv"):
        load_imagenet(flat, TORCH_PREPROCESS)
    (flat / "labels.csv").write_text("filename,class_index_sorted_wnid\na.png,1000\n")
    with pytest.raises(SieveError, match="outside 0..999"):
        load_imagenet(flat, TORCH_PREPROCESS)
    bad = tmp_path / "corrupt" / "n01440764" / "broken.JPEG"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(SieveError, match=r"cannot decode image .*broken\.JPEG"):
        load_imagenet(tmp_path / "corrupt", TORCH_PREPROCESS)
    with tarfile.open(tmp_path / "nolabels.tar", "w") as tar:
        tar.add(flat / "a.png", arcname="a.png")
    with pytest.raises(SieveError, match="no labels for"):
        load_imagenet(tmp_path / "nolabels.tar", TORCH_PREPROCESS)
