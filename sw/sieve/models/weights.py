"""Reading weight files and fitting them to a model, with one clear line for every way
that can go wrong (unreadable file, missing or extra key, wrong shape, NaN/Inf)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import SieveError

# Buffers that carry no information a forward pass needs; tolerated when absent or extra.
_IGNORABLE_SUFFIXES = ("num_batches_tracked",)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt/.pth/.th`` torch file (plain, or wrapped in ``state_dict``
    / ``model``, ``module.`` prefixes stripped) or a ``.npz`` of arrays (keys kept)."""
    path = Path(path)
    if not path.is_file():
        raise SieveError(f"weights file {path} does not exist; pass an existing file with --weights")
    if path.suffix == ".npz":
        try:
            with np.load(path) as archive:
                return {k: torch.from_numpy(np.array(archive[k])) for k in archive.files}
        except Exception as exc:  # noqa: BLE001 - any reader failure is the same user problem
            raise SieveError(f"cannot read weights {path} as .npz: {exc}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - legacy pickles need the full unpickler
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise SieveError(f"cannot read weights {path} as a torch file: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SieveError(f"weights {path} hold no state dict (a dict of tensor names to tensors); "
                         "save one with torch.save(model.state_dict(), path)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


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
