"""One pruning configuration, end to end and cached: a network, a seed, a global sparsity.

1. ``w_i``: variance-scaling initialisation for the seed; SNIP's sensitivities on one
   minibatch (drawn with the seed) give the global top-k mask and the per-layer keep counts.
2. *dense*: train ``w_i`` normally → ``w_f``.
3. *snip*: train ``w_i`` under SNIP's mask; *random*: train ``w_i`` under a random mask with
   SNIP's per-layer counts ("local random", §7.3).
4. *doubleshot/<metric>*: in every layer keep SNIP's count of the connections with the highest
   ``metric(w_i, w_f)``, then train again, the same way, starting from ``w_f``.

Every training uses :func:`sieve.models.training.fit` (Adam, linear decay, seeded batch order)
with the same recipe, so all runs of a seed differ only in their mask and starting weights.
Each trained state dict (plain keys, zeros where pruned) is cached under
``$SIEVE_CACHE/pruning/<net>-<method>-<hash>.pt`` with a JSON record (accuracies, per-layer
sparsity, training seconds) beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data import Dataset, Split
from ..errors import SieveError
from ..models import training
from ..models.weights import load_into
from ..zoo import evaluate
from . import masks as masks_mod
from . import networks, snip
from .metrics import METRICS

PIPELINE_VERSION = 1
SNIP_BATCH = 128
CACHE_KIND = "pruning"


@dataclass(frozen=True)
class Setup:
    """Everything a configuration's results depend on (the cache key is built from it)."""

    net: str
    seed: int
    sparsity: float
    epochs: int
    train_images: int           # the first N training images (55,000 = all of train[:55000])
    batch_size: int = 128
    threads: int = 1

    def recipe(self, method: str, fingerprint: str) -> dict:
        bench = networks.BENCHMARKS[self.net]
        rec = {"model": f"{self.net}-{method.replace('/', '-')}", "pipeline_version": PIPELINE_VERSION,
               "code_version": training.TRAINING_CODE_VERSION, "net": self.net, "method": method,
               "seed": self.seed, "epochs": self.epochs, "lr": bench.lr, "batch_size": self.batch_size,
               "weight_decay": 0.0, "optimizer": "adam", "schedule": "linear-decay", "threads": self.threads,
               "train_images": self.train_images, "data": fingerprint, "init": "variance-scaling",
               "snip_batch": SNIP_BATCH}
        if method != "dense":
            rec["sparsity"] = self.sparsity
        return rec


@dataclass
class Run:
    """One trained network of a configuration."""

    method: str                 # dense | snip | random | doubleshot/<metric>
    model: nn.Module
    record: dict
    correct: np.ndarray = field(repr=False)   # per test image: predicted right?


class Pipeline:
    """The runs of one :class:`Setup` on one training set, each trained (or read from the cache) on demand."""

    def __init__(self, setup: Setup, train: Split, dataset: Dataset, fingerprint: str) -> None:
        if setup.net not in networks.BENCHMARKS:
            raise SieveError(f"unknown pruning network '{setup.net}'; choose from {', '.join(networks.BENCHMARKS)}")
        if setup.epochs < 1:
            raise SieveError(f"--epochs {setup.epochs} must be >= 1")
        self.setup = setup
        self.train = train.head(setup.train_images)
        self.dataset = dataset
        self.fingerprint = fingerprint
        self._runs: dict[str, Run] = {}
        init = networks.initialised(setup.net, setup.seed)
        self.w_i = masks_mod.weights(init)
        gen = torch.Generator().manual_seed(setup.seed)
        pick = torch.randperm(len(self.train), generator=gen)[:SNIP_BATCH]
        scores = snip.sensitivities(init, self.train.images[pick], self.train.labels[pick])
        self.snip_masks = snip.global_masks(scores, snip.keep_total(scores, setup.sparsity))
        self.keep = snip.layer_keep_counts(self.snip_masks)

    # -- the masks of each method -------------------------------------------------------
    def masks_for(self, method: str) -> dict[str, torch.Tensor]:
        if method == "snip":
            return self.snip_masks
        if method == "random":
            gen = torch.Generator().manual_seed(self.setup.seed + 1)
            return {n: masks_mod.random_mask(m.shape, self.keep[n], gen) for n, m in self.snip_masks.items()}
        metric = method.partition("/")[2]
        if not method.startswith("doubleshot/") or metric not in METRICS:
            raise SieveError(f"unknown pruning method '{method}'; use snip, random or doubleshot/<metric> "
                             f"with metric one of {', '.join(METRICS)}")
        w_f = masks_mod.weights(self.run("dense").model)
        scores = {n: METRICS[metric](self.w_i[n], w_f[n]) for n in self.w_i}
        return masks_mod.layer_masks(scores, self.keep)

    def start(self, method: str) -> nn.Module:
        """The starting weights of ``method``: ``w_i``, or ``w_f`` for double-shot's second training."""
        model = networks.initialised(self.setup.net, self.setup.seed)
        if method.startswith("doubleshot/"):
            dense = self.run("dense").model
            model.load_state_dict(dense.state_dict())
        return model

    # -- training (cached) ---------------------------------------------------------------
    def run(self, method: str) -> Run:
        if method in self._runs:
            return self._runs[method]
        rec = self.setup.recipe(method, self.fingerprint)
        label = f"{self.setup.net} {method} seed {self.setup.seed}"

        def train_fn() -> nn.Module:
            model = self.start(method)
            if method != "dense":
                masks_mod.apply(model, self.masks_for(method))
            training.fit(model, rec, self.train.images, self.train.labels, label)
            return masks_mod.remove(model)

        def evaluate_fn(model: nn.Module) -> dict:
            return {"val_accuracy": round(evaluate(model, self.dataset.val)[0], 6),
                    "test_accuracy": round(evaluate(model, self.dataset.test)[0], 6),
                    "sparsity": masks_mod.sparsity(model)}

        state = training.trained_state(rec["model"], rec, train_fn, evaluate_fn, kind=CACHE_KIND)
        weights_path, record_path = training.cache_paths(rec, CACHE_KIND)
        record = json.loads(record_path.read_text())
        model = load_into(networks.build(self.setup.net), state, str(weights_path), self.setup.net).eval()
        _, logits = evaluate(model, self.dataset.test)
        correct = (logits.argmax(dim=1) == self.dataset.test.labels).numpy()
        run = Run(method, model, {**record, "weights_path": str(weights_path)}, correct)
        self._runs[method] = run
        return run
