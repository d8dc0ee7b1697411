"""Data-specialised networks: fully connected topologies and their deterministic, cached training.

A dsNN is ``in -> hidden... -> classes`` with ReLUs, trained with the Fashion pool's recipe
(:func:`sieve.models.training.fit`: Adam, linear decay, seeded batch order, fixed thread count).
A trained state dict is cached under ``$SIEVE_CACHE/multidsnn/`` keyed by the recipe, which
holds the topology, every hyper-parameter and a fingerprint of the exact training subset, so a
second exploration only loads files.  Small subsets get more epochs (up to ``MAX_EPOCHS``) so
every dsNN sees about ``TARGET_STEPS`` batches, as many as the monolith's three epochs.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..models import training

CODE_VERSION = 1
CACHE_KIND = "multidsnn"
BATCH = 128
TARGET_STEPS = 1200          # about three epochs of Fashion-MNIST's 55,000 training images
MIN_EPOCHS, MAX_EPOCHS = 3, 20
RECIPE = {"optimizer": "adam", "schedule": "linear-decay", "batch_size": BATCH, "lr": 1e-3,
          "weight_decay": 0.0, "seed": 20240607, "threads": 1}


def build_mlp(in_features: int, hidden: Sequence[int], classes: int) -> nn.Sequential:
    """``in -> hidden[0] -> ReLU -> ... -> classes``; no hidden layer is a linear classifier."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def topology_name(in_features: int, hidden: Sequence[int], classes: int) -> str:
    """``800-64-10`` style name of a topology."""
    return "-".join(str(n) for n in (in_features, *hidden, classes))


def epochs_for(count: int) -> int:
    """Epochs giving about ``TARGET_STEPS`` batches on ``count`` inputs (within the bounds)."""
    steps = max(1, math.ceil(count / BATCH))
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps))))


def fingerprint(features: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 prefix of a training subset (features and labels)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(features.numpy()).tobytes())
    h.update(np.ascontiguousarray(labels.numpy()).tobytes())
    return h.hexdigest()[:16]


def recipe(name: str, in_features: int, hidden: Sequence[int], classes: int, count: int,
           data_fingerprint: str, epochs: int | None = None) -> dict:
    """Everything that determines a dsNN's trained weights."""
    return {"model": name, "code_version": CODE_VERSION, "training_code": training.TRAINING_CODE_VERSION,
            "topology": topology_name(in_features, hidden, classes), **RECIPE,
            "epochs": epochs if epochs is not None else epochs_for(count), "train_images": count,
            "data": data_fingerprint}


def train_mlp(name: str, features: torch.Tensor, labels: torch.Tensor, hidden: Sequence[int],
              classes: int, epochs: int | None = None) -> nn.Sequential:
    """The trained (cached) MLP for this subset and topology, in eval mode.

    Same subset, topology and recipe give bit-identical weights: the initial weights come from
    ``torch.manual_seed(seed)`` and the batch order from a generator with the same seed.
    """
    features = features.reshape(len(features), -1).float().contiguous()
    in_features = features.shape[1]
    rec = recipe(name, in_features, hidden, classes, len(labels), fingerprint(features, labels), epochs)

    def train_fn():
        torch.manual_seed(rec["seed"])
        model = build_mlp(in_features, hidden, classes)
        return training.fit(model, rec, features, labels, f"{name} {rec['topology']}")

    def evaluate_fn(model):
        with torch.no_grad():
            acc = float((model(features).argmax(1) == labels).double().mean())
        return {"train_accuracy": round(acc, 6)}

    state = training.trained_state(name, rec, train_fn, evaluate_fn, kind=CACHE_KIND)
    model = build_mlp(in_features, hidden, classes)
    model.load_state_dict(state)
    return model.eval()
