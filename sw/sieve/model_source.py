"""Where ``--model`` comes from: a zoo name, an ONNX file, or a PyTorch module of the user's.

``--model`` accepts

* a zoo name (``lenet5``, ``resnet20`` ... — :mod:`sieve.zoo`, data and weights as before);
* an ONNX file (``net.onnx``): imported by :mod:`sieve.onnx_import` into a ``torch.fx``
  ``GraphModule`` holding the file's initializers; the image shape comes from the file's input
  (or ``--input-shape`` when the file leaves it open);
* ``package.module:factory`` or ``path/to/file.py:ClassOrFactory``: the attribute is called
  without arguments (a class is instantiated) and must give an ``nn.Module``; ``--weights``
  loads a state dict into it through :func:`sieve.models.weights.read_state_dict`, which never
  runs code from the weights file.  Importing a ``.py`` file or a module *does* run the user's
  code — that is the user's explicit choice by naming it.

:func:`resolve` returns a :class:`LoadedModel` (the module, a name for output directories, the
image shape when the source knows it); :func:`load` adds the dataset (zoo models: their own data;
other models: ``--data``).  Every way a source can be wrong is one ``SieveError`` line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn

from .data import Dataset
from .errors import SieveError

__all__ = ["LoadedModel", "source_kind", "resolve", "load", "source_name", "parse_input_shape"]

_FORMS = "a zoo name (see `sieve models`), a file.onnx, package.module:factory or path/file.py:ClassOrFactory"


@dataclass
class LoadedModel:
    """A model from any source, fp32 and in eval mode."""

    model: nn.Module
    name: str                                  # for build/search/<name>, reports and pools
    kind: str                                  # "zoo" | "onnx" | "python"
    source: str                                # what the user typed
    input_shape: tuple[int, ...] | None = None  # one image (C, H, W) when the source knows it
    tensor_map: dict[str, dict] = field(default_factory=dict)   # plan tensor -> ONNX names (onnx)
    traceable: bool = True                     # torch.fx can trace it (the search's prefix cache)


def source_kind(text: str) -> str:
    """``"zoo"``, ``"onnx"`` or ``"python"`` for a ``--model`` value (no file is read)."""
    from . import zoo

    text = str(text)
    if text in zoo.SPECS:
        return "zoo"
    if text.lower().endswith(".onnx"):
        return "onnx"
    if ":" in text:
        target, _, attr = text.rpartition(":")
        if target and attr:
            return "python"
    raise SieveError(f"unknown model {text!r}; give {_FORMS}; zoo models: {', '.join(zoo.known_models())}")


def source_name(text: str) -> str:
    """A short name for output directories: the zoo name, the ONNX file's stem, ``file.Factory``."""
    kind = source_kind(text)
    if kind == "zoo":
        return text
    if kind == "onnx":
        return Path(text).stem
    target, _, attr = text.rpartition(":")
    base = Path(target).stem if target.endswith(".py") else target
    return f"{base}.{attr}"


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,224,224"`` (or ``3x224x224``) → ``(3, 224, 224)``."""
    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in str(text).replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise SieveError(f"--input-shape must be positive sizes like 3,224,224 (C,H,W), got {text!r}")
    return shape


# ---------------------------------------------------------------------------- python sources
def _import_target(target: str, text: str):
    """The module named by ``package.module`` or ``path/file.py`` (runs the user's code)."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SieveError(f"model file {path} does not exist; pass --model path/to/file.py:ClassOrFactory")
        module_name = f"sieve_user_model_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module    # dataclasses and pickling look modules up by name
        runner = lambda: spec.loader.exec_module(module)  # noqa: E731
    else:
        module = None

        def runner():
            nonlocal module
            module = importlib.import_module(target)
    try:
        runner()
    except ModuleNotFoundError as exc:
        if not target.endswith(".py") and exc.name and target.startswith(exc.name):
            raise SieveError(f"cannot import module {target!r} for --model {text}: no module named {exc.name!r}"
                             " (is it on PYTHONPATH?)") from None
        raise SieveError(f"importing {target} for --model {text} raised ModuleNotFoundError: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's code failed: one line, their message
        raise SieveError(f"importing {target} for --model {text} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}") from None
    return module


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _python_model(text: str, weights: str | None) -> LoadedModel:
    target, _, attr = text.rpartition(":")
    module = _import_target(target, text)
    if not hasattr(module, attr):
        offers = sorted(n for n, v in vars(module).items()
                        if not n.startswith("_") and (isinstance(v, type) and issubclass(v, nn.Module)
                                                      or callable(v) and not isinstance(v, type)
                                                      and getattr(v, "__module__", None) == module.__name__))
        raise SieveError(f"{target} has no attribute {attr!r} for --model {text}"
                         f"{'; it defines ' + ', '.join(offers[:8]) if offers else ''}")
    factory = getattr(module, attr)
    if isinstance(factory, nn.Module):
        model = factory
    elif callable(factory):
        try:
            model = factory()
        except Exception as exc:  # noqa: BLE001 - the user's factory failed: one line
            raise SieveError(f"{text}() raised {type(exc).__name__}: {_first_line(exc)}; the factory must "
                             "build the model without arguments") from None
    else:
        raise SieveError(f"{text} is a {type(factory).__name__}, not an nn.Module class or a factory function")
    if not isinstance(model, nn.Module):
        raise SieveError(f"{text}() returned a {type(model).__name__}, not a torch.nn.Module")
    name = source_name(text)
    if weights is not None:
        from .models.weights import load_into, read_state_dict

        model = load_into(model, read_state_dict(weights), weights, name)
    model = model.float().eval()
    return LoadedModel(model, name, "python", text, traceable=_traceable(model, name))


_UNTRACEABLE_SAID: set[str] = set()


def _traceable(model: nn.Module, name: str) -> bool:
    """Whether torch.fx traces the model; if not, say once that evaluation goes without the
    search's prefix cache (hooks on every layer instead: correct, just slower)."""
    from torch import fx

    try:
        fx.symbolic_trace(model)
        return True
    except Exception as exc:  # noqa: BLE001 - data-dependent control flow and friends
        if name not in _UNTRACEABLE_SAID:
            _UNTRACEABLE_SAID.add(name)
            warnings.warn(f"{name}: torch.fx cannot trace this model ({type(exc).__name__}: {_first_line(exc)[:120]});"
                          " evaluation falls back to forward hooks without the prefix cache (slower, same results)",
                          stacklevel=2)
        return False


# ---------------------------------------------------------------------------- resolving
@torch.no_grad()
def logits_per_image(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> fx.GraphModule:
    """``gm`` giving N×K logits when its output is N×K×1×…×1 (Caffe conversions such as the
    zoo's SqueezeNet and DenseNet end in a 1×1 conv or global pool without a Flatten): SIEVE
    counts classes and takes ``argmax(1)`` on 2-D logits.  The ONNX file itself is not changed;
    :func:`sieve.export.verify.compare` flattens onnxruntime's output the same way."""
    out = gm(torch.zeros((1, *input_shape)))
    if not isinstance(out, torch.Tensor) or out.dim() <= 2 or any(d != 1 for d in out.shape[2:]):
        return gm
    node = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(node):
        flat = gm.graph.call_function(torch.flatten, (node.args[0], 1))
    node.args = (flat,)
    gm.recompile()
    return gm


def resolve(text: str, weights: str | None = None, input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """The model named by ``text`` (any form of ``--model``), without its dataset.

    Zoo models are built freshly initialised here (:func:`sieve.zoo.architecture`) unless
    ``weights`` is given; use :func:`load` for a zoo model with its trained weights and data.
    """
    kind = source_kind(text)
    if kind == "zoo":
        from . import zoo

        model = zoo.architecture(text)
        if weights is not None:
            from .models.weights import load_into, read_state_dict

            model = load_into(model, read_state_dict(weights), weights, text)
        return LoadedModel(model, text, "zoo", text, tuple(zoo.model_info(text)["input_shape"]))
    if kind == "onnx":
        if weights is not None:
            raise SieveError(f"--weights does not apply to an ONNX file ({text} holds its own weights)")
        from .onnx_import import import_onnx

        imported = import_onnx(text, input_shape=input_shape)
        if len(imported.output_names) != 1:
            raise SieveError(f"{text} has {len(imported.output_names)} outputs "
                             f"({', '.join(imported.output_names)}); SIEVE needs one logits output")
        return LoadedModel(logits_per_image(imported.module, imported.input_shape), source_name(text), "onnx",
                           text, imported.input_shape, imported.tensor_map)
    loaded = _python_model(text, weights)
    loaded.input_shape = input_shape
    return loaded


def external_dataset(data: str | None, loaded: LoadedModel, val: int | None = None, test: int | None = None,
                     dataset: str | None = None, preprocess=None, preprocess_overrides: dict | None = None,
                     workers: int | None = None) -> Dataset:
    """The dataset ``--data`` names for a model that is not from the zoo: an ``.npz`` of
    preprocessed arrays, or images (ImageNet-style folder/tar) with an explicit ``--preprocess``
    (decoded the first time by ``workers`` processes, as :func:`sieve.datasets.imagenet.load_imagenet`)."""
    from .datasets.workers import check_workers

    workers = check_workers(workers)
    if data is None:
        raise SieveError(f"{loaded.source} is not a zoo model, so it has no default data; pass --data "
                         "(an .npz with x = N x C x H x W preprocessed float32 images and y = labels, or images "
                         "with --preprocess)")
    overrides = {k: v for k, v in (preprocess_overrides or {}).items() if v is not None}
    if str(data).lower().endswith(".npz"):
        if preprocess is not None or overrides:
            raise SieveError(f"--preprocess and its overrides do not apply to {data}: an .npz holds x already "
                             "preprocessed; drop them or pass the images instead")
        from .datasets.arrays import load_npz

        result = load_npz(str(data), dataset).truncated(val, test)
    else:
        if preprocess is None:
            raise SieveError(f"{loaded.source} is not a zoo model, so how its images are preprocessed is not known; "
                             "pass --preprocess (imagenet, caffe-imagenet, cifar10, mnist, none) and overrides")
        from .datasets.imagenet import load_imagenet
        from .preprocess import preset, with_overrides

        result = load_imagenet(data, with_overrides(preset(preprocess), **overrides), dataset,
                               workers).truncated(val, test)
    shape = tuple(result.val.images.shape[1:])
    if loaded.input_shape is not None and tuple(loaded.input_shape) != shape:
        raise SieveError(f"--data {data} holds {'x'.join(map(str, shape))} images but {loaded.source} takes "
                         f"{'x'.join(map(str, loaded.input_shape))}; preprocess the data to the model's input shape")
    loaded.input_shape = shape
    from .datasets.arrays import check_fits

    check_fits(loaded.model, result, loaded.name)   # labels beyond the model's outputs: one line
    return result


def load(text: str, data: str | None = None, weights: str | None = None, val: int | None = None,
         test: int | None = None, input_shape: tuple[int, ...] | None = None,
         **data_options) -> tuple[LoadedModel, Dataset]:
    """Any ``--model`` with its dataset: zoo models as :func:`sieve.zoo.load`, others with ``--data``.
    ``data_options``: ``dataset``, ``preprocess``, ``preprocess_overrides``, ``workers`` (the CLI's data options)."""
    if source_kind(text) == "zoo":
        from . import zoo

        model, dataset = zoo.load(text, data=data, weights=weights, val=val, test=test, **data_options)
        return LoadedModel(model, text, "zoo", text, tuple(dataset.val.images.shape[1:])), dataset
    loaded = resolve(text, weights=weights, input_shape=input_shape)
    return loaded, external_dataset(data, loaded, val, test, **data_options)
