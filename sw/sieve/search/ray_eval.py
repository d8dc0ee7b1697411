"""Data-parallel plan evaluation on Ray: the split is sharded across actors, the plan is not.

Why this shape: every decision of a search is a function of per-image predictions, so a split
cut into shards, each run by an actor holding the model, its images and its own prefix cache
(:class:`sieve.qeval.PrefixEvaluator`), gives the same predictions as one process — as long as
every image goes through the same batch it would have gone through locally.  A shard is
therefore a run of whole batches of the set (same batch size, same order), an evaluation sends
only the plan, and the driver merges the actors' logits in shard order before it judges
anything.  The search logic, its targets and its outcome cache do not know Ray is there:
:class:`RayEvaluator` has :class:`~sieve.qeval.PrefixEvaluator`'s ``run`` and is what
:meth:`sieve.search.context.SearchContext.make_evaluator` returns when a pool is given.

Early rejection happens on the driver: the actors run their whole shards (they cannot know
where the merged run stops), the driver replays ``on_batch`` batch by batch in order and cuts
the logits where the local run would have stopped.  A dead actor is re-created, given back its
shards, and its part of the evaluation re-run; results are merged only when every shard is in,
so an evaluation is never half-merged.  Importing this module imports Ray: only ``--ray`` does.
"""

from __future__ import annotations

import math
import time
from typing import Mapping

import torch

from ..cfloat import Format
from ..errors import SieveError

try:
    import ray
    from ray.exceptions import RayActorError, WorkerCrashedError
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise SieveError("--ray needs the ray package: pip install -e '.[ray]' (make setup installs it)") from exc

__all__ = ["RayPool", "RayEvaluator", "RAY_CHOICES"]

RAY_CHOICES = "auto|local|HOST:PORT"
MAX_RESTARTS = 3  # per shard and evaluation: a shard that kills its actor every time is an error


class _ShardWorker:
    """One actor: the model, the shards given to it (by key) and their prefix caches."""

    def __init__(self, model: torch.nn.Module, device: str, threads: int, cache_mem: int | None):
        torch.set_num_threads(threads)
        from ..device import resolve_device
        from ..prefix_store import PrefixStore

        self.device = resolve_device(device)
        # the actor's own bound; spills go to a temporary directory of the actor's machine
        self.store = None if cache_mem is None else PrefixStore(cache_mem)
        self.model = model.eval()
        self.evaluators: dict[str, object] = {}

    def load(self, key: str, images: torch.Tensor, batch_size: int, max_states: int) -> int:
        from ..qeval import PrefixEvaluator

        self.evaluators[key] = PrefixEvaluator(self.model, images, batch_size=batch_size,
                                               max_states=max_states, device=self.device, store=self.store)
        return len(images)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def run(self, key: str, plan: dict, checkpoint: str | None) -> tuple[torch.Tensor, float]:
        t0 = time.perf_counter()
        with torch.no_grad():
            logits = self.evaluators[key].run(plan, checkpoint=checkpoint)
        return logits, time.perf_counter() - t0


class RayPool:
    """The actors of one search, and what each must be given back when it is re-created."""

    def __init__(self, address: str, model: torch.nn.Module, *, workers: int | None = None,
                 device: str = "cpu", threads: int = 1, cache_mem: int | None = None):
        self.started_here = False
        if not ray.is_initialized():
            self._connect(address)
        device = str(device)
        gpu = device.startswith("cuda")
        available = ray.cluster_resources().get("GPU" if gpu else "CPU", 0)
        workers = int(workers) if workers is not None else max(1, int(available // (1 if gpu else threads)))
        if workers < 1:
            raise SieveError(f"--ray-workers must be a whole number >= 1, got {workers}")
        _ship_model_code(model)
        self.model_ref = ray.put(model.eval())
        self.actor_class = ray.remote(num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0)(_ShardWorker)
        self.device, self.threads = device, threads
        self.cache_mem = None if cache_mem is None else int(cache_mem) // workers
        self.actors = [self._new_actor() for _ in range(workers)]
        self.loaded: list[dict[str, tuple]] = [{} for _ in range(workers)]  # per actor: key -> load args
        self.restarts = 0
        self.evaluations = 0
        self.remote_seconds = 0.0   # actors' own run time (summed over actors)
        self.wall_seconds = 0.0     # driver's wall time from submit to merged result
        self.overhead_seconds = 0.0  # of which beyond the slowest actor's own run
        self._next_key = 0

    @property
    def workers(self) -> int:
        return len(self.actors)

    def _connect(self, address: str) -> None:
        spec = str(address).strip()
        try:
            if spec == "local":
                ray.init(include_dashboard=False, log_to_driver=False)
            elif spec == "auto":
                ray.init(address="auto", log_to_driver=False)
            elif ":" in spec and spec.rsplit(":", 1)[1].isdigit():
                ray.init(address=spec, log_to_driver=False)
            else:
                raise SieveError(f"--ray {spec!r} is not one of {RAY_CHOICES}")
        except SieveError:
            raise
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SieveError(f"cannot reach a Ray cluster at --ray {spec} ({' '.join(str(exc).split())[:200]});"
                             " start one with `ray start --head` or pass --ray local") from None
        self.started_here = True

    def _new_actor(self):
        return self.actor_class.remote(self.model_ref, self.device, self.threads, self.cache_mem)

    def restart(self, k: int) -> None:
        """Replace actor ``k`` (dead or not) with a new one holding the same shards."""
        try:
            ray.kill(self.actors[k])
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.actors[k] = self._new_actor()
        self.restarts += 1
        for key, (images_ref, batch_size, max_states) in self.loaded[k].items():
            self.actors[k].load.remote(key, images_ref, batch_size, max_states)

    def load(self, k: int, images: torch.Tensor, batch_size: int, max_states: int) -> str:
        key = f"s{self._next_key}"
        self._next_key += 1
        ref = ray.put(images.contiguous())
        self.loaded[k][key] = (ref, batch_size, max_states)
        self.actors[k].load.remote(key, ref, batch_size, max_states)
        return key

    def evaluator(self, images: torch.Tensor, batch_size: int = 500, max_states: int = 4) -> "RayEvaluator":
        return RayEvaluator(self, images, batch_size, max_states)

    def overhead_ms(self) -> float:
        """Mean per-evaluation time the driver waited beyond the slowest actor's own run (ms)."""
        return 1000.0 * self.overhead_seconds / max(1, self.evaluations)

    def close(self) -> None:
        try:  # their spill files go with them
            ray.get([actor.close.remote() for actor in self.actors], timeout=30)
        except Exception:  # noqa: BLE001 - a dead actor has nothing left to clean
            pass
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []
        if self.started_here:
            ray.shutdown()


class RayEvaluator:
    """:class:`~sieve.qeval.PrefixEvaluator`'s ``run`` over a split sharded by whole batches."""

    def __init__(self, pool: RayPool, images: torch.Tensor, batch_size: int, max_states: int):
        self.pool = pool
        self.n = int(images.shape[0])
        self.batch_size = int(batch_size)
        batches = math.ceil(self.n / self.batch_size)
        per = math.ceil(batches / pool.workers) if batches else 0
        # shard k: batches [k * per, (k + 1) * per) of the set, in order
        self.shards: list[tuple[int, str]] = []   # (actor index, key), in shard order
        for k in range(pool.workers):
            lo, hi = k * per * self.batch_size, min(self.n, (k + 1) * per * self.batch_size)
            if lo < hi:
                self.shards.append((k, pool.load(k, images[lo:hi], self.batch_size, max_states)))

    def _submit(self, plan: dict, checkpoint: str | None) -> list:
        return [self.pool.actors[k].run.remote(key, plan, checkpoint) for k, key in self.shards]

    def _collect(self, refs: list, plan: dict, checkpoint: str | None) -> list[torch.Tensor]:
        """Every shard's logits, in shard order; a shard whose actor died is re-run on a new one."""
        results = []
        slowest = 0.0
        for i, (k, key) in enumerate(self.shards):
            ref = refs[i]
            for attempt in range(MAX_RESTARTS + 1):
                try:
                    logits, seconds = ray.get(ref)
                    break
                except (RayActorError, WorkerCrashedError):
                    if attempt == MAX_RESTARTS:
                        raise SieveError(f"Ray actor {k} died {MAX_RESTARTS + 1} times running its shard;"
                                         " see the Ray logs (out of memory?)") from None
                    self.pool.restart(k)
                    ref = self.pool.actors[k].run.remote(key, plan, checkpoint)
            results.append(logits)
            slowest = max(slowest, seconds)
            self.pool.remote_seconds += seconds
        self._slowest = slowest
        return results

    def run(self, plan: Mapping[str, Format], *, checkpoint: str | None = None, observer=None,
            on_batch=None) -> torch.Tensor:
        if observer is not None:
            raise SieveError("observers run in the driver's own evaluator, not on Ray shards")
        plan = dict(plan)
        t0 = time.perf_counter()
        parts = self._collect(self._submit(plan, checkpoint), plan, checkpoint)
        wall = time.perf_counter() - t0
        self.pool.evaluations += 1
        self.pool.wall_seconds += wall
        self.pool.overhead_seconds += max(0.0, wall - self._slowest)
        logits = torch.cat(parts) if parts else torch.zeros(0)
        if on_batch is None:
            return logits
        outs = []
        for b, lo in enumerate(range(0, self.n, self.batch_size)):
            outs.append(logits[lo:lo + self.batch_size])
            if not on_batch(b, outs[-1]):
                break
        return torch.cat(outs)


def _ship_model_code(model: torch.nn.Module) -> None:
    """Send the code of model classes defined outside installed packages (a user's file.py, a
    test module) by value, so that actors can rebuild the model without importing that file."""
    from ray import cloudpickle

    import sys

    for m in model.modules():
        name = type(m).__module__
        root = name.split(".")[0]
        if root in ("torch", "sieve", "onnx2torch", "builtins") or name not in sys.modules:
            continue
        try:
            cloudpickle.register_pickle_by_value(sys.modules[name])
        except (ValueError, TypeError):
            pass
