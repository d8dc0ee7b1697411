"""Reading an ONNX file safely: checked, external data confined to the file's folder, one opset.

Why a separate step: everything the importer later trusts (initializer bytes, the default-domain
opset, the single image input) is established here, and every way a file can be unusable becomes
one :class:`~sieve.errors.SieveError` line before any torch code runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import SieveError

__all__ = ["OnnxGraph", "read_onnx", "DEFAULT_DOMAINS"]

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class OnnxGraph:
    """A checked ONNX model: its graph, default-domain opset, constants and the one real input."""

    path: Path
    model: onnx.ModelProto
    opset: int
    initializers: dict[str, np.ndarray]
    input_name: str
    input_dims: list[int | None]      # None for a symbolic or unknown dimension
    output_names: list[str]

    @property
    def graph(self) -> onnx.GraphProto:
        return self.model.graph


def _check_external_data(model: onnx.ModelProto, folder: Path, path: Path) -> None:
    """Refuse initializers stored outside the model's folder (a file must not read /etc/...)."""
    root = folder.resolve()
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(root):
            raise SieveError(f"{path}: initializer {tensor.name!r} keeps its data in {location!r}, outside the "
                             f"model's folder {folder}; move the data file next to the model")
        if not target.is_file():
            raise SieveError(f"{path}: initializer {tensor.name!r} keeps its data in {location!r}, which does "
                             f"not exist in {folder}; copy the data file next to the model")


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    tensor_type = value_info.type.tensor_type
    if tensor_type.elem_type not in (0, onnx.TensorProto.FLOAT):
        name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        raise SieveError(f"model input {value_info.name!r} is {name}; SIEVE imports float32 image models only")
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in tensor_type.shape.dim]


def _as_array(tensor: onnx.TensorProto) -> np.ndarray:
    array = numpy_helper.to_array(tensor)
    if array.dtype in (np.float16, np.float64):
        array = array.astype(np.float32)     # CNN weights computed in fp32, as SIEVE measures them
    return np.array(array, copy=True)


def read_onnx(path: str | Path) -> OnnxGraph:
    """Load and check ``path``; the one-line errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise SieveError(f"ONNX file {path} does not exist; pass an existing .onnx file with --model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user problem
        raise SieveError(f"cannot read {path} as ONNX: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    _check_external_data(model, path.parent, path)
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:  # noqa: BLE001
        raise SieveError(f"cannot read the external data of {path}: {exc}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SieveError(f"{path} is not a valid ONNX model ({first}); re-export it with onnx.checker passing") from None
    opsets = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not opsets:
        raise SieveError(f"{path} imports no default-domain (ai.onnx) opset; nothing SIEVE can import")
    graph = model.graph
    initializers = {t.name: _as_array(t) for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(v.name for v in inputs) or "none"
        raise SieveError(f"{path} has {len(inputs)} graph inputs ({names}); SIEVE imports models with one image input")
    return OnnxGraph(path=path, model=model, opset=max(opsets), initializers=initializers,
                     input_name=inputs[0].name, input_dims=_dims(inputs[0]),
                     output_names=[o.name for o in graph.output])
