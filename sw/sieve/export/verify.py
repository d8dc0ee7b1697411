"""Does an exported ONNX file reproduce the emulated torch model?  Measure it, and explain misses.

The emulated model is ``sieve.qeval.apply_plan(model, plan)`` restricted to what the file holds
(weights only, or nothing for the fp32 reference).  ``compare`` runs both on the same images and
reports top-1 agreement and the per-image relative logit difference
``max|onnx - torch| / max|torch|``.  ``explain`` looks inside the images whose logits differ by
more than the tolerance: it exposes every rounded activation of the ONNX graph and compares it with
the emulator's, so a miss can be traced to the first layer where the two disagree and to how many
ulps apart the fp32 inputs of that rounding were.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ..cfloat import Format
from ..codec import quantize
from .exporter import read_records

__all__ = ["file_plan", "session", "compare", "explain", "decoded_weights"]


def file_plan(path: str, plan: dict[str, Format]) -> dict[str, Format]:
    """The part of ``plan`` that the ONNX file at ``path`` actually applies (from its metadata)."""
    names = {e.name for e in read_records(onnx.load(path, load_external_data=False)) or []}
    return {n: f for n, f in plan.items() if n in names}


def session(model: str | bytes, threads: int = 1, optimized_path: str | None = None,
            profile_prefix: str | None = None) -> ort.InferenceSession:
    """A plain CPU onnxruntime session (default optimizations, which fold the weight decode);
    with ``profile_prefix`` onnxruntime profiles it (``end_profiling()`` names the JSON)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _torch_logits(model: torch.nn.Module, images: torch.Tensor, batch: int) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)]).numpy()


def _onnx_logits(sess: ort.InferenceSession, images: torch.Tensor, batch: int) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + batch].numpy()})[0]
                           for i in range(0, len(images), batch)])


def compare(model: torch.nn.Module, plan: dict[str, Format], path: str, images: torch.Tensor,
            tolerance: float = 1e-5, batch: int = 250) -> dict:
    """Top-1 agreement and logit differences between the file and the emulated model."""
    from ..qeval import apply_plan

    applied = file_plan(path, plan)
    emulated = apply_plan(model, applied) if applied else model.eval()
    ref = _torch_logits(emulated, images, batch)
    got = _onnx_logits(session(path), images, batch)
    got = got.reshape(len(got), -1) if got.ndim > 2 and got.size == ref.size else got  # N×K×1×1 files
    scale = np.maximum(np.abs(ref).max(axis=1), np.finfo(np.float32).tiny)
    rel = np.abs(got - ref).max(axis=1) / scale
    over = np.nonzero(rel > tolerance)[0]
    same = ref.argmax(1) == got.argmax(1)
    return {
        "images": int(len(images)),
        "top1_agreement": float(same.mean()),
        "top1_disagreements": int((~same).sum()),
        "max_relative_logit_diff": float(rel.max()) if rel.size else 0.0,
        "images_over_tolerance": int(over.size),
        "tolerance": tolerance,
        "over_tolerance_indices": over.tolist(),
        "disagreement_indices": np.nonzero(~same)[0].tolist(),
    }


def _rounding_io(path: str) -> tuple[onnx.ModelProto, list[tuple[str, str, str]]]:
    """The model with every rounding's fp32 input and rounded output exposed as graph outputs."""
    proto = onnx.load(path)
    pairs = [(e.name, e.source, e.tensor) for e in read_records(proto) or [] if e.kind == "activation"]
    present = {o.name for o in proto.graph.output}
    for _, source, rounded in pairs:
        for t in (source, rounded):
            if t not in present:
                present.add(t)
                proto.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    return proto, pairs


def explain(model: torch.nn.Module, plan: dict[str, Format], path: str, images: torch.Tensor) -> list[dict]:
    """For each image, the first planned activation whose rounded values differ between the file
    and the emulator: how many elements differ, whether the graph rounds its own input exactly as
    the emulator would, and how many ulps apart the fp32 inputs of the differing elements were."""
    from ..qeval import apply_plan, hook_call_sites

    applied = file_plan(path, plan)
    proto, pairs = _rounding_io(path)
    sess = session(proto.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    emulated = apply_plan(model, applied)
    captured: dict[str, torch.Tensor] = {}

    def capture(site, mod, args):  # every call site's input before its rounding
        captured[site] = args[0].detach().clone()

    hooks = hook_call_sites(emulated, capture, prepend=True)
    out = []
    try:
        for index in range(len(images)):
            x = images[index:index + 1]
            captured.clear()
            with torch.no_grad():
                emulated(x)
            got = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x.numpy()})))
            for name, source, rounded in pairs:
                pre_t = captured[name].numpy()
                q_t = quantize(pre_t, applied[name])
                diff = got[rounded].view(np.uint32) != q_t.view(np.uint32)
                if diff.any():
                    pre_o = got[source]
                    own = quantize(pre_o, applied[name]).view(np.uint32) == got[rounded].view(np.uint32)
                    # how far apart the two fp32 inputs were, in units in the last place, where
                    # the rounded values differ (same sign there, so the bit patterns subtract)
                    ulps = np.abs(pre_o.view(np.int32).astype(np.int64)[diff]
                                  - pre_t.view(np.int32).astype(np.int64)[diff])
                    out.append({"image": index, "tensor": name, "elements_differing": int(diff.sum()),
                                "elements": int(diff.size),
                                "onnx_rounding_matches_emulator_on_onnx_inputs": bool(own.all()),
                                "max_input_ulps_apart": int(ulps.max()),
                                # the same gap against the tensor's largest value: the scale of a
                                # convolution's accumulated rounding error
                                "max_input_diff_vs_tensor_max": float(
                                    np.abs(pre_o - pre_t)[diff].max() / max(float(np.abs(pre_t).max()), 1e-30)),
                                "values": [(float(pre_t.reshape(-1)[i]), float(pre_o.reshape(-1)[i]),
                                            float(q_t.reshape(-1)[i]), float(got[rounded].reshape(-1)[i]))
                                           for i in np.nonzero(diff.reshape(-1))[0][:3]]})
                    break
    finally:
        for h in hooks:
            h.remove()
    return out


def decoded_weights(path: str) -> dict[str, np.ndarray]:
    """The float32 weights the file's decode subgraphs produce in onnxruntime (test-only variant:
    each decoded tensor is added as a graph output)."""
    proto = onnx.load(path)
    weights = [e.tensor for e in read_records(proto) or [] if e.kind == "weight"]
    for t in weights:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    sess = session(proto.SerializeToString())
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    outs = sess.run(weights, {inp.name: np.zeros(shape, np.float32)})
    return dict(zip(weights, outs))
