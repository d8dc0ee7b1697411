"""A memory bound for the prefix cache: states over the bound go to disk, exact, and come back
one batch at a time.

Why: :class:`sieve.qeval.PrefixEvaluator` keeps, per stored cut, every image's live
activations; on ImageNet that is gigabytes per state and grows with the split (SqueezeNet on
1,000 images peaked at 7.4 GB).  A :class:`PrefixStore` is shared by all evaluators of a search:
states fit in RAM while their bytes stay under ``limit``; a state that would cross it is written
to a file under ``spill_dir`` (raw fp32 bytes, so a restart from it is bit-identical) and read
back batch by batch when a plan restarts there, so at most one batch of it is in memory at a
time.  Without a spill directory such a state is not kept (the plan is recomputed from the start).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .errors import SieveError

__all__ = ["PrefixStore", "StoredState", "parse_size", "default_cache_mem", "state_bytes"]

DEFAULT_FRACTION = 0.25  # of the RAM available when the search starts
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text) -> int:
    """Bytes of ``2G``, ``512M``, ``1.5g``, ``4096`` (binary units; a trailing B or iB is fine)."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
        if m is None:
            raise SieveError(f"cache memory {text!r} is not a size like 2G, 512M or 1048576 (bytes)")
        value = int(float(m[1]) * _UNITS[m[2].upper()])
    if value < 0:
        raise SieveError(f"cache memory must be >= 0 bytes, got {text!r}")
    return value


def available_ram() -> int:
    """RAM available to a new allocation now (psutil when installed, else /proc/meminfo)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown platform: assume a small machine


def default_cache_mem() -> int:
    return int(DEFAULT_FRACTION * available_ram())


def state_bytes(envs) -> int:
    return sum(v.numel() * v.element_size() for env in envs for v in env.values() if isinstance(v, torch.Tensor))


class StoredState:
    """One stored cut state, batch by batch: in RAM while the store's budget allows, the rest
    appended to a file (raw bytes: exact) and read back one batch at a time by ``state[b]``."""

    def __init__(self, store: "PrefixStore"):
        self.store = store
        self.batches: list[tuple[bool, dict]] = []   # (in RAM?, env or its on-disk layout)
        self.ram_bytes = 0
        self.path: Path | None = None
        self._offset = 0

    def append(self, env: dict) -> None:
        size = state_bytes([env])
        store = self.store
        if store.used + size <= store.limit:
            store.used += size
            store.peak = max(store.peak, store.used)
            self.ram_bytes += size
            self.batches.append((True, env))
            return
        if self.path is None:
            self.path = store.new_file()
        layout = {}
        with open(self.path, "ab") as fh:
            for j, v in env.items():
                if isinstance(v, torch.Tensor):
                    v = v.detach().cpu()
                    # a channels-last state is written in its own (NHWC) order and comes back so
                    channels_last = v.dim() == 4 and not v.is_contiguous() and v.is_contiguous(
                        memory_format=torch.channels_last)
                    dense = v.permute(0, 2, 3, 1) if channels_last else v.contiguous()
                    raw = dense.contiguous().view(torch.uint8).reshape(-1).numpy()
                    fh.write(raw.tobytes())
                    layout[j] = _OnDisk(self._offset, tuple(dense.shape), v.dtype, v.device, channels_last)
                    self._offset += raw.size
                else:
                    layout[j] = v
        store.spilled_bytes += size
        self.batches.append((False, layout))

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int) -> dict:
        in_ram, env = self.batches[b]
        if in_ram:
            return env
        out = {}
        for j, v in env.items():
            if isinstance(v, _OnDisk):
                count = int(np.prod(v.shape, dtype=np.int64)) * torch.empty(0, dtype=v.dtype).element_size()
                raw = np.fromfile(self.path, dtype=np.uint8, count=count, offset=v.offset)
                t = torch.from_numpy(raw).view(v.dtype).reshape(v.shape)
                out[j] = (t.permute(0, 3, 1, 2) if v.channels_last else t).to(v.device)
            else:
                out[j] = v
        return out

    @property
    def spilled(self) -> bool:
        return self.path is not None

    def release(self) -> None:
        self.store.used -= self.ram_bytes
        self.ram_bytes = 0
        self.batches = []
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _OnDisk:
    __slots__ = ("offset", "shape", "dtype", "device", "channels_last")

    def __init__(self, offset, shape, dtype, device, channels_last=False):
        self.offset, self.shape, self.dtype, self.device = offset, shape, dtype, device
        self.channels_last = channels_last  # stored NHWC (shape is the stored one)


class PrefixStore:
    """The memory budget of every prefix cache of one search (see the module docstring)."""

    def __init__(self, limit: int, spill_dir: str | os.PathLike | None = None):
        self.limit = int(limit)
        self._own_dir = spill_dir is None
        self.spill_dir = Path(tempfile.mkdtemp(prefix="sieve-prefix-")) if spill_dir is None else Path(spill_dir)
        self.used = 0          # bytes of states held in RAM
        self.peak = 0
        self.spilled = 0       # states (partly) written to disk
        self.spilled_bytes = 0
        self._count = 0

    def begin(self) -> StoredState:
        """A new state to ``append`` batch environments to."""
        return StoredState(self)

    def new_file(self) -> Path:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._count += 1
        self.spilled += 1
        return self.spill_dir / f"state-{os.getpid()}-{self._count}.bin"

    @staticmethod
    def release(state) -> None:
        """A stored (or abandoned) state goes: give its bytes and its file back."""
        if isinstance(state, StoredState):
            state.release()

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
        else:
            for f in self.spill_dir.glob(f"state-{os.getpid()}-*.bin"):
                f.unlink(missing_ok=True)

    def to_json(self) -> dict:
        return {"limit_bytes": self.limit, "peak_ram_bytes": self.peak, "spilled_states": self.spilled,
                "spilled_bytes": self.spilled_bytes}
