"""Where the runtime's numbers come from: model outputs (cached) and measured latencies.

Every algorithm of the runtime works on logits of the calibration (``val``) and held-out
(``test``) splits.  Computing them is the only expensive step, so it happens once per model and
data: the logits are stored in ``build/cache/logits/<member>-<fingerprint>.npz`` where the
fingerprint hashes the preprocessed images, the labels and the model's parameters — a changed
loader, data file or weight file can never serve stale logits.

Latency is measured on this machine, in this process, with a fixed thread count: the best
(minimum) of a few repetitions per batch size, because the machine is shared and the minimum
is the least disturbed estimate of a model's own cost.

A pool member is a zoo model name, optionally a compressed variant from the format search:
``resnet20:accurate`` (plan ``build/search/resnet20/plan.json``) or ``resnet20:accurate@PATH``.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import SieveError
from ..io_utils import atomic_path


@dataclass(frozen=True)
class Member:
    """One pool entry: a zoo model, optionally quantized with a searched plan."""

    model: str
    variant: str | None = None
    plan: str | None = None

    @property
    def tag(self) -> str:
        return self.model if self.variant is None else f"{self.model}:{self.variant}"

    @staticmethod
    def parse(text: str) -> "Member":
        text = text.strip()
        if not text:
            raise SieveError("empty pool entry; give models as NAME or NAME:VARIANT, comma-separated")
        plan = None
        if "@" in text:
            text, plan = text.split("@", 1)
        from ..model_source import source_name

        # the variant is after the last ':' (a module source has its own: pkg.mod:make:accurate)
        model, sep, variant = text.rpartition(":")
        if not sep or variant not in ("exact", "accurate", "approximate"):
            if sep and ":" not in model and "." not in model.replace(".onnx", "") and "/" not in model:
                raise SieveError(f"unknown plan variant {variant!r} in pool entry {text!r}; "
                                 "use exact, accurate or approximate")
            model, variant = text, ""
        if variant and plan is None:
            plan = f"build/search/{source_name(model)}/plan.json"
        return Member(model, variant or None, plan)


def parse_pool(text: str) -> list[Member]:
    """``"resnet20,resnet56"`` → members (at least two, no repeats)."""
    members = [Member.parse(t) for t in text.split(",") if t.strip()]
    if len(members) < 2:
        raise SieveError(f"a pool needs at least two models, got {text!r}; e.g. --pool lenet5,convnet,minivgg")
    tags = [m.tag for m in members]
    if len(set(tags)) != len(tags):
        raise SieveError(f"pool {text!r} names a model twice")
    return members


@dataclass
class PoolData:
    """Logits of every pool member on both splits, the labels, and the loaded models."""

    members: list[Member]
    dataset: str
    classes: list[str]
    val_labels: np.ndarray
    test_labels: np.ndarray
    val_logits: dict[str, np.ndarray]
    test_logits: dict[str, np.ndarray]
    models: dict[str, torch.nn.Module] = field(default_factory=dict)
    test_images: torch.Tensor | None = None
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [m.tag for m in self.members]


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        t = a.detach().cpu().contiguous() if isinstance(a, torch.Tensor) else torch.as_tensor(a)
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _model_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    h.update(getattr(model, "_sieve_plan_text", "fp32").encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def load_member(member: Member, data: str | None, val: int | None, test: int | None,
                data_options: dict | None = None):
    """(model, dataset) of a member (any ``--model`` source); a compressed variant gets its plan applied.
    ``data_options``: ``dataset``/``preprocess``/``preprocess_overrides`` of :func:`sieve.zoo.load`."""
    from ..model_source import load as load_source

    loaded, dataset = load_source(member.model, data=data, val=val, test=test, **(data_options or {}))
    model = loaded.model
    if member.variant is not None:
        if not Path(member.plan).is_file():
            raise SieveError(f"{member.tag} needs the search plan {member.plan}; run "
                             f"`make search MODEL={member.model}` first or give NAME:VARIANT@PATH")
        from ..plan_io import load_plan
        from ..qeval import apply_plan

        plan = load_plan(member.plan, member.variant)
        model = apply_plan(model, plan)
        # activation rounding lives in hooks, not in the state dict: remember the plan for cache keys
        model._sieve_plan_text = ";".join(f"{k}={v}" for k, v in sorted(plan.items()))
    return model, dataset


@torch.inference_mode()
def _logits(model: torch.nn.Module, images: torch.Tensor, batch: int, device="cpu") -> np.ndarray:
    from ..zoo import forward_logits

    return forward_logits(model, images, batch, device).numpy()


def load_pool(members: list[Member], data: str | None = None, val: int | None = None,
              test: int | None = None, cache: str | Path = "build/cache/logits",
              threads: int = 1, progress: bool = True, data_options: dict | None = None,
              device="cpu", batch_size: int = 500) -> PoolData:
    """Load every member, check they share one task, and get their logits (cached).
    ``data_options`` (``--dataset``, ``--preprocess`` …) go to every member's :func:`sieve.zoo.load`;
    ``device``/``batch_size``: where and in what batches the logits are computed (the cached
    logits do not depend on them: rounding is bit-exact on every device)."""
    from tqdm import tqdm

    from .. import zoo

    from ..model_source import source_kind

    # unknown names fail here, cheaply; models from outside the zoo are checked on their data below
    infos = {m.tag: zoo.model_info(m.model) for m in members if source_kind(m.model) == "zoo"}
    kinds = {(i["dataset"], i["num_classes"]) for i in infos.values()}
    if len(kinds) > 1:
        listing = ", ".join(f"{t} ({i['dataset']}, {i['num_classes']} classes)" for t, i in infos.items())
        raise SieveError(f"pool mixes tasks: {listing}; a pool must share one dataset")
    torch.set_num_threads(threads)
    cache = Path(cache)
    first = None
    out: PoolData | None = None
    for member in tqdm(members, desc="pool", disable=not progress, leave=False):
        model, ds = load_member(member, data, val, test, data_options)
        if first is None:
            first = ds
            data_fp = _digest(ds.val.images, ds.val.labels, ds.test.images, ds.test.labels)
            out = PoolData(members, ds.name, list(ds.classes), ds.val.labels.numpy(),
                           ds.test.labels.numpy(), {}, {}, test_images=ds.test.images, source=ds.source)
        else:
            if ds.name != first.name or len(ds.classes) != len(first.classes):
                raise SieveError(f"pool mixes tasks: {members[0].tag} is {first.name} "
                                 f"({len(first.classes)} classes), {member.tag} is {ds.name} "
                                 f"({len(ds.classes)} classes); a pool must share one dataset")
            if (len(ds.val) != len(first.val) or len(ds.test) != len(first.test)
                    or not torch.equal(ds.val.labels, first.val.labels)
                    or not torch.equal(ds.test.labels, first.test.labels)):
                raise SieveError(f"{member.tag} sees different data than {members[0].tag}; "
                                 "load every pool member from the same --data")
        stem = re.sub(r"[^\w.-]+", "-", member.tag)   # a file name even for path/to/net.onnx:accurate
        path = cache / f"{stem}-{data_fp}-{_model_digest(model)}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    val_logits, test_logits = z["val"], z["test"]
            except Exception as exc:  # noqa: BLE001 - object arrays, truncation, missing keys: one problem
                raise SieveError(f"cannot read logits cache {path} ({' '.join(str(exc).split())}); "
                                 "delete it and rerun to recompute") from None
        else:
            val_logits = _logits(model, ds.val.images, batch_size, device)
            test_logits = _logits(model, ds.test.images, batch_size, device)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, val=val_logits, test=test_logits)
        if val_logits.shape[1] != len(first.classes):
            raise SieveError(f"{member.tag} outputs {val_logits.shape[1]} classes but its data has "
                             f"{len(first.classes)}; weights and data do not match")
        out.val_logits[member.tag] = val_logits
        out.test_logits[member.tag] = test_logits
        out.models[member.tag] = model
    return out


@torch.inference_mode()
def measure_latencies(models: dict[str, torch.nn.Module], images: torch.Tensor, batch_sizes: list[int],
                      reps: int = 5, budget_s: float = 60.0, clock: str = "cpu",
                      progress: bool = False) -> dict[str, dict[int, float]]:
    """Seconds per batch of every model at every batch size: minimum over ``reps`` runs.

    The models take turns inside each repetition, so that a busy neighbour on the shared
    machine slows them alike; the minimum is the least disturbed estimate of each one's cost.
    The clock is this process's CPU time (``clock="cpu"``, the default: with one torch thread
    it is the model's own compute, undisturbed by other jobs waiting for the same cores) or
    wall-clock time (``clock="wall"``).  Large batches get fewer repetitions once
    ``budget_s`` of measuring has been spent.
    """
    from tqdm import tqdm

    now = time.process_time if clock == "cpu" else time.perf_counter
    result = {m: {} for m in models}
    for b in tqdm(batch_sizes, desc="latency (batch sizes)", disable=not progress, leave=False):
        x = images[:b]
        if len(x) < b:
            x = images[torch.arange(b) % len(images)]
        for model in models.values():
            model(x)  # warm-up: allocator, kernels
        best = {m: np.inf for m in models}
        start = time.perf_counter()
        for rep in range(reps):
            for m, model in models.items():
                t = now()
                model(x)
                best[m] = min(best[m], now() - t)
            if rep >= 1 and time.perf_counter() - start > budget_s:
                break
        for m in models:
            result[m][b] = float(best[m])
    return result


def measure_latency(model: torch.nn.Module, images: torch.Tensor, batch_sizes: list[int],
                    reps: int = 5) -> dict[int, float]:
    """:func:`measure_latencies` for a single model."""
    return measure_latencies({"m": model}, images, batch_sizes, reps)["m"]


def per_image_latency(timings: dict[int, float]) -> float:
    """Per-image cost at the largest measured batch (the throughput-relevant figure)."""
    b = max(timings)
    return timings[b] / b


def fit_service_time(timings: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``seconds(b) = fixed + per_image * b`` through the measured batch sizes."""
    bs = np.array(sorted(timings), dtype=float)
    ts = np.array([timings[int(b)] for b in bs])
    if len(bs) == 1:
        return 0.0, float(ts[0] / bs[0])
    a, c = np.polyfit(bs, ts, 1)[::-1]
    return float(max(a, 0.0)), float(max(c, 1e-12))
