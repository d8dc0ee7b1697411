"""Importing ONNX CNNs as ``torch.fx.GraphModule``s whose weights are the file's initializers.

Why not ``onnx2torch``: it imports torchvision, whose wheels cannot load their operators against
the CPU torch build SIEVE uses (``operator torchvision::nms does not exist``), so this package
is a focused importer for the operators classic CNNs use (opsets 7 and later):

* :mod:`.reader` loads the file (``onnx.checker``; external data only from the file's folder);
* :mod:`.ops` maps each operator to torch (Conv/Gemm/MatMul as ``nn.Conv2d``/``nn.Linear`` that
  hold the initializers, so plans, hooks and the exporter see ordinary layers);
* :mod:`.builder` emits the fx graph while running two example batches, which folds the shape
  arithmetic of ``x.view(x.size(0), -1)`` into constants;
* :mod:`.importer` runs the node loop, names the layers after the file and records the map from
  plan tensor names to ONNX names (``ImportedModel.tensor_map``, also ``module.meta["onnx"]``).

An operator outside :data:`SUPPORTED_OPS` is one ``SieveError`` line naming the node, its op type
and the opset.
"""

from .importer import ImportedModel, import_onnx
from .ops import SUPPORTED_OPS

__all__ = ["import_onnx", "ImportedModel", "SUPPORTED_OPS"]
