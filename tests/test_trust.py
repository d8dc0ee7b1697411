"""No code runs from a user's weights or data file (issue 12, Security).

Every file below carries a pickle whose ``__reduce__`` asks the unpickler to call
``os.system("touch MARKER")``.  Each user path that reads weights or data gets one: it must end
with exit code 2 and exactly one ``error:`` line naming the file, no traceback, no marker file
(the payload never ran) and no output file.  Legitimate files — the akamaster ``.th``
checkpoints, ``.safetensors``, CIFAR-10 python batches of every pickle protocol — still load.
"""

from __future__ import annotations

import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sieve import zoo
from sieve.cli.main import main as cli_main
from sieve.errors import SieveError
from sieve.models import cifar_resnet, training
from sieve.models.weights import load_into, read_state_dict
from sieve.safe_pickle import read_data_pickle
from tests.conftest import shared_path


class Payload:
    """Unpickling this object runs ``touch <marker>``: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working directory (cwd, so default outputs under build/ would land here too), a
    private cache and ../shared, and a tiny good CIFAR-10 batch directory."""
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("SIEVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SIEVE_SHARED", str(tmp_path / "shared"))
    _cifar_batch(root / "good" / "cifar-10-batches-py" / "test_batch",
                 {b"data": np.random.default_rng(1).integers(0, 256, (6, 3072), dtype=np.uint8),
                  b"labels": [0, 1, 2, 3, 4, 5]})
    return root


def _cifar_batch(path: Path, obj, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)
    return path


def _marker(work: Path) -> Path:
    return work.parent / "MARKER"


def _evil_weights(work: Path, name: str) -> Path:
    """A weights file whose payload would create the marker, in the format its suffix implies."""
    path = work / name
    payload = Payload(_marker(work))
    if path.suffix == ".pt":            # torch zip format, the payload inside a state dict
        torch.save({"state_dict": {"conv1.weight": payload}}, path)
    elif path.suffix == ".pth":         # torch's legacy (pre-1.6) format
        torch.save({"conv1.weight": payload}, path, _use_new_zipfile_serialization=False)
    else:                               # .th / .safetensors / .npz: a bare pickle under that name
        with open(path, "wb") as handle:
            pickle.dump({"best_prec1": 0.0, "state_dict": payload}, handle)
    return path


def _refused(work: Path, capsys, argv: list[str], named: Path) -> str:
    """Run the CLI and check the contract: exit 2, one error line naming ``named``, nothing run,
    nothing written.  Returns the error line."""
    before = {p for p in work.rglob("*")}
    code = cli_main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and str(named) in errors[0], err
    assert "Traceback" not in err
    assert not _marker(work).exists(), "the pickle's payload ran"
    assert {p for p in work.rglob("*")} == before, "a refused run left files behind"
    return errors[0]


# ----------------------------------------------------------------------------- malicious weights

@pytest.mark.parametrize("name", ["evil.pt", "evil.th", "evil.pth"])
def test_search_refuses_weights_that_run_code(work, capsys, name):
    evil = _evil_weights(work, name)
    line = _refused(work, capsys, ["search", "--model", "resnet20", "--weights", str(evil),
                                   "--data", str(work / "good"), "--val", "3", "--test", "3",
                                   "--out", str(work / "out"), "--quiet"], evil)
    assert "posix.system" in line or "os.system" in line       # names what the file held


@pytest.mark.parametrize("name", ["evil.pt", "evil.th", "evil.safetensors", "evil.npz"])
def test_export_refuses_weights_that_run_code(work, capsys, name):
    evil = _evil_weights(work, name)
    _refused(work, capsys, ["export", "--model", "resnet20", "--fp32", "--weights", str(evil),
                            "--data", str(work / "good"), "--out", str(work / "out.onnx")], evil)


@pytest.mark.parametrize("name", ["evil.pt", "evil.th", "evil.pth"])
def test_models_eval_refuses_weights_that_run_code(work, capsys, name):
    evil = _evil_weights(work, name)
    _refused(work, capsys, ["models", "--eval", "resnet20", "--weights", str(evil), "--data", str(work / "good")], evil)


@pytest.mark.parametrize("command", ["cascade", "selector"])
def test_pool_refuses_default_weights_that_run_code(work, capsys, command):
    """Pool members take their zoo default weights: here a ../shared checkpoint that was swapped."""
    shared = Path(os.environ["SIEVE_SHARED"]) / "models" / "cifar10-resnet"
    shared.mkdir(parents=True)
    evil = _evil_weights(work, "evil.th").rename(shared / "resnet20-00000000.th")
    _refused(work, capsys, [command, "--pool", "resnet20,resnet32", "--data", str(work / "good"),
                            "--val", "3", "--test", "3", "--cache", str(work / "logits"),
                            "--out", str(work / "out"), "--quiet"], evil)


def test_pool_refuses_a_logits_cache_of_objects(work, capsys, monkeypatch):
    """The logits cache is a user-writable .npz: an object array in it is refused, not unpickled."""
    from sieve.runtime.sources import load_pool, parse_pool

    weights = Path(os.environ["SIEVE_SHARED"]) / "models" / "cifar10-resnet"
    weights.mkdir(parents=True)
    for name in ("resnet20", "resnet32"):
        torch.save({"state_dict": cifar_resnet.build(name).state_dict()}, weights / f"{name}-0.th")
    cache = work / "logits"
    load_pool(parse_pool("resnet20,resnet32"), str(work / "good"), 3, 3, cache, progress=False)
    poisoned = sorted(cache.glob("resnet20-*.npz"))[0]
    np.savez(poisoned, val=np.array([Payload(_marker(work))], dtype=object), test=np.zeros(1))
    _refused(work, capsys, ["selector", "--pool", "resnet20,resnet32", "--data", str(work / "good"),
                            "--val", "3", "--test", "3", "--cache", str(cache),
                            "--out", str(work / "out"), "--quiet"], poisoned)


def test_poisoned_training_cache_is_refused(work):
    """A trained Fashion model is read back from a user-writable cache: no payload runs from it."""
    rec = training.recipe("lenet5", "made-up-fingerprint", 0.5, 0.5, 10)
    weights, record = training.cache_paths(rec)
    torch.save({"conv1.weight": Payload(_marker(work))}, weights)
    record.write_text("{}")

    def never(*_):
        raise AssertionError("a cached model must not be retrained")

    with pytest.raises(SieveError, match=re.escape(f"weights {weights} hold posix.system")):
        training.trained_state("lenet5", rec, never, never)
    assert not _marker(work).exists()


def test_poisoned_data_cache_is_refused(work):
    """Decoded images are cached as .npz in a user-writable place: object arrays there are refused."""
    from sieve.cache import cache_dir
    from sieve.datasets.images import cached_arrays

    target = cache_dir("data") / "cifar10-key.npz"
    np.savez(target, images=np.array([Payload(_marker(work))], dtype=object))
    with pytest.raises(SieveError, match=re.escape(f"cannot read data cache {target} (Object arrays cannot be loaded")):
        cached_arrays("cifar10", "key", lambda: {})
    assert not _marker(work).exists()


def test_quantize_refuses_an_object_npy(work, capsys):
    evil = work / "evil.npy"
    np.save(evil, np.array([Payload(_marker(work))], dtype=object), allow_pickle=True)
    _refused(work, capsys, ["quantize", "--format", "e4m3", str(evil), str(work / "out.npy")], evil)


# ----------------------------------------------------------------------------- malicious data

@pytest.mark.parametrize("command", ["search", "models"])
def test_cifar_batch_that_runs_code_is_refused(work, capsys, command):
    torch.save(cifar_resnet.build("resnet20").state_dict(), work / "good.pt")
    batch = _cifar_batch(work / "evil" / "cifar-10-batches-py" / "test_batch",
                         {b"data": Payload(_marker(work)), b"labels": [0]})
    argv = {"search": ["search", "--model", "resnet20", "--val", "3", "--test", "3", "--out", str(work / "out"),
                       "--quiet"],
            "models": ["models", "--eval", "resnet20"]}[command]
    line = _refused(work, capsys, argv + ["--weights", str(work / "good.pt"), "--data", str(work / "evil")], batch)
    assert "posix.system" in line


def test_cifar_meta_that_runs_code_is_refused(work, capsys):
    torch.save(cifar_resnet.build("resnet20").state_dict(), work / "good.pt")
    meta = _cifar_batch(work / "good" / "cifar-10-batches-py" / "batches.meta", {b"label_names": Payload(_marker(work))})
    _refused(work, capsys, ["models", "--eval", "resnet20", "--weights", str(work / "good.pt"),
                            "--data", str(work / "good")], meta)


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 with numpy 1 did for the real ``cifar-10-batches-py`` files: every
    string a ``BINSTRING`` (read back as bytes), numpy globals under ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write((pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256
                    else pickle.BINSTRING + struct.pack("<i", len(raw))) + raw)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())

    dispatch[bytes] = dispatch[str] = save_string
    dispatch[type] = save_global


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])
def test_cifar_batches_of_every_protocol_still_load(tmp_path, protocol):
    """The restricted unpickler admits what CIFAR batches are made of, however they were pickled."""
    data = np.random.default_rng(2).integers(0, 256, (4, 3072), dtype=np.uint8)
    obj = {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 1, 4, 1], b"data": data,
           b"filenames": [b"a.png", b""]}
    batch = tmp_path / "test_batch"
    if protocol == "python2":
        with open(batch, "wb") as handle:
            Py2Pickler(handle, protocol=2).dump(obj)
    else:
        _cifar_batch(batch, obj, protocol)
    got = read_data_pickle(batch, "CIFAR-10 batch")
    assert np.array_equal(got[b"data"], data) and got[b"labels"] == [3, 1, 4, 1] and got[b"filenames"][1] == b""


# ----------------------------------------------------------------------------- legitimate files

def test_akamaster_checkpoints_load_without_the_full_unpickler():
    """The real legacy ``.th`` dicts (``state_dict`` + ``best_prec1``) load and fit their models."""
    folder = shared_path("models", "cifar10-resnet")
    files = sorted(folder.glob("resnet*-*.th"))
    assert files, f"no akamaster checkpoints in {folder}"
    for path in files:
        name = path.name.split("-")[0]
        load_into(cifar_resnet.build(name), read_state_dict(path), str(path), name)


def test_safetensors_weights_give_the_same_outputs_as_pt(work):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    net = cifar_resnet.build("resnet20")
    for p in net.parameters():           # made-up weights, away from the default initialisation
        p.data.normal_(0, 0.1)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, work / "w.pt")
    save_file(state, str(work / "w.safetensors"))
    outs = []
    for name in ("w.pt", "w.safetensors"):
        model, ds = zoo.load("resnet20", data=str(work / "good"), weights=str(work / name))
        outs.append(zoo.evaluate(model, ds.test)[1])
    assert torch.equal(outs[0], outs[1]) and outs[0].abs().sum() > 0
