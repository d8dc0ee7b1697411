"""Training the Fashion-MNIST pool once, deterministically, and caching the result.

The cache key is a hash of the *recipe*: architecture, every hyper-parameter, the
normalisation constants and a fingerprint of the training data.  The trained state dict
goes to ``<cache>/models/<name>-<hash>.pt`` and a JSON beside it records the recipe and the
accuracies reached, so ``sieve models`` can list them without evaluating anything.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from tqdm import tqdm

from ..cache import cache_dir, file_lock, recipe_hash
from ..io_utils import atomic_path, write_json
from . import fashion
from .weights import read_state_dict

# Bump when a change to the training code (not visible in the recipe) changes its result.
TRAINING_CODE_VERSION = 1

# ``threads`` is part of the recipe because CPU kernels split their reductions by thread, so
# the trained weights differ (by ~1e-6) between thread counts.  The two larger nets train on
# one thread: on a shared 2-core machine two spinning threads run several times slower.
HYPER = {
    "lenet5": {"epochs": 3, "lr": 1e-3, "threads": 2},
    "convnet": {"epochs": 3, "lr": 2e-3, "threads": 1, "arch": 2},   # arch 2: batch norm, max-pools
    "minivgg": {"epochs": 3, "lr": 2e-3, "threads": 1},
}
COMMON = {"optimizer": "adam", "schedule": "linear-decay", "batch_size": 128, "seed": 20240607,
          "weight_decay": 0.0}


def recipe(name: str, data_fingerprint: str, mean: float, std: float, train_count: int) -> dict:
    """Everything that determines the trained weights of ``name``."""
    return {"model": name, "code_version": TRAINING_CODE_VERSION, **COMMON, **HYPER[name],
            "normalisation": [mean, std], "train_images": train_count, "data": data_fingerprint}


def cache_paths(rec: dict, kind: str = "models") -> tuple[Path, Path]:
    """(state-dict path, JSON record path) of a recipe, in the cache sub-directory ``kind``."""
    stem = f"{rec['model']}-{recipe_hash(rec)}"
    base = cache_dir(kind)
    return base / f"{stem}.pt", base / f"{stem}.json"


def read_record(rec: dict) -> dict | None:
    """The JSON record of a cached model, or None when it was never trained."""
    weights, record = cache_paths(rec)
    if weights.is_file() and record.is_file():
        return json.loads(record.read_text())
    return None


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run a block with ``count`` intra-op threads (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(name: str, rec: dict, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """Train ``name`` on preprocessed ``images`` with the recipe's hyper-parameters."""
    torch.manual_seed(rec["seed"])
    return fit(fashion.build(name), rec, images, labels, name)


def fit(model: nn.Module, rec: dict, images: torch.Tensor, labels: torch.Tensor, name: str) -> nn.Module:
    """Train an initialised ``model`` with the recipe's optimiser, schedule and batch order.

    Adam with a linear learning-rate decay to zero; the batch order comes from a generator
    seeded with ``rec["seed"]``, so the same initial weights and recipe give the same result.
    Any module whose input is a row of ``images`` works (the Fashion pool, data-specialised nets).
    """
    opt = torch.optim.Adam(model.parameters(), lr=rec["lr"], weight_decay=rec["weight_decay"])
    batch = rec["batch_size"]
    steps_per_epoch = math.ceil(len(labels) / batch)
    total = steps_per_epoch * rec["epochs"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / total)
    gen = torch.Generator().manual_seed(rec["seed"])
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    with torch_threads(rec["threads"]):
        for epoch in range(rec["epochs"]):
            order = torch.randperm(len(labels), generator=gen)
            bar = tqdm(range(steps_per_epoch), desc=f"train {name} epoch {epoch + 1}/{rec['epochs']}",
                       unit="batch", leave=False)
            running = 0.0
            for step in bar:
                idx = order[step * batch:(step + 1) * batch]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(images[idx]), labels[idx])
                loss.backward()
                opt.step()
                sched.step()
                value = loss.item()
                running = 0.98 * running + 0.02 * value if step else value
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{running:.3f}")
            bar.close()
    model.eval()
    return model


def trained_state(name: str, rec: dict, train_fn, evaluate_fn, kind: str = "models") -> dict[str, torch.Tensor]:
    """The cached state dict of ``rec``, training it (under a file lock) when absent.

    ``train_fn()`` returns a trained model; ``evaluate_fn(model)`` returns a dict of
    accuracies recorded in the JSON beside the weights.
    """
    weights, record = cache_paths(rec, kind)
    if not (weights.is_file() and record.is_file()):
        with file_lock(weights):
            if not (weights.is_file() and record.is_file()):
                start = time.perf_counter()
                model = train_fn()
                seconds = time.perf_counter() - start
                info = {"model": name, "recipe": rec, "recipe_hash": recipe_hash(rec),
                        "train_seconds": round(seconds, 1), "torch": torch.__version__,
                        **evaluate_fn(model)}
                with atomic_path(weights) as tmp:
                    torch.save(model.state_dict(), tmp)
                write_json(record, info)
    return read_state_dict(weights)   # the cache is a user-writable file: read it like any weights
