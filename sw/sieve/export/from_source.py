"""``sieve export`` for a model from outside the zoo (an ONNX file, a PyTorch module of the user's).

An ONNX file is edited in place (:mod:`.onnx_rewrite`: the user's graph, names, node order and
operators kept; packed weights and roundings where the plan says), guided by the importer's map
from plan names to the file's tensors.  A PyTorch module goes through ``export_onnx`` like a zoo
model.  What this module adds is the bookkeeping a foreign model needs: the plan is looked up
under the source's name and the image shape comes from the file (or the plan, or
``--input-shape``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SieveError
from .exporter import ExportResult, check_plan, export_onnx, quantizable_names
from .plan_file import read_plan
from .preflight import check_onnx_output

__all__ = ["export_source"]


def _plan_input_shape(plan_path: Path | None) -> tuple[int, ...] | None:
    if plan_path is None:
        return None
    from ..plan_io import load_plan_document

    shape = load_plan_document(plan_path).get("input_shape")
    return tuple(int(d) for d in shape) if shape else None


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
    known = quantizable_names(loaded.model, shape) if plan else {}
    if plan:
        check_plan(known, plan, elements, name)
    if loaded.kind == "onnx":   # the user's graph itself, edited where the plan says
        from .onnx_rewrite import rewrite_onnx

        from ..blockfmt import BlockFormat
        from ..qeval import quantizable_tensors

        shapes = ({i.name: tuple(i.shape) for i in quantizable_tensors(loaded.model, shape)}
                  if any(isinstance(f, BlockFormat) for f in plan.values()) else None)
        return rewrite_onnx(source, loaded.tensor_map, plan, known, out, mode=mode, model_name=name,
                            variant=variant if mode != "fp32" else "", shapes=shapes)
    return export_onnx(loaded.model, plan, out, shape, mode=mode, model_name=name,
                       variant=variant if mode != "fp32" else "", elements=elements, progress=progress)
