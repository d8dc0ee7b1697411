"""Uniform OCP Microscaling baselines (issue 16): one MX format on every weight and activation.

The baseline the search must beat by a mean bit: MXFP8 (E4M3, E5M2), MXFP6 (E3M2, E2M3) and
MXFP4 (E2M1), k = 32, E8M0 scales, each applied to every conv/linear weight and input of the
model (blocks along the reduction axis, :mod:`sieve.blockfmt`).  Mean bits count the scales.
Accuracy is judged like the search's plans: paired against fp32 on the same images, with the
exact one-sided McNemar verdict of :mod:`sieve.stats` for a normalized-accuracy target.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from tqdm import tqdm

from . import stats
from .blockfmt import OCP_MX, AnyFormat, BlockFormat
from .qeval import PrefixEvaluator, TensorInfo, quantizable_tensors

__all__ = ["uniform_plan", "ocp_baselines", "OCP_BASELINES"]

#: The five OCP MX v1.0 concrete formats, smallest first.
OCP_BASELINES = ("mxfp4_e2m1", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2")


def uniform_plan(infos: Iterable[TensorInfo], fmt: AnyFormat) -> dict[str, AnyFormat]:
    """``fmt`` on every quantizable tensor (the plan a uniform baseline evaluates)."""
    return {info.name: fmt for info in infos}


def ocp_baselines(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  target: float = 1.0, names: Iterable[str] = OCP_BASELINES, batch_size: int = 500,
                  evaluator: PrefixEvaluator | None = None, progress: bool = False) -> dict[str, dict]:
    """For each OCP MX format: its uniform plan's mean bits and its paired comparison with fp32
    on ``images``/``labels`` (normally the test split) with the verdict for ``target``.

    ``evaluator`` may be passed to reuse one whose fp32 logits are already computed (it must run
    on the same images)."""
    from .search.formats import plan_bits

    ev = evaluator if evaluator is not None else PrefixEvaluator(model, images, batch_size=batch_size)
    infos = ev.infos if evaluator is not None else quantizable_tensors(model, tuple(images.shape[1:]))
    labels = labels.reshape(-1)
    fp32_right = (ev.fp32_logits().argmax(1) == labels).numpy()
    out: dict[str, dict] = {}
    for name in tqdm(list(names), desc="OCP MX baselines", unit="format", disable=not progress):
        fmt = OCP_MX[name]
        plan = uniform_plan(infos, fmt)
        right = (ev.run(plan).argmax(1) == labels).numpy()
        paired = stats.compare(fp32_right, right)
        out[name] = {"format": str(fmt), **_bits(plan, infos, plan_bits), "test": stats.verdict(paired, target)}
    return out


def _bits(plan: Mapping[str, BlockFormat], infos, plan_bits) -> dict:
    b = plan_bits(plan, infos)
    return {k: b[k] for k in ("mean_bits", "mean_bits_weights", "mean_bits_activations")}
