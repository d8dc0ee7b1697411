"""M&MNet's Minions: smaller copies of a pool model made with MobileNet's two knobs.

Dissertation §5.3: the *width multiplier* α scales every layer's channel count (a
convolution's cost by α², Eq. 5.1) and the *resolution multiplier* ρ shrinks the input side
(every later layer's cost by ρ², Eq. 5.3).  For the 28 px Fashion-MNIST pool, ρ ∈ {1, 0.86,
0.71, 0.57} is 28, 24, 20, 16 px.

A Minion is a normal model taking the pool's 28 px input: :class:`Minion` downsamples it
(bilinear with antialiasing, a fixed preprocessing step inside the model) to the side its
layers were built for.  α = ρ = 1 is the pool model itself — the same recipe, so the same
cached weights.  Other Minions are trained with the pool's training code
(:func:`sieve.models.training.fit`) from a recipe that adds α, the input side and the
(smaller) epoch count to the pool model's recipe, and cached under ``$SIEVE_CACHE/minions``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import SieveError
from ..models.macs import module_macs

ALPHAS = (1.0, 0.75, 0.5, 0.25)
RHOS = (1.0, 0.86, 0.71, 0.57)
SOURCE_PX = 28
# `make mmnet` default: Minions from the two cheaper pool models only (the dissertation, too,
# derives Minions from the subset of cheap originals, §5.3.3) on a coarser grid, one epoch
# each (~1 min per Minion on one free core); ``--grid full`` trains the whole grid.
DEFAULT_BASES = ("lenet5", "convnet")
DEFAULT_ALPHAS = (1.0, 0.5, 0.25)
DEFAULT_RHOS = (1.0, 0.71, 0.57)
DEFAULT_EPOCHS = 1
FASHION_BASES = ("lenet5", "convnet", "minivgg")


def input_px(rho: float, source_px: int = SOURCE_PX) -> int:
    """Input side for resolution multiplier ``rho`` (28 · ρ rounded: 28, 24, 20, 16)."""
    return int(round(source_px * rho))


def minion_tag(base: str, alpha: float, rho: float) -> str:
    """``lenet5`` for α = ρ = 1, else e.g. ``lenet5-a0.5-r20`` (α, input side in px)."""
    if alpha == 1.0 and rho == 1.0:
        return base
    return f"{base}-a{alpha:g}-r{input_px(rho)}"


class Minion(nn.Module):
    """``net`` behind a fixed bilinear (antialiased) downsampling to ``input_px``.

    The resize is part of the model so that every Minion takes the pool's input: the runtime
    hands the same camera frame to Minions and Master alike.
    """

    def __init__(self, net: nn.Module, input_px: int) -> None:
        super().__init__()
        self.net = net
        self.input_px = int(input_px)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_px or x.shape[-2] != self.input_px:
            x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear",
                              align_corners=False, antialias=True)
        return self.net(x)


def build_minion(base: str, alpha: float, rho: float) -> nn.Module:
    """A freshly initialised Minion (the plain pool architecture for α = ρ = 1)."""
    from ..models import fashion

    if base not in fashion.BUILDERS:
        raise SieveError(f"cannot make Minions of {base!r}: width scaling is defined for "
                         f"{sorted(fashion.BUILDERS)}; use them, or give ready models as the pool")
    if not (0.0 < alpha <= 1.0 and 0.0 < rho <= 1.0):
        raise SieveError(f"width multiplier {alpha} / resolution multiplier {rho} must lie in (0, 1]")
    px = input_px(rho)
    if alpha == 1.0 and px == SOURCE_PX:
        return fashion.build(base)
    if px < 12:
        raise SieveError(f"resolution multiplier {rho} gives {px} px, too small for {base}; use ρ ≥ 0.43")
    return Minion(fashion.build(base, alpha, px), px)


def recipe(base_recipe: dict, alpha: float, rho: float, epochs: int) -> dict:
    """The pool model's recipe for α = ρ = 1 (unchanged), else it plus the Minion's knobs."""
    if alpha == 1.0 and input_px(rho) == SOURCE_PX:
        return base_recipe
    # one thread: on the shared 2-core machine two spinning threads train several times slower
    return {**base_recipe, "minion": {"alpha": alpha, "input_px": input_px(rho),
                                      "resize": "bilinear-antialias"}, "epochs": int(epochs), "threads": 1}


@dataclass
class MinionInfo:
    """What the report lists per Minion (accuracies on the calibration and held-out halves)."""

    tag: str
    base: str
    alpha: float
    rho: float
    input_px: int
    macs: int
    params: int
    val_accuracy: float
    test_accuracy: float
    train_seconds: float | None
    cached: bool

    def to_json(self) -> dict:
        return asdict(self)


def grid(bases=DEFAULT_BASES, alphas=DEFAULT_ALPHAS, rhos=DEFAULT_RHOS) -> list[tuple[str, float, float]]:
    """Every (base, α, ρ) of the grid, the pool models (α = ρ = 1) included."""
    return [(b, float(a), float(r)) for b in bases for a in alphas for r in rhos]


def model_macs(model: nn.Module, shape=(1, SOURCE_PX, SOURCE_PX)) -> int:
    """MACs of one input (convolutions and fully connected layers, after the resize)."""
    return module_macs(model, shape)


def train_minions(points: list[tuple[str, float, float]], epochs: int = DEFAULT_EPOCHS,
                  data: str | None = None, progress: bool = True) -> tuple[dict[str, nn.Module], list[MinionInfo], object]:
    """Trained (cached) Minions of ``points`` and their records, plus the pool's Dataset.

    Deterministic: every Minion starts from ``torch.manual_seed(recipe seed)`` and trains with
    the pool's seeded batch order, so a recipe always gives the same weights.  α = ρ = 1 loads
    the pool model through the zoo (its own cache and epochs).
    """
    from .. import zoo
    from ..models import training
    from ..models.weights import load_into

    if epochs < 1:
        raise SieveError(f"--minion-epochs {epochs} must be at least 1")
    train, ds, fingerprint = zoo.fashion_training_data(data)
    prep = ds.preprocess
    mean, std = (prep.mean[0], prep.std[0]) if prep is not None else (0.0, 1.0)
    models: dict[str, nn.Module] = {}
    infos: list[MinionInfo] = []
    bar = tqdm(points, desc="minions", total=len(points), disable=not progress)
    for base, alpha, rho in bar:
        tag = minion_tag(base, alpha, rho)
        bar.set_postfix_str(tag)
        base_rec = training.recipe(base, fingerprint, mean, std, len(train.labels))
        rec = recipe(base_rec, alpha, rho, epochs)
        cached = training.cache_paths(rec, "models" if rec is base_rec else "minions")[0].is_file()
        if rec is base_rec:
            model, _ = zoo.load(base, data=data)
            record = zoo.fashion_record(base, data) or {}
        else:
            def train_fn(base=base, alpha=alpha, rho=rho, rec=rec, tag=tag):
                torch.manual_seed(rec["seed"])
                return training.fit(build_minion(base, alpha, rho), rec, train.images, train.labels, tag)

            def evaluate_fn(trained):
                return {"val_accuracy": round(zoo.evaluate(trained, ds.val)[0], 6),
                        "test_accuracy": round(zoo.evaluate(trained, ds.test)[0], 6)}

            state = training.trained_state(tag, rec, train_fn, evaluate_fn, kind="minions")
            model = load_into(build_minion(base, alpha, rho), state,
                              str(training.cache_paths(rec, "minions")[0]), tag)
            record = json.loads(training.cache_paths(rec, "minions")[1].read_text())
        model.eval()
        models[tag] = model
        infos.append(MinionInfo(tag, base, alpha, rho, input_px(rho), model_macs(model),
                                sum(p.numel() for p in model.parameters()),
                                float(record.get("val_accuracy", float("nan"))),
                                float(record.get("test_accuracy", float("nan"))),
                                record.get("train_seconds"), cached))
    return models, infos, ds
