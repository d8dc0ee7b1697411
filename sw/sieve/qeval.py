"""Quantized evaluation: apply a plan (tensor name -> Format) to a torch model.

Why torch-native: the search quantizes every planned activation on every evaluation, so
going through NumPy (the golden emulator) would dominate its cost.  :func:`quantize_tensor`
works on the int32 view of float32 tensors and reproduces :func:`sieve.quantize` bit for bit
(``tests/test_qeval.py`` proves it over many formats and every corner case).

The quantizable tensors are the weight and the input activation of every ``nn.Conv2d`` and
``nn.Linear``: what memory holds between layers.  Biases stay fp32.  A module that ``forward``
calls more than once (weight sharing) has one weight but one input activation per *call site*,
each with its own format: ``<module>.input`` for the first call of a forward pass,
``<module>.input#2``, ``<module>.input#3``, ... for the later ones (:func:`activation_name`), so
the names of a module called once are unchanged.  Search, :func:`apply_plan`, the prefix cache and
the ONNX exporter all count calls the same way (:func:`hook_call_sites`, or the order of the
module's nodes in a traced graph).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .cfloat import Format
from .cpu_rounding import SPECIAL_BITS, float32_bits, plain_parameters, round_plain
from .errors import SieveError

__all__ = ["TensorInfo", "quantizable_tensors", "quantize_tensor", "apply_plan", "check_plan",
           "activation_name", "parse_tensor_name", "hook_call_sites"]

QUANTIZABLE = (nn.Conv2d, nn.Linear)
_CANON_NAN = (0x7FC00000, -0x00400000)  # int32 bit patterns of +qNaN (0x7FC00000) and -qNaN (0xFFC00000)
_FP32_MIN_NORMAL = 2.0**-126
# "<module>.weight", "<module>.input" or "<module>.input#<call>" (call >= 2, no leading zero)
_TENSOR_NAME = re.compile(r"(?P<module>.*)\.(?P<kind>weight|input)(?:#(?P<call>[2-9]|[1-9][0-9]+))?")


def activation_name(module: str, call: int = 1) -> str:
    """Name of the input of the ``call``-th call (1-based) of ``module`` in one forward pass:
    ``<module>.input`` for the first, ``<module>.input#<call>`` for the later ones."""
    return f"{module}.input" if call == 1 else f"{module}.input#{call}"


def parse_tensor_name(name: str) -> tuple[str, str, int] | None:
    """``(module, "weight" | "input", call)`` of a tensor name (call 1 for a weight), or None
    when ``name`` is not spelled like a quantizable tensor."""
    m = _TENSOR_NAME.fullmatch(name) if isinstance(name, str) else None
    if m is None or (m["kind"] == "weight" and m["call"]):
        return None
    return m["module"], m["kind"], int(m["call"] or 1)


def hook_call_sites(model: nn.Module, fn, prepend: bool = False) -> list:
    """Forward pre-hooks calling ``fn(activation_name, module, args)`` before every call of every
    Conv2d/Linear of ``model``; what ``fn`` returns replaces ``args`` (None keeps them), as in a
    forward pre-hook.  Calls are counted per module from the start of each call of ``model``
    itself, so the k-th call of a module in a forward pass is always the same tensor name.
    Returns the hook handles (``.remove()`` them to undo)."""
    counts: dict[str, int] = {}
    handles = [model.register_forward_pre_hook(lambda mod, args: counts.clear(), prepend=True)]
    for name, m in model.named_modules():
        if isinstance(m, QUANTIZABLE):
            def hook(mod, args, name=name):
                counts[name] = counts.get(name, 0) + 1
                return fn(activation_name(name, counts[name]), mod, args)
            handles.append(m.register_forward_pre_hook(hook, prepend=prepend))
    return handles


@dataclass(frozen=True)
class TensorInfo:
    """One quantizable tensor: ``name`` is ``"<module>.weight"`` or an input activation
    (``"<module>.input"``, or ``"<module>.input#<k>"`` for the k-th call of a shared module)."""

    name: str
    kind: str          # "weight" | "activation"
    elements: int      # weight.numel(), or input numel per ONE image
    module_name: str
    shape: tuple[int, ...] = ()  # the weight's shape, or one image's input shape (block formats' layout)


def quantize_tensor(t: torch.Tensor, fmt: Format) -> torch.Tensor:
    """Round a float32 tensor to ``fmt`` exactly like ``sieve.quantize`` (new tensor, same shape).

    Works on the int32 bit pattern: nearest-even (or truncating) rounding of the mantissa with
    an unbounded exponent, then the overflow, underflow, special-value and sign rules of the
    Format contract (see ``sieve.cfloat``).
    """
    if not isinstance(fmt, Format):
        from .blockfmt import is_layout_format, quantize_torch

        if is_layout_format(fmt):  # block-scaled / per-channel layouts (issue 16)
            return quantize_torch(t, fmt, quantize_tensor)
        raise TypeError(f"fmt must be a sieve.Format, got {type(fmt).__name__}")
    if t.dtype != torch.float32:
        if t.dtype in (torch.float16, torch.bfloat16, torch.float64):
            t = t.float()
        else:
            raise TypeError(f"expected a floating-point tensor, got {t.dtype}")
    t = _dense(t)
    bits = t.view(torch.int32)
    if fmt.specials == "none" and not fmt.subnormals and fmt.min_normal >= _FP32_MIN_NORMAL:
        # the search's formats: on the CPU one fused loop, which also reports Inf/NaN (then the
        # general path below runs); on a GPU the PyTorch sweeps, handling Inf/NaN in place (a
        # check would be a host round-trip per layer)
        fast = _round_plain_cpu(t, bits, fmt) if t.device.type == "cpu" else _round_plain_torch(t, bits, fmt)
        if fast is not None:
            return fast
    mag = bits & 0x7FFFFFFF
    neg = bits < 0
    special = mag >= 0x7F800000                      # Inf or NaN input
    is_nan = mag > 0x7F800000
    m = torch.where(special, torch.full_like(mag, 0x7F800000), mag)  # keeps the adds below in range

    shift = 23 - fmt.man_bits
    if shift > 0:
        if fmt.rounding == "nearest_even":
            m = m + (((1 << (shift - 1)) - 1) + ((m >> shift) & 1))
        m = (m >> shift) << shift
    out = m

    # overflow: the rounded magnitude exceeds Max (Inf inputs land here too)
    max_bits = float32_bits(fmt.max_value)
    over = out > max_bits
    if fmt.overflow == "saturate":
        out = torch.clamp_max(out, max_bits)
    elif fmt.overflow == "inf":
        out = torch.where(over, torch.full_like(out, 0x7F800000), out)
    nan_out = over if fmt.overflow == "nan" else torch.zeros_like(over)

    # underflow: magnitudes below the smallest normal
    min_normal_bits = float32_bits(fmt.min_normal)
    low = mag < min_normal_bits
    if fmt.subnormals and fmt.man_bits > 0:
        if bool(low.any()):
            small = mag[low].view(torch.float32).double()
            scale = float(np.ldexp(1.0, fmt.man_bits - fmt.min_exponent))
            scaled = small * scale
            grid = torch.round(scaled) if fmt.rounding == "nearest_even" else torch.floor(scaled)
            out = out.clone()
            out[low] = (grid / scale).float().view(torch.int32)
    elif fmt.rounding == "nearest_even":
        half_min_bits = float32_bits(fmt.min_normal / 2)
        up = torch.full_like(out, min_normal_bits)
        out = torch.where(low, torch.where(mag >= half_min_bits, up, torch.zeros_like(out)), out)
    else:
        out = torch.where(low, torch.zeros_like(out), out)

    # Inf and NaN inputs
    if fmt.has_inf:
        out = torch.where(special & ~is_nan, torch.full_like(out, 0x7F800000), out)
    nan_out = nan_out | is_nan

    if fmt.signed:
        if fmt.specials == "fnuz":
            out = torch.where(neg & (out != 0), out | torch.iinfo(torch.int32).min, out)
            nan_value = torch.full_like(out, _CANON_NAN[1])  # fnuz's single NaN code decodes to -NaN
        else:
            out = torch.where(neg, out | torch.iinfo(torch.int32).min, out)
            pos, negv = (_CANON_NAN[0], _CANON_NAN[1]) if fmt.has_nan else (torch.iinfo(torch.int32).min, 0)
            # (no NaN code: zero with the opposite sign, ml_dtypes' rule)
            nan_value = torch.where(neg, torch.full_like(out, negv), torch.full_like(out, pos))
        out = torch.where(nan_out, nan_value, out)
    else:
        # every negative input that is not a NaN (-0, -Inf, negative overflow) clamps to 0
        nan_fill = _CANON_NAN[0] if fmt.has_nan else 0
        neg_number = neg & ~is_nan
        out = torch.where(neg_number, torch.zeros_like(out), out)
        out = torch.where(nan_out & ~neg_number, torch.full_like(out, nan_fill), out)
    if fmt.min_normal < _FP32_MIN_NORMAL:
        # Formats reaching below 2^-126 (bias >= 128) have steps the fp32 bit pattern does not
        # show for fp32-subnormal inputs; no CNN format goes there, so the golden model handles them.
        tiny = mag < 0x00800000
        if bool(tiny.any()):
            from .emulator import quantize as golden

            out = out.clone()
            ref = golden(t.contiguous().view(torch.float32)[tiny].numpy(), fmt)
            out[tiny] = torch.from_numpy(ref).view(torch.int32)
    return out.view(torch.float32)


def _dense(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when it is dense in its own memory format (row-major or channels-last),
    else a row-major copy: rounding is elementwise, so a channels-last activation stays
    channels-last (the layout :class:`PrefixEvaluator` runs ImageNet-size models in) instead of
    paying a transposing copy per layer."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t.contiguous()


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a tensor that is dense in its own memory format (see :func:`_dense`), in
    storage order.  Why: elementwise integer ops on a channels-last 4-D tensor take PyTorch's
    strided paths (and some, such as ``max``, copy it first); on the flat view every op is one
    linear sweep.  :func:`_unflat` puts the result back in ``t``'s shape and strides."""
    if t.is_contiguous():
        return t.reshape(-1)
    return t.permute(0, 2, 3, 1).reshape(-1)  # channels-last: N, H, W, C is the storage order


def _unflat(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return flat.view(like.shape) if like.is_contiguous() else torch.as_strided(flat, like.shape, like.stride())


def _round_plain_cpu(t: torch.Tensor, bits: torch.Tensor, fmt: Format) -> torch.Tensor | None:
    """The plain path on the CPU: :func:`sieve.cpu_rounding.round_plain`, one fused loop over
    the flat view, into a new tensor with ``t``'s shape and strides; None when ``t`` holds Inf or
    NaN (the caller then takes the general path, which gives them the contract's codes)."""
    flat_bits = _flat(bits).detach()
    out = torch.empty_like(flat_bits)
    if round_plain(flat_bits.numpy(), out.numpy(), plain_parameters(fmt)):
        return None
    return _unflat(out.view(torch.float32), t)


def _round_plain_torch(t: torch.Tensor, bits: torch.Tensor, fmt: Format) -> torch.Tensor:
    """The plain path on a GPU (formats without special codes or subnormals, so saturation):
    the same integer recipe as :func:`sieve.cpu_rounding.round_plain`, as PyTorch sweeps.

    Two whole-tensor int32 temporaries and about ten in-place sweeps over a flat view.  The
    underflow rule is a mask made by arithmetic: ``(mag - Min/2) >> 31`` is all ones exactly
    where ``mag < Min/2`` (both are non-negative int32, so the difference cannot wrap).  No value
    leaves the device: ±Inf saturates to ±Max (as the general path does) and a NaN becomes zero
    of the opposite sign (unsigned: +0), ml_dtypes' rule for formats without a NaN code.
    ``tests/test_device.py`` runs it on the CPU against the emulator, specials included.
    """
    p = plain_parameters(fmt)
    flat_bits = _flat(bits)
    # unsigned: negative floats are negative int32 patterns, so one clamp maps them (and -0) to +0
    mag = flat_bits.clamp(min=0) if not fmt.signed else flat_bits & 0x7FFFFFFF
    nan = mag > SPECIAL_BITS
    mag.clamp_(max=SPECIAL_BITS)  # NaN payloads would overflow the rounding add below
    if p.lsb:
        out = (mag >> p.shift).bitwise_and_(1).add_(mag).add_(p.half)
        out.bitwise_and_(p.keep)
    else:
        out = mag & p.keep
    out.clamp_(min=p.low, max=p.high)
    # mag becomes the keep-mask: all ones where mag >= zero_below, else 0
    out.bitwise_and_(mag.sub_(p.zero_below).bitwise_right_shift_(31).bitwise_not_())
    if fmt.signed:  # the sign bit flipped over a zero magnitude
        out.bitwise_or_(flat_bits & p.sign_mask)
        nan_bits = (flat_bits & p.sign_mask) ^ p.sign_mask
        out = torch.where(nan, nan_bits, out)
    else:  # +0
        out.masked_fill_(nan, 0)
    return _unflat(out.view(torch.float32), t)


def quantizable_tensors(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[TensorInfo]:
    """Every quantizable tensor of ``model`` in module order (a module's call sites in call order,
    then its weight).

    Activation sizes come from one forward pass on a zero image of ``input_shape`` (C, H, W);
    when not given it is inferred from the first layer (28x28 for one channel, 224x224 for an
    ImageNet stem, else 32x32: the zoo's models); pass it for anything else.
    """
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
    if not modules:
        raise SieveError(f"{type(model).__name__} has no Conv2d or Linear layer; nothing to quantize")
    sizes = _input_sizes(model, modules, input_shape)
    infos: list[TensorInfo] = []
    for name, m in modules:
        call = 1
        while (site := activation_name(name, call)) in sizes:
            infos.append(TensorInfo(site, "activation", math.prod(sizes[site]), name, sizes[site]))
            call += 1
        infos.append(TensorInfo(f"{name}.weight", "weight", int(m.weight.numel()), name, tuple(m.weight.shape)))
    return infos


def _guess_input_shape(modules) -> tuple[int, ...]:
    first = modules[0][1]
    if isinstance(first, nn.Conv2d):
        # the zoo's image sizes, the likeliest first (models with adaptive pooling run on any
        # size): an ImageNet stem (large kernel or stride) means 224, one channel 28, else 32
        imagenet = first.kernel_size[0] >= 7 or first.stride[0] >= 2
        sides = (224, 32, 28) if imagenet else (28, 32, 224) if first.in_channels == 1 else (32, 28, 224)
        for side in sides:
            yield (first.in_channels, side, side)
    else:
        yield (first.in_features,)


def _input_sizes(model, modules, input_shape) -> dict[str, tuple[int, ...]]:
    """The shape of one image's input at every call site, by activation name."""
    sizes: dict[str, tuple[int, ...]] = {}

    def record(site, mod, args):
        sizes.setdefault(site, tuple(args[0][0].shape))

    handles = hook_call_sites(model, record)
    shapes = [tuple(input_shape)] if input_shape is not None else list(_guess_input_shape(modules))
    try:
        for shape in shapes:
            sizes.clear()
            try:
                with torch.no_grad():
                    model(torch.zeros((1, *shape), device=next(model.parameters()).device))
                break
            except RuntimeError:
                if shape == shapes[-1]:
                    raise SieveError(
                        f"cannot run {type(model).__name__} on a zero image of shape {shape}; pass input_shape"
                    ) from None
    finally:
        for h in handles:
            h.remove()
    return sizes


def check_plan(model: nn.Module, plan: Mapping[str, Format], input_shape: tuple[int, ...] | None = None) -> None:
    """Raise SieveError when a plan names a tensor the model does not have or holds a non-Format.

    With ``input_shape`` (C, H, W), a later call site (``<module>.input#<k>``) is also checked
    against the calls one forward pass on a zero image makes (:func:`quantizable_tensors`).
    """
    modules = {name for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}
    for key, fmt in plan.items():
        parsed = parse_tensor_name(key)
        if parsed is None or parsed[0] not in modules:
            known = ", ".join(sorted(modules)[:6])
            raise SieveError(
                f"plan names tensor {key!r}, which is not '<conv/linear module>.weight|input[#call]' of this model"
                f" (modules: {known}{', ...' if len(modules) > 6 else ''})"
            )
        if not isinstance(fmt, Format):
            from .blockfmt import check_plan_entry

            check_plan_entry(key, parsed[1], fmt)
    later = [key for key in plan if parse_tensor_name(key)[2] > 1]
    if later and input_shape is not None:
        sites = {info.name for info in quantizable_tensors(model, input_shape)}
        _refuse_unreached([key for key in later if key not in sites])


def _refuse_unreached(missing) -> None:
    if missing:
        raise SieveError(f"plan names call sites that forward() never reaches: {', '.join(sorted(missing))}"
                         " (a module called k times has inputs <module>.input, <module>.input#2 .. #k)")


def apply_plan(model: nn.Module, plan: Mapping[str, Format], input_shape: tuple[int, ...] | None = None,
               device=None) -> nn.Module:
    """A deep copy of ``model`` with the plan applied (the original is left untouched).

    ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``; default: where ``model`` is): where the
    copy lives; its weights are rounded on the host first, then moved.

    Planned weights are replaced by quantized copies; forward pre-hooks round every planned
    input activation, each call site of a shared module with its own format.  Tensors absent
    from the plan stay fp32.  A later call site (``<module>.input#<k>``) that forward() does not
    reach is refused: at once with ``input_shape`` (C, H, W), else by the first forward pass.
    """
    check_plan(model, plan, input_shape)
    q = copy.deepcopy(model)
    q.eval()
    for name, m in q.named_modules():
        wfmt = plan.get(f"{name}.weight") if isinstance(m, QUANTIZABLE) else None
        if wfmt is not None:
            with torch.no_grad():
                m.weight.copy_(quantize_tensor(m.weight.detach().cpu(), wfmt).to(m.weight.device))
    if device is not None:
        from .device import resolve_device

        q.to(resolve_device(device))
    if any(parse_tensor_name(key)[1] == "input" for key in plan):
        formats = dict(plan)  # the hooks keep their own copy
        unreached = {key for key in plan if parse_tensor_name(key)[2] > 1}

        def round_input(site, mod, args):
            fmt = formats.get(site)
            unreached.discard(site)
            return None if fmt is None else (quantize_tensor(args[0], fmt), *args[1:])

        hook_call_sites(q, round_input)
        if unreached:  # checked once, after the first forward pass
            def check_reached(mod, args, output):
                handle.remove()
                _refuse_unreached(unreached)

            handle = q.register_forward_hook(check_reached)
    return q


# ---------------------------------------------------------------------------- caching evaluator
CHANNELS_LAST_MIN_PIXELS = 64 * 64  # inputs at least this large run channels-last (PrefixEvaluator)


def wants_channels_last(images: torch.Tensor) -> bool:
    """Whether a split of ``images`` (N x C x H x W) is large enough to run channels-last:
    ImageNet-size inputs, where it pays (see :class:`PrefixEvaluator`)."""
    return images.dim() == 4 and images.shape[2] * images.shape[3] >= CHANNELS_LAST_MIN_PIXELS


class PrefixEvaluator:
    """Evaluate many plans on one fixed set of images, recomputing only what a plan changes.

    Why: a search evaluates hundreds of plans that differ from each other in one tensor.  The
    model is traced once with ``torch.fx`` into a graph of nodes; a *state* stores, per batch,
    the values live just before the node where some tensor is first used (a *cut*: a call of a
    conv/linear module) together with the plan prefix that produced them.  A plan that agrees
    with a stored state on every tensor first used before its cut restarts there, so changing
    one layer only runs the layers after it.  The k-th node calling a module is its k-th call
    site (``<module>.input#k``), as in :func:`apply_plan`.  The fp32 predictions are computed
    once and kept.  Models fx cannot trace fall back to full recomputation (still correct, just
    slower).

    ``device``: where the forward passes run (a ``torch.device`` or ``cpu|cuda|cuda:N|auto``).
    The images stay on the host and go over batch by batch; the cut states stay on the device;
    weights are rounded once on the host and moved; the logits come back to the host.

    ``channels_last`` (default: :func:`wants_channels_last` of the images, i.e. ImageNet-size
    inputs): run a copy of the model and the images in channels-last memory order.  On this CPU
    that makes SqueezeNet 1.0's forward pass 1.7x faster (ceil-mode max pooling alone 5x); the
    logits differ from the row-major run only by fp32 summation order (~1e-5), the roundings
    are the same elementwise integer operations.  Small inputs (MNIST, CIFAR) keep row-major
    order, so their searches and figures stay exactly as they were.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, batch_size: int = 500, max_states: int = 4,
                 device=None, store=None, channels_last: bool | None = None, indices: torch.Tensor | None = None):
        from .device import resolve_device

        self.store = store  # a sieve.prefix_store.PrefixStore bounds the states' RAM (None: unbounded)

        self.device = resolve_device(device if device is not None else "cpu")
        self.model = model.eval()
        self.channels_last = wants_channels_last(images) if channels_last is None else bool(channels_last)
        if self.channels_last:  # a copy: the caller's model keeps its layout
            self.model = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
        if self.device.type != "cpu":
            if any(p.device != self.device for p in self.model.parameters()):
                self.model = copy.deepcopy(self.model).to(self.device)
            # (batches are pinned one at a time by sieve.device.to_device: page-locking the
            # whole split would pin 30 GB at 50,000 ImageNet images)
        # ``images`` is kept, not copied: with ``indices`` the evaluator sees ``images[indices]``,
        # gathered batch by batch (a search's evaluators of its image subsets share one split
        # in RAM instead of holding a copy each: 1.1 GB less at SqueezeNet's 500 images)
        self.images = images
        self.indices = None if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.n = int(images.shape[0] if self.indices is None else self.indices.numel())
        self.batch_size = int(batch_size)
        self.max_states = int(max_states)
        self.infos = quantizable_tensors(model, tuple(images.shape[1:]))
        self._names = {info.name: info for info in self.infos}
        model = self.model
        self.modules = dict(model.named_modules())
        self.states: dict[tuple, list[dict]] = {}
        self._wcache: dict[tuple[str, str], torch.Tensor] = {}
        self.batches_run = 0
        self.nodes_run = 0
        try:
            from torch import fx

            self.gm = fx.symbolic_trace(model)
            self.nodes = list(self.gm.graph.nodes)
        except Exception:  # data-dependent control flow etc.: no prefix cache, full runs
            self.gm, self.nodes = None, []
        self._index_graph()
        self._fp32_logits: torch.Tensor | None = None

    def _batch(self, start: int) -> torch.Tensor:
        """The images of the batch starting at ``start`` (a gather from the shared split, in
        channels-last order when this evaluator runs so)."""
        stop = start + self.batch_size
        x = self.images[start:stop] if self.indices is None else self.images[self.indices[start:stop]]
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- graph bookkeeping
    def _index_graph(self) -> None:
        self.cut: dict[str, int] = {}        # module -> node of its first call
        self.first_use: dict[str, int] = {}  # tensor name -> node where it first enters
        self.site_at: dict[int, str] = {}    # node -> the call site (activation name) it is
        if self.gm is None:
            return
        pos = {node: i for i, node in enumerate(self.nodes)}
        last_use = {i: i for i in range(len(self.nodes))}
        calls: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for inp in node.all_input_nodes:
                last_use[pos[inp]] = max(last_use[pos[inp]], i)
            if node.op == "call_module" and isinstance(self.modules.get(node.target), QUANTIZABLE):
                calls[node.target] = calls.get(node.target, 0) + 1
                self.site_at[i] = site = activation_name(node.target, calls[node.target])
                self.cut.setdefault(node.target, i)
                self.first_use[site] = i
                self.first_use.setdefault(f"{node.target}.weight", i)
        self._pos = pos
        self._last_use = last_use
        # the graph must make exactly the calls a forward pass makes (a module fx did not call as
        # a leaf, or calls behind control flow, would misplace cuts): otherwise no prefix cache
        if set(self.first_use) != {info.name for info in self.infos}:
            self.gm, self.nodes, self.cut, self.first_use, self.site_at = None, [], {}, {}, {}

    def _prefix_key(self, plan: Mapping[str, Format], cut: int) -> tuple:
        return tuple(sorted((k, str(v)) for k, v in plan.items() if self.first_use[k] < cut))

    def _weight(self, module_name: str, fmt: Format | None) -> torch.Tensor:
        w = self.modules[module_name].weight.detach()
        if fmt is None:
            return w
        key = (module_name, str(fmt))
        if key not in self._wcache:
            if len(self._wcache) > 512:
                self._wcache.clear()
            self._wcache[key] = quantize_tensor(w.cpu(), fmt).to(w.device)  # rounded once, on the host
        return self._wcache[key]

    def _call_quantizable(self, name: str, site: str, x: torch.Tensor, plan, observer) -> torch.Tensor:
        m = self.modules[name]
        if observer is not None:
            observer(site, x)
        afmt = plan.get(site)
        if afmt is not None:
            x = quantize_tensor(x, afmt)
        w = self._weight(name, plan.get(f"{name}.weight"))
        if isinstance(m, nn.Conv2d):
            return m._conv_forward(x, w, m.bias)
        return nn.functional.linear(x, w, m.bias)

    # -- running
    def _run_graph(self, x: torch.Tensor | None, env: dict, start: int, plan, observer, save_at: int | None):
        from torch.fx.node import map_arg

        saved = None
        env = dict(env)
        for i in range(start, len(self.nodes)):
            node = self.nodes[i]
            if save_at is not None and i == save_at:
                saved = {j: v for j, v in env.items() if j < i and self._last_use[j] >= i}
            load = lambda n: env[self._pos[n]]  # noqa: E731
            args = map_arg(node.args, load)
            kwargs = map_arg(node.kwargs, load)
            if node.op == "placeholder":
                val = x
            elif node.op == "get_attr":
                val = self.gm
                for part in node.target.split("."):
                    val = getattr(val, part)
            elif node.op == "call_module":
                if i in self.site_at:
                    val = self._call_quantizable(node.target, self.site_at[i], args[0], plan, observer)
                else:
                    val = self.gm.get_submodule(node.target)(*args, **kwargs)
            elif node.op == "call_function":
                val = node.target(*args, **kwargs)
            elif node.op == "call_method":
                val = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:  # output
                return args[0] if isinstance(args, tuple) else args, saved
            env[i] = val
            self.nodes_run += 1
            for inp in node.all_input_nodes:  # free what no later node reads
                j = self._pos[inp]
                if self._last_use[j] <= i:
                    env.pop(j, None)
        raise SieveError("traced graph has no output node")

    def _start(self, plan) -> tuple[int, list[dict] | None]:
        """The deepest stored state valid for ``plan``: (cut index, per-batch envs)."""
        best, envs, hit = 0, None, None
        for (cut, key), value in self.states.items():
            if cut > best and key == self._prefix_key(plan, cut):
                best, envs, hit = cut, value, (cut, key)
        if hit is not None:  # least recently used goes first when the store is full
            self.states[hit] = self.states.pop(hit)
        return best, envs

    def run(self, plan: Mapping[str, Format], *, checkpoint: str | None = None, observer=None,
            on_batch=None) -> torch.Tensor:
        """Logits of the quantized model on the images (rows of batches actually run).

        ``checkpoint``: a tensor name (or a module name: its first call) whose cut state is
        stored for later plans that share the prefix.  ``observer(tensor_name, fp32_input)`` sees
        every conv/linear call site's input (before rounding).  ``on_batch(batch_index, logits)
        -> bool``: return False to stop early.
        """
        from .device import to_device

        plan = dict(plan)
        unknown = [k for k in plan if k not in self._names]
        if unknown:
            raise SieveError(f"plan names {', '.join(unknown)}, not tensors of this model"
                             f" (they are named like {', '.join(list(self._names)[:4])}, ...)")
        outs: list[torch.Tensor] = []
        if self.gm is None:
            q = apply_plan(self.model, plan)
            handles = []
            if observer is not None:  # on the copy that runs, before its roundings
                def observe(site, mod, args):
                    observer(site, args[0])

                handles = hook_call_sites(q, observe, prepend=True)
            try:
                with torch.no_grad():
                    for b, start in enumerate(range(0, self.n, self.batch_size)):
                        outs.append(q(to_device(self._batch(start), self.device)).cpu())
                        self.batches_run += 1
                        if on_batch is not None and not on_batch(b, outs[-1]):
                            break
            finally:
                for h in handles:
                    h.remove()
            return torch.cat(outs)
        start, envs = self._start(plan) if observer is None else (0, None)
        save_at = None
        if checkpoint is not None:
            save_at = self.first_use[checkpoint] if checkpoint in self.first_use else self.cut[checkpoint]
        if save_at is not None and save_at <= start:
            save_at = None  # already have it (or a deeper one)
        bounded = self.store is not None and save_at is not None and self.max_states > 0
        new_states = self.store.begin() if bounded else []
        with torch.no_grad():
            for b, bstart in enumerate(range(0, self.n, self.batch_size)):
                x = to_device(self._batch(bstart), self.device) if envs is None else None
                env = envs[b] if envs is not None else {}
                logits, saved = self._run_graph(x, env, start, plan, observer, save_at)
                logits = logits.cpu()
                outs.append(logits)
                self.batches_run += 1
                if saved is not None:
                    new_states.append(saved)
                if on_batch is not None and not on_batch(b, logits):
                    self._drop(new_states)
                    new_states = []  # incomplete: do not store
                    break
        if (save_at is not None and self.max_states > 0 and len(new_states) == len(outs)
                and len(outs) * self.batch_size >= self.n):
            key = (save_at, self._prefix_key(plan, save_at))
            self._drop(self.states.pop(key, None))
            if len(self.states) >= self.max_states:
                self._drop(self.states.pop(next(iter(self.states))))
            self.states[key] = new_states
        else:
            self._drop(new_states)
        return torch.cat(outs)

    def _drop(self, state) -> None:
        """A state leaves the cache: its bytes (and spill file) go back to the store."""
        if self.store is not None and state is not None:
            self.store.release(state)

    def fp32_logits(self, observer=None) -> torch.Tensor:
        """The fp32 model's logits (computed once; ``observer`` sees the fp32 inputs of that pass)."""
        if self._fp32_logits is None or observer is not None:
            self._fp32_logits = self.run({}, observer=observer)
        return self._fp32_logits
