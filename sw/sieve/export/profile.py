"""Where an ONNX file's inference time goes, per operator type (onnxruntime's own profiler).

Why: the export benchmark gives one latency ratio per file; when a compressed file is slower
than its fp32 reference, the question is which operators the rounding adds to the optimized
graph and what each costs.  Comparing ``op_times`` of the two files answers it (the weight
decode is folded at session start, so it never shows here).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import SieveError
from .verify import session

__all__ = ["op_times"]


def _input_shape(sess: ort.InferenceSession, batch: int) -> tuple[str, tuple[int, ...]]:
    """The graph input's name and shape with the first dimension set to ``batch``."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise SieveError(f"profiling needs a model with one input; this one has {len(inputs)}")
    shape = list(inputs[0].shape)
    if not shape or any(not isinstance(d, int) for d in shape[1:]):
        raise SieveError(f"input {inputs[0].name!r} has shape {shape}; profiling needs fixed dimensions after the batch")
    return inputs[0].name, (batch, *shape[1:])


def op_times(path: str | Path, batch: int = 1, runs: int = 10, warmup: int = 3, threads: int = 1) -> dict:
    """Kernel time per operator type of the optimized graph of ``path``, averaged over ``runs``
    inference calls on a random ``batch`` (after ``warmup`` calls that are not counted).

    Returns ``{"batch", "runs", "threads", "run_ms", "ops": [{"op", "calls", "ms", "share"}]}``
    with ``calls`` and ``ms`` per inference call, the slowest operator first; ``run_ms`` is the
    mean wall time of a call as the profiler saw it.
    """
    if batch < 1 or runs < 1 or warmup < 0:
        raise SieveError(f"profiling needs batch >= 1, runs >= 1 and warmup >= 0 (got {batch}, {runs}, {warmup})")
    if not Path(path).is_file():
        raise SieveError(f"no such ONNX file: {path}")
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(str(path), threads, profile_prefix=str(Path(tmp) / "profile"))
        name, shape = _input_shape(sess, batch)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(warmup + runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    calls = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                   key=lambda e: e["ts"])[warmup:]
    start = calls[0]["ts"]
    ms: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"]["op_name"]
            ms[op] += e["dur"] / 1000.0 / runs
            count[op] += 1
    total = sum(ms.values())
    ops = [{"op": op, "calls": count[op] / runs, "ms": t, "share": t / total if total else 0.0}
           for op, t in sorted(ms.items(), key=lambda kv: -kv[1])]
    return {"batch": batch, "runs": runs, "threads": threads,
            "run_ms": sum(e["dur"] for e in calls) / 1000.0 / runs, "ops": ops}
