"""What ``sieve export`` can check in a moment, before it reads data or weights or trains a model.

Why a module of its own: loading a model can take minutes (an untrained pool model is trained
first), so a request that is bound to fail -- an output that is not a writable ``.onnx`` path,
a plan file that is missing, unreadable, for another model or without the variant, a plan whose
tensors the model does not have -- must fail before that, with one line.
"""

from __future__ import annotations

from pathlib import Path

from .. import zoo
from ..cfloat import Format
from ..errors import SieveError
from ..io_utils import check_output_file
from ..plan_io import load_plan_document, plan_input_shape
from .exporter import check_plan, onnx_output, quantizable_names
from .plan_file import read_plan

__all__ = ["check_onnx_output", "check_export_request", "export_input_shape"]


def check_onnx_output(out: str | Path) -> Path:
    """``out`` as a Path if it names a ``.onnx`` file that can be written, else a SieveError."""
    return check_output_file(onnx_output(out))


def check_export_request(model: str, out: str | Path, plan_path: str | Path | None, variant: str
                         ) -> tuple[dict[str, Format], dict[str, int] | None]:
    """Check an export of zoo model ``model`` to ``out`` with ``variant`` of ``plan_path``
    (None: the fp32 reference, no plan) without loading the model; return ``(plan, elements)``."""
    zoo.spec(model)
    check_onnx_output(out)
    if plan_path is None:
        return {}, None
    plan, elements = read_plan(plan_path, variant, model)
    shape = plan_input_shape(load_plan_document(plan_path)) or tuple(zoo.model_info(model)["input_shape"])
    check_plan(quantizable_names(zoo.architecture(model), shape), plan, elements, model)
    return plan, elements


def export_input_shape(plan_path: str | Path | None, dataset, model: str) -> tuple[int, ...]:
    """(C, H, W) of the exported graph's input: the one the plan was searched with (recorded in
    plan.json), else the loaded data's (e.g. 227x227 for SqueezeNet with its Caffe weights),
    else the zoo's."""
    recorded = plan_input_shape(load_plan_document(plan_path)) if plan_path is not None else None
    if recorded:
        return recorded
    shape = getattr(dataset, "input_shape", None)
    return tuple(shape) if shape else tuple(zoo.model_info(model)["input_shape"])
