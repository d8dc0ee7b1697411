"""The cascade executor: little model on a batch, only the doubtful subset goes further.

A :class:`Policy` is a sequence of models (two for a big/little pair, three for a three-stage
cascade) and, for every stage but the last, a recovery rule (:class:`~.detector.Thresholds`):
an input leaves after stage *i* when the probe of the running output clears that stage's
threshold.  With ``combine`` the running output is the mean softmax of the stages run so far
(on recovery, both models vote), otherwise it is the latest model's softmax.

Three ways to run a policy, each for one question:

* :func:`simulate` — on cached probabilities: accuracy, where inputs leave (cheap, exact);
* :func:`execute` — really runs the models batch by batch, gathering the recovered subset
  with ``index_select``: predictions and wall-clock time, hence *real throughput*;
* :func:`offered_load` — latency under Poisson arrivals at several load levels.  This is a
  **single-process discrete-event simulation driven by service times measured on this
  machine** (``seconds(b) = fixed + per_image·b`` fitted per model), with greedy dynamic
  batching; each simulated request is a held-out input, so its exit stage is the real one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SieveError
from .detector import Thresholds
from .probes import softmax


@dataclass
class Policy:
    """Models in order and one recovery rule per stage except the last."""

    stages: list[str]
    rules: list[Thresholds]
    combine: bool = False

    def __post_init__(self) -> None:
        if len(self.rules) != len(self.stages) - 1:
            raise SieveError(f"a {len(self.stages)}-stage cascade needs {len(self.stages) - 1} "
                             f"rules, got {len(self.rules)}")

    @property
    def name(self) -> str:
        kind = "per-class" if any(r.per_class for r in self.rules) else "single"
        return " → ".join(self.stages) + f" ({kind}{', combined' if self.combine else ''})"

    def to_json(self) -> dict:
        return {"stages": self.stages, "combine": self.combine,
                "rules": [r.to_json() for r in self.rules], "name": self.name}


def _step(policy: Policy, stage: int, running: np.ndarray, probs: np.ndarray) -> np.ndarray:
    if not policy.combine:
        return probs
    return (running * stage + probs) / (stage + 1)


def simulate(policy: Policy, probs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Final predictions and exit stage of every input, from cached probabilities."""
    n = len(next(iter(probs.values())))
    exit_stage = np.full(n, len(policy.stages) - 1)
    alive = np.ones(n, bool)
    running = np.zeros_like(probs[policy.stages[0]])
    final = np.zeros(n, dtype=np.int64)
    for i, m in enumerate(policy.stages):
        running = _step(policy, i, running, probs[m])
        if i < len(policy.rules):
            leave = alive & ~policy.rules[i].recover_mask(running)
        else:
            leave = alive.copy()
        final[leave] = running[leave].argmax(axis=1)
        exit_stage[leave] = i
        alive &= ~leave
    return final, exit_stage


@dataclass
class Measured:
    """Outcome of a policy on a split."""

    accuracy: float
    exit_fractions: list[float]
    reach: list[float]  # fraction of inputs that run stage i

    @property
    def recovery_rate(self) -> float:
        return self.reach[1] if len(self.reach) > 1 else 0.0

    def cost(self, per_image: dict[str, float], stages: list[str]) -> float:
        return float(sum(r * per_image[m] for r, m in zip(self.reach, stages)))


def measure(policy: Policy, probs: dict[str, np.ndarray], labels: np.ndarray) -> Measured:
    final, ex = simulate(policy, probs)
    k = len(policy.stages)
    return Measured(float((final == labels).mean()), [float((ex == i).mean()) for i in range(k)],
                    [float((ex >= i).mean()) for i in range(k)])


class _Clock:
    """Wall-clock and process CPU time together.

    The machine is shared: wall-clock time includes waiting for other people's jobs, CPU time
    of this (single-threaded) process does not.  Both are reported; neither is hidden.
    """

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


@torch.inference_mode()
def execute(policy: Policy, models: dict[str, torch.nn.Module], images: torch.Tensor,
            batch_size: int = 500, timing: dict | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Run the cascade for real: (predictions, exit stages, wall seconds).

    Stage 0 runs on consecutive batches; the inputs it doubts are *gathered* (with
    ``index_select``) into a pending pool of the next stage, which runs whenever a full batch
    has accumulated, and once more at the end on what is left — so the expensive model always
    sees full batches.  ``timing`` (if given) receives wall and CPU seconds.
    """
    n = len(images)
    preds = np.zeros(n, dtype=np.int64)
    exits = np.zeros(n, dtype=np.int64)
    last = len(policy.stages) - 1
    pending: list[list[tuple[torch.Tensor, torch.Tensor, np.ndarray]]] = [[] for _ in policy.stages]
    clock = _Clock()

    def run_stage(i: int, x: torch.Tensor, idx: torch.Tensor, running: np.ndarray | None) -> None:
        p = softmax(models[policy.stages[i]](x).float().numpy())
        running = p if running is None else _step(policy, i, running, p)
        doubt = policy.rules[i].recover_mask(running) if i < last else np.zeros(len(x), bool)
        done = np.flatnonzero(~doubt)
        preds[idx[done].numpy()] = running[done].argmax(axis=1)
        exits[idx[done].numpy()] = i
        if doubt.any():
            keep = torch.from_numpy(np.flatnonzero(doubt))
            pending[i + 1].append((x.index_select(0, keep), idx[keep], running[doubt]))
            flush(i + 1, force=False)

    def flush(i: int, force: bool) -> None:
        while pending[i]:
            count = sum(len(c[1]) for c in pending[i])
            if count < batch_size and not force:
                return
            x = torch.cat([c[0] for c in pending[i]])
            idx = torch.cat([c[1] for c in pending[i]])
            run = np.concatenate([c[2] for c in pending[i]])
            pending[i] = []
            if len(idx) > batch_size:
                pending[i].append((x[batch_size:], idx[batch_size:], run[batch_size:]))
                x, idx, run = x[:batch_size], idx[:batch_size], run[:batch_size]
            run_stage(i, x, idx, run)

    for lo in range(0, n, batch_size):
        run_stage(0, images[lo:lo + batch_size], torch.arange(lo, min(lo + batch_size, n)), None)
    for i in range(1, len(policy.stages)):
        flush(i, force=True)
    wall, cpu = clock.read()
    if timing is not None:
        timing.update(wall=wall, cpu=cpu)
    return preds, exits, wall


@torch.inference_mode()
def run_alone(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 500,
              timing: dict | None = None) -> tuple[np.ndarray, float]:
    """One model on every input, batched the same way: (predictions, wall seconds)."""
    clock = _Clock()
    out = [model(images[i:i + batch_size]).argmax(dim=1) for i in range(0, len(images), batch_size)]
    wall, cpu = clock.read()
    if timing is not None:
        timing.update(wall=wall, cpu=cpu)
    return torch.cat(out).numpy(), wall


def throughput(policy: Policy, big: str, models: dict[str, torch.nn.Module], images: torch.Tensor,
               labels: np.ndarray, batch_size: int = 500, reps: int = 3, progress: bool = True) -> dict:
    """Real throughput of the cascade and of the big model alone, measured interleaved.

    The two runs alternate ``reps`` times so that a busy neighbour slows both alike; the best
    time of each is the headline figure (medians are reported too), in wall-clock seconds and
    in CPU seconds of this process.
    """
    from tqdm import tqdm

    tc, tb = [], []
    preds = exits = big_preds = None
    for _ in tqdm(range(reps), desc="throughput", disable=not progress, leave=False):
        tb.append({})
        big_preds, _ = run_alone(models[big], images, batch_size, tb[-1])
        tc.append({})
        preds, exits, _ = execute(policy, models, images, batch_size, tc[-1])
    n = len(images)
    out = {"images": n, "batch_size": batch_size, "reps": reps,
           "threads": torch.get_num_threads(),
           "cascade_seconds": tc, "big_seconds": tb,
           "cascade_accuracy": float((preds == labels).mean()),
           "big_accuracy": float((big_preds == labels).mean()),
           "exit_fractions": [float((exits == i).mean()) for i in range(len(policy.stages))]}
    for clock in ("wall", "cpu"):
        c = [t[clock] for t in tc]
        b = [t[clock] for t in tb]
        out[clock] = {"cascade_images_per_s": n / min(c), "big_images_per_s": n / min(b),
                      "speedup": min(b) / min(c), "speedup_median": float(np.median(b) / np.median(c))}
    return out


def _simulate_queue(arrivals: np.ndarray, exit_stage: np.ndarray, service: list[tuple[float, float]],
                    max_batch: int) -> np.ndarray:
    """Latency of every request on one worker with greedy dynamic batching.

    ``service[i] = (fixed, per_image)`` seconds for stage i; a request that leaves after stage i
    is answered when stage i of its batch finishes.
    """
    n = len(arrivals)
    done = np.zeros(n)
    clock = 0.0
    head = 0
    while head < n:
        clock = max(clock, arrivals[head])
        tail = min(np.searchsorted(arrivals, clock, side="right"), head + max_batch)
        batch = np.arange(head, tail)
        alive = batch
        for i, (fixed, per) in enumerate(service):
            if len(alive) == 0:
                break
            clock += fixed + per * len(alive)
            leaving = exit_stage[alive] == i
            done[alive[leaving]] = clock
            alive = alive[~leaving]
        head = tail
    return done - arrivals


def offered_load(exit_stage: np.ndarray, cascade_service: list[tuple[float, float]],
                 big_service: tuple[float, float], loads: list[float], requests: int = 20000,
                 max_batch: int = 64, seed: int = 0) -> list[dict]:
    """Latency percentiles of cascade and big-alone under Poisson arrivals.

    ``loads`` are offered rates as fractions of the big model's peak throughput at
    ``max_batch`` (so load 1.0 saturates the big model alone).
    """
    rng = np.random.default_rng(seed)
    big_peak = max_batch / (big_service[0] + big_service[1] * max_batch)
    order = rng.integers(0, len(exit_stage), size=requests)
    ex = exit_stage[order]
    reach_c = [float((exit_stage >= i).mean()) for i in range(len(cascade_service))]
    rows = []
    for load in loads:
        rate = load * big_peak
        arrivals = np.cumsum(rng.exponential(1.0 / rate, size=requests))
        lat_c = _simulate_queue(arrivals, ex, cascade_service, max_batch)
        lat_b = _simulate_queue(arrivals, np.zeros(requests, dtype=np.int64), [big_service], max_batch)
        skip = requests // 10  # warm-up: the first tenth of requests fills the queue
        row = {"load": load, "rate_per_s": rate}
        for tag, lat, serv, reach in (("cascade", lat_c[skip:], cascade_service, reach_c),
                                      ("big", lat_b[skip:], [big_service], [1.0])):
            # peak rate with full batches: every stage runs once per batch on its share of it
            per_batch = sum(f + p * r * max_batch for (f, p), r in zip(serv, reach))
            row[tag] = {"mean_ms": float(lat.mean() * 1e3), "p50_ms": float(np.percentile(lat, 50) * 1e3),
                        "p99_ms": float(np.percentile(lat, 99) * 1e3),
                        "saturated": bool(rate >= max_batch / per_batch)}
        rows.append(row)
    return rows
