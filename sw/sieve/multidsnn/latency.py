"""Measured CPU latency of the monolith and of a multi-dsNN, on one thread.

Batch 1 is what a device answering one input at a time sees: per input, the preprocessor,
the selector's tree walk (:meth:`~sieve.multidsnn.selector.Router.route_one`) and the one
chosen dsNN, against the monolith.  Each input runs through the monolith and then through the
multi-dsNN, timed call by call, in several rounds; per input the fastest of its rounds is kept
(other processes on a shared machine only ever add time, and alternating call by call exposes
both to the same bursts), and the mean over inputs is reported beside the median of the per-round
means.
Batched time per input (the whole split at once: route, then each dsNN on its share) is
reported beside it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..models.training import torch_threads
from .selector import Router


class MultiDsnn(nn.Module):
    """Preprocessor + selector + dsNN array as one callable (batch 1 or batched)."""

    def __init__(self, preprocessor: nn.Module | None, router: Router, main: nn.Module, tail: nn.Module):
        super().__init__()
        self.preprocessor, self.router, self.main, self.tail = preprocessor, router, main, tail

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (self.preprocessor(x) if self.preprocessor is not None else x).reshape(len(x), -1)

    def forward_features(self, f: torch.Tensor) -> torch.Tensor:
        """Logits from features: batch 1 walks the tree in Python, larger batches route at once."""
        if len(f) == 1:
            return (self.tail if self.router.route_one(f[0].numpy()) else self.main)(f)
        tail, _ = self.router.route(f.numpy())
        tail_t = torch.from_numpy(tail)
        out = torch.empty(len(f), self.main[-1].out_features)
        if (~tail_t).any():
            out[~tail_t] = self.main(f[~tail_t])
        if tail_t.any():
            out[tail_t] = self.tail(f[tail_t])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.features(x))


def _paired_round(first, second, inputs: list[torch.Tensor]) -> np.ndarray:
    """Seconds of ``first(x)`` and ``second(x)`` per input (2 x N), alternating call by call."""
    out = np.zeros((2, len(inputs)))
    clock = time.perf_counter
    for i, x in enumerate(inputs):
        t0 = clock()
        first(x)
        t1 = clock()
        second(x)
        out[0, i], out[1, i] = t1 - t0, clock() - t1
    return out


@torch.inference_mode()
def compare_latency(monolith_fn, multi_fn, inputs: list[torch.Tensor], rounds: int = 11) -> dict:
    """Per-input time of two callables on the same inputs: the mean over inputs of each input's
    fastest round (``*_us``, used for the speed-up) and the median of the per-round means."""
    with torch_threads(1):
        _paired_round(monolith_fn, multi_fn, inputs[:20])           # warm-up
        runs = np.stack([_paired_round(monolith_fn, multi_fn, inputs) for _ in range(rounds)])  # R x 2 x N
    m, d = runs.min(axis=0).mean(axis=1)
    med_m, med_d = np.median(runs.mean(axis=2), axis=0)
    return {"monolith_us": 1e6 * m, "multidsnn_us": 1e6 * d, "speedup": float(m / d) if d else float("nan"),
            "monolith_median_us": 1e6 * med_m, "multidsnn_median_us": 1e6 * med_d,
            "inputs": len(inputs), "rounds": rounds}


def measure(preprocessor: nn.Module | None, head: nn.Module, system: MultiDsnn,
            images: torch.Tensor, count: int = 200, rounds: int = 11) -> dict:
    """Batch-1 latency end to end and of the replaced part, and batched time per input."""
    count = min(count, len(images))
    singles = [images[i:i + 1] for i in range(count)]
    with torch.inference_mode():
        feats = [system.features(x) for x in singles]
        all_feats = system.features(images)

    def mono_full(x):
        return head((preprocessor(x) if preprocessor is not None else x).reshape(1, -1))

    end_to_end = compare_latency(mono_full, system, singles, rounds)
    replaced = compare_latency(head, system.forward_features, feats, rounds)
    batched = compare_latency(head, system.forward_features, [all_feats], rounds)
    batched = {k: (v / len(images) if k.endswith("_us") else v) for k, v in batched.items()}
    batched["inputs"] = len(images)
    return {"batch1_end_to_end": end_to_end, "batch1_replaced_part": replaced, "batched_replaced_part": batched,
            "threads": 1}


def check_same_predictions(system: MultiDsnn, images: torch.Tensor, expected: np.ndarray, count: int = 50) -> bool:
    """The timed system answers as the explored one did (batch-1 path vs vectorised routing)."""
    with torch.inference_mode():
        got = [int(system(images[i:i + 1]).argmax(1)) for i in range(min(count, len(images)))]
    return bool(np.array_equal(np.array(got), np.asarray(expected)[:len(got)]))
