"""--workers: the first decode of image collections in worker processes gives the same uint8
pixels, in the same order, as the main process; a bad value is one error line; and batches go to
the device through sieve.device.to_device (a no-op on the CPU, pinned + asynchronous on CUDA)."""

from __future__ import annotations

import csv
import os
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sieve.cli.main import main
from sieve.datasets.cifar import load_cifar10
from sieve.datasets.images import CACHE_MIN_IMAGES, ImageRef
from sieve.datasets.imagenet import load_imagenet
from sieve.datasets.workers import POOL_MIN_IMAGES, check_workers, decode_into, default_workers
from sieve.device import to_device
from sieve.errors import SieveError
from sieve.preprocess import Preprocess

N_IMAGES = 96   # above POOL_MIN_IMAGES (so workers >= 1 uses the pool), under CACHE_MIN_IMAGES (no cache)
PREP = Preprocess(name="test", resize=36, crop=32)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU on this machine")


def test_the_test_collection_uses_the_pool_and_no_cache() -> None:
    assert POOL_MIN_IMAGES <= N_IMAGES < CACHE_MIN_IMAGES


def _jpegs(folder: Path, count: int = N_IMAGES) -> list[str]:
    """``count`` random JPEGs of varied sizes (so resize and crop both work) and a labels.csv."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        h, w = int(rng.integers(36, 60)), int(rng.integers(36, 60))
        name = f"img_{i:03d}.JPEG"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name, quality=90)
        names.append(name)
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "class_index"])
        writer.writerows([name, i % 7] for i, name in enumerate(names))
    return names


def _tar_beside_labels(folder: Path, names: list[str], target: Path) -> Path:
    target.mkdir(parents=True)
    with tarfile.open(target / "images.tar", "w") as tar:
        for name in names:
            tar.add(folder / name, arcname=f"imgs/{name}")
    (target / "labels.csv").write_bytes((folder / "labels.csv").read_bytes())
    return target / "images.tar"


def _same(a, b) -> None:
    assert a.name == b.name and a.classes == b.classes
    for split in ("val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)


@pytest.mark.parametrize("layout", ["folder", "tar"])
def test_imagenet_decode_with_workers_is_identical(layout, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SIEVE_CACHE", str(tmp_path / "cache"))
    names = _jpegs(tmp_path / "flat")
    data = tmp_path / "flat" if layout == "folder" else _tar_beside_labels(tmp_path / "flat", names, tmp_path / "t")
    single = load_imagenet(data, PREP, workers=0)
    capsys.readouterr()
    pooled = load_imagenet(data, PREP, workers=2)
    assert f"0/{N_IMAGES}" in capsys.readouterr().err   # the bar has its total with workers too
    _same(single, pooled)
    assert len(single.val) + len(single.test) == N_IMAGES
    assert not (tmp_path / "cache" / "data").is_dir() or not any((tmp_path / "cache" / "data").glob("*.npz"))


def _marking_crop(marks: str, ref: ImageRef, img) -> np.ndarray:
    """PREP's crop, leaving a file named after the process that made it."""
    Path(marks, str(os.getpid())).touch()
    return PREP.crop_image(img)


@pytest.mark.parametrize("layout", ["folder", "tar"])
def test_decode_into_runs_in_worker_processes_in_list_order(layout, tmp_path) -> None:
    names = _jpegs(tmp_path / "flat")
    if layout == "folder":
        refs = [ImageRef(tmp_path / "flat" / n) for n in names]
    else:
        tar = _tar_beside_labels(tmp_path / "flat", names, tmp_path / "t")
        refs = [ImageRef(tar, f"imgs/{n}") for n in names]
    refs = refs[::-1]   # not the file order: the output follows the list
    expect = np.stack([PREP.crop_image(Image.open(tmp_path / "flat" / n).convert("RGB")) for n in names[::-1]])
    marks = tmp_path / "marks"
    marks.mkdir()
    out = decode_into(np.zeros_like(expect), refs, partial(_marking_crop, str(marks)), workers=2)
    assert np.array_equal(out, expect)
    pids = {int(p.name) for p in marks.iterdir()}
    assert pids and os.getpid() not in pids and len(pids) <= 2
    single = decode_into(np.zeros_like(expect), refs, partial(_marking_crop, str(marks)), workers=0)
    assert np.array_equal(single, expect) and os.getpid() in {int(p.name) for p in marks.iterdir()}


def _dying_crop(ref: ImageRef, img) -> np.ndarray:
    os._exit(3)   # a worker killed mid-decode (the OOM killer's doing, in real life)


def test_a_dead_worker_is_one_error_line(tmp_path) -> None:
    names = _jpegs(tmp_path / "flat")
    refs = [ImageRef(tmp_path / "flat" / n) for n in names]
    with pytest.raises(SieveError, match=r"^a decode worker process died while decoding flat \(out of memory\?\); "
                                         r"rerun with --workers 0"):
        decode_into(np.zeros((len(refs), 32, 32, 3), np.uint8), refs, _dying_crop, workers=2, desc="decode flat")


def _cifar_tar(root: Path, count: int = N_IMAGES) -> Path:
    rng = np.random.default_rng(1)
    classes = ["airplane", "cat", "dog", "ship"]
    for i in range(count):
        path = root / "test" / classes[i % 4] / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=85)
    tar_path = root.parent / "cifar.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root / "test", arcname="test")
    return tar_path


def test_cifar_jpeg_decode_with_workers_is_identical(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIEVE_CACHE", str(tmp_path / "cache"))
    tar_path = _cifar_tar(tmp_path / "c")
    single, pooled = load_cifar10(tar_path, workers=0), load_cifar10(tar_path, workers=2)
    assert single.images.shape == (N_IMAGES, 32, 32, 3)
    assert np.array_equal(single.images, pooled.images) and np.array_equal(single.labels, pooled.labels)
    folder = load_cifar10(tmp_path / "c", workers=2)
    assert np.array_equal(folder.images, single.images)


def test_a_bad_image_is_the_same_error_line_with_workers(tmp_path) -> None:
    names = _jpegs(tmp_path / "flat")
    for i in (77, 7):   # two bad files of class 0 (i % 7): the first in list order is the one reported
        (tmp_path / "flat" / names[i]).write_bytes(b"not a jpeg")
    messages = []
    for workers in (0, 2):
        with pytest.raises(SieveError) as info:
            load_imagenet(tmp_path / "flat", PREP, workers=workers)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and names[7] in messages[0] and "cannot decode image" in messages[0]


def test_a_wrong_size_cifar_image_is_the_same_error_with_workers(tmp_path) -> None:
    tar_path = _cifar_tar(tmp_path / "c")
    with tarfile.open(tar_path, "a") as tar:
        big = tmp_path / "big.jpg"
        Image.new("RGB", (40, 32)).save(big)
        tar.add(big, arcname="test/cat/9999.jpg")
    messages = []
    for workers in (0, 2):
        with pytest.raises(SieveError, match="is 40x32; CIFAR-10 images must be 32x32") as info:
            load_cifar10(tar_path, workers=workers)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_check_workers_values() -> None:
    assert check_workers(0) == 0 and check_workers(3) == 3 and check_workers("2") == 2
    assert check_workers(np.int64(1)) == 1
    assert check_workers(None) == default_workers() == min(4, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("bad", [-1, "-1", "two", "", 1.5, "1.5", True, [2]])
def test_bad_workers_is_one_sieve_error(bad) -> None:
    with pytest.raises(SieveError, match=r"^workers must be a whole number >= 0 \(0 decodes in the main process\), "
                                         r"got .+$"):
        check_workers(bad)


def test_api_loaders_check_workers_before_reading(tmp_path) -> None:
    from sieve import model_source, zoo

    for call in (lambda: load_imagenet(tmp_path / "missing", PREP, workers=-2),
                 lambda: load_cifar10(tmp_path / "missing.tar", workers="x"),
                 lambda: zoo.load("resnet20", data=str(tmp_path / "missing.tar"), workers=-1),
                 lambda: model_source.load("resnet20", data=str(tmp_path / "missing.tar"), workers=-1)):
        with pytest.raises(SieveError, match="^workers must be a whole number"):
            call()


@pytest.mark.parametrize("command", [["search", "--model", "lenet5", "--quiet"], ["models", "--eval", "lenet5"],
                                     ["cascade", "--quiet"], ["ensemble", "--quiet"], ["selector", "--quiet"]])
@pytest.mark.parametrize("bad", ["-1", "2.5"])
def test_cli_bad_workers_is_one_line_exit_2(command, bad, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--workers", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: workers must be a whole number >= 0 (0 decodes in the main process), got '{bad}'"]
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_workers_reaches_the_loader(tmp_path, monkeypatch) -> None:
    from sieve.cli.data_args import add_data_arguments, data_options
    import argparse

    p = argparse.ArgumentParser()
    add_data_arguments(p)
    assert data_options(p.parse_args(["--workers", "3"]))["workers"] == 3
    assert data_options(p.parse_args([]))["workers"] == default_workers()


# ----------------------------------------------------------------------------- pinned memory

def test_to_device_on_the_cpu_is_a_no_op() -> None:
    x = torch.arange(12, dtype=torch.float32).view(3, 4)
    assert to_device(x, torch.device("cpu")) is x
    assert to_device(x, "cpu") is x
    assert not x.is_pinned()   # nothing is pinned without a GPU


@needs_cuda
def test_to_device_on_cuda_pins_and_copies_asynchronously() -> None:
    x = torch.randn(64, 3, 8, 8)
    y = to_device(x, torch.device("cuda:0"))
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
    pinned = x.pin_memory()
    z = to_device(pinned[16:32], "cuda")   # a slice of a pinned split is pinned: no extra host copy
    torch.cuda.synchronize()
    assert torch.equal(z.cpu(), x[16:32])
