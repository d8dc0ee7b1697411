"""``sieve export`` for a model from outside the zoo (an ONNX file, a PyTorch module of the user's).

Why it goes through the same exporter: an imported ONNX file is an ordinary ``torch.fx``
``GraphModule`` whose Conv/Linear layers hold the file's initializers, so ``export_onnx`` exports
it again (fp32 reference, packed weights, in-graph activation rounding) with the same guarantees
as a zoo model.  What this module adds is the bookkeeping a foreign model needs: the plan is
looked up under the source's name, the image shape comes from the file (or the plan, or
``--input-shape``), and an imported file's graph input and output keep the user's names.
The node order and operator choice are torch's re-export of the imported graph, not the
original file's (BatchNorm, for instance, is written as the exporter's scale + shift).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from ..errors import SieveError
from ..io_utils import atomic_path
from .exporter import METADATA_KEY, ExportResult, check_plan, export_onnx, quantizable_names
from .plan_file import read_plan
from .preflight import check_onnx_output

__all__ = ["export_source", "rename_io"]


def _plan_input_shape(plan_path: Path | None) -> tuple[int, ...] | None:
    if plan_path is None:
        return None
    from ..plan_io import load_plan_document

    shape = load_plan_document(plan_path).get("input_shape")
    return tuple(int(d) for d in shape) if shape else None


def rename_io(path: str | Path, input_name: str, output_name: str) -> bool:
    """Give the graph input/output of ``path`` the names ``input_name``/``output_name``; an inner
    value that already has one of them is renamed out of the way, and the SIEVE metadata follows.
    False, file untouched, when a name cannot appear in the metadata records (space, ';')."""
    proto = onnx.load(str(path))
    graph = proto.graph
    old_in, old_out = graph.input[0].name, graph.output[0].name
    if any(not n or any(c.isspace() for c in n) or ";" in n for n in (input_name, output_name)):
        return False
    if input_name == output_name:
        return False
    used = ({v for n in graph.node for v in (*n.input, *n.output)} | {t.name for t in graph.initializer}
            | {old_in, old_out})
    mapping: dict[str, str] = {}
    for old, new in ((old_in, input_name), (old_out, output_name)):
        if new != old and new in used and new not in (old_in, old_out):
            spare = next(f"{new}_{i}" for i in range(1, 1 << 30) if f"{new}_{i}" not in used)
            used.add(spare)
            mapping[new] = spare
        mapping[old] = new
    rename = lambda v: mapping.get(v, v)  # noqa: E731
    for node in graph.node:
        node.input[:] = [rename(v) for v in node.input]
        node.output[:] = [rename(v) for v in node.output]
    for t in graph.initializer:
        t.name = rename(t.name)
    for v in (*graph.input, *graph.output, *graph.value_info):
        v.name = rename(v.name)
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:   # weight records name their packed codes (3), activations tensor/source (4, 5)
            records = []
            for rec in prop.value.split(";"):
                toks = rec.split(" ")
                where = (3,) if len(toks) > 1 and toks[1] == "w" else (4, 5)
                records.append(" ".join(rename(t) if i in where else t for i, t in enumerate(toks)))
            prop.value = ";".join(records)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return True


def export_source(source: str, out: str | Path, plan_path: str | Path | None, variant: str, mode: str,
                  weights: str | None = None, input_shape: tuple[int, ...] | None = None,
                  progress: bool = True) -> ExportResult:
    """Export the model ``source`` names (any ``--model`` form but a zoo name) with ``variant``
    of ``plan_path`` (None for ``mode="fp32"``)."""
    from ..model_source import resolve, source_name

    name = source_name(source)
    check_onnx_output(out)
    plan, elements = ({}, None) if plan_path is None else read_plan(plan_path, variant, name)
    shape = input_shape or _plan_input_shape(None if plan_path is None else Path(plan_path))
    loaded = resolve(source, weights=weights, input_shape=shape)
    shape = shape or loaded.input_shape
    if shape is None:
        raise SieveError(f"the image shape of {source} is unknown; pass --input-shape C,H,W")
    if plan:
        check_plan(quantizable_names(loaded.model, shape), plan, elements, name)
    result = export_onnx(loaded.model, plan, out, shape, mode=mode, model_name=name,
                         variant=variant if mode != "fp32" else "", elements=elements, progress=progress)
    if loaded.kind == "onnx":
        imported = loaded.model.meta.get("onnx", {})
        outputs = imported.get("outputs") or []
        if imported.get("input") and len(outputs) == 1 and rename_io(result.path, imported["input"], outputs[0]):
            result.file_bytes = Path(result.path).stat().st_size
    return result
