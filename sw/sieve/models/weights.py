"""Reading weight files and fitting them to a model, with one clear line for every way
that can go wrong (unreadable file, missing or extra key, wrong shape, NaN/Inf)."""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import SieveError
from ..safe_pickle import pickle_globals

# Buffers that carry no information a forward pass needs; tolerated when absent or extra.
_IGNORABLE_SUFFIXES = ("num_batches_tracked",)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, a ``.npz`` of arrays (keys kept), or a
    ``.pt/.pth/.th`` torch file (plain, or wrapped in ``state_dict`` / ``model``, ``module.``
    prefixes stripped).

    No file is ever unpickled with the full unpickler: a pickle can name any function and
    have it called while loading, so a torch file is read only by torch's ``weights_only``
    unpickler, whose allow-list admits tensors, numbers, strings and containers.  That covers
    legacy checkpoints such as the akamaster CIFAR-10 ``.th`` dicts (``state_dict`` beside a
    float ``best_prec1``); anything else is refused with one line naming what the file held.
    """
    path = Path(path)
    if not path.is_file():
        raise SieveError(f"weights file {path} does not exist; pass an existing file with --weights")
    if path.suffix == ".safetensors":
        obj = _read_safetensors(path)
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                obj = {k: torch.from_numpy(np.array(archive[k])) for k in archive.files}
        except Exception as exc:  # noqa: BLE001 - any reader failure is the same user problem
            if "pickle" in str(exc):   # numpy's advice here is to unpickle it after all: never
                raise SieveError(f"weights {path} hold pickled Python objects, which a weights file may not contain: "
                                 "refused to unpickle them; save plain arrays with numpy.savez") from None
            raise SieveError(f"cannot read weights {path} as .npz: {_one_line(exc)}") from None
    else:
        obj = _read_torch(path)
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SieveError(f"weights {path} hold no state dict (a dict of tensor names to tensors); "
                         "save one with torch.save(model.state_dict(), path)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _one_line(exc: Exception) -> str:
    """An exception's message on one line (torch's are multi-line, with terminal colour codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = text.split("WeightsUnpickler error:", 1)[-1]   # past torch's generic advice to drop weights_only
    text = text.split("Check the documentation of torch.load", 1)[0]
    return " ".join(text.split()) or type(exc).__name__


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file: a JSON header and raw bytes, nothing to execute."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise SieveError(f"cannot read weights {path} as .safetensors: {_one_line(exc)}") from None


def _read_torch(path: Path) -> object:
    """A torch file through torch's ``weights_only`` unpickler only; a refused file's error
    names the global(s) it asked for."""
    try:
        with warnings.catch_warnings():   # a plain pickle of protocol > 2 makes torch warn before it refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = list(dict.fromkeys(re.findall(r"GLOBAL (\S+?)\.?(?:\s|$)", str(exc)))) or _foreign_globals(path)
        if not refused:
            raise SieveError(f"cannot read weights {path} as a torch file: {_one_line(exc)}") from None
        raise SieveError(f"weights {path} hold {', '.join(refused)}, which a weights file may not contain: refused "
                         "to unpickle it (only tensors, numbers, strings and containers are read); save a state "
                         "dict with torch.save(model.state_dict(), path) or as .safetensors") from None
    except Exception as exc:  # noqa: BLE001 - truncated or foreign files raise many types
        raise SieveError(f"cannot read weights {path} as a torch file: {type(exc).__name__}: {_one_line(exc)}") from None


def _foreign_globals(path: Path) -> list[str]:
    """Globals outside torch that a plain (non-zip) pickle names, read without unpickling."""
    if zipfile.is_zipfile(path):
        return []   # torch's own message names the global of a zip checkpoint
    return [g for g in pickle_globals(path) if not g.startswith(("torch.", "collections.OrderedDict"))]


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict with a NaN or Inf anywhere, naming the first such tensor."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise SieveError(f"weights {source}: tensor '{key}' contains {bad} NaN/Inf value(s); "
                             "the file is corrupt or the training diverged")


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> torch.nn.Module:
    """Copy ``state`` into ``model`` after checking every key and shape (in model order)."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith(_IGNORABLE_SUFFIXES):
                continue
            raise SieveError(f"weights {source} do not fit {name}: missing key '{key}' "
                             f"(model expects shape {tuple(tensor.shape)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise SieveError(f"weights {source} do not fit {name}: key '{key}' has shape "
                             f"{tuple(state[key].shape)} in the file, the model expects {tuple(tensor.shape)}")
    for key in state:
        if key not in expected and not key.endswith(_IGNORABLE_SUFFIXES):
            raise SieveError(f"weights {source} do not fit {name}: unexpected key '{key}' "
                             f"(shape {tuple(state[key].shape)}) that the model does not have")
    check_finite({k: v for k, v in state.items() if k in expected}, source)
    fitted = {k: state[k].to(expected[k].dtype) if k in state else expected[k] for k in expected}
    model.load_state_dict(fitted, strict=True)
    return model
