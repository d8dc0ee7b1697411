"""Block-scaled (OCP Microscaling, MX) and per-output-channel-bias formats (issue 16).

Both add a *layout* to a scalar :class:`~sieve.cfloat.Format`: the elements keep their codes,
and a little side information shared by many elements moves their range.

:class:`BlockFormat` — a shared power-of-two scale per block of ``k`` consecutive elements along
axis 1 (the reduction axis of the layer that consumes the tensor: input channels ``I`` of an
OIHW conv weight or ``(out, in)`` linear weight, channels ``C`` of an NCHW activation or
features of an ``(N, F)`` one).  For a conv weight the block runs along ``I`` at each
``(o, kh, kw)``, not along the flattened ``I·H·W``: the MX dot product (OCP MX v1.0 §6.2) pairs
a weight block with an activation block over the *same* channels, and an activation block is
along ``C`` at one pixel, so only blocks along ``I`` line up.  A last, partial block (``C`` not a
multiple of ``k``) is a shorter block.  The scale is E8M0 (OCP MX v1.0 §5.4.1): code ``c`` is
``2^(c-127)``, code 255 is NaN, there is no zero.  Encoding follows the spec's §6.3 algorithm::

    shared_exp = floor(log2(max_i |V_i|)) - emax_elem      # emax_elem: the element's Max exponent
    X = 2^shared_exp                                        # clamped below at 2^-127 (E8M0 code 0)
    P_i = quantize_to_element_format(V_i / X)               # RNE, "clamping normal numbers"

Choices where the spec leaves room, all as the Microsoft ``microxcaling`` reference does:

* *Overflow saturates.*  With ``X`` from the block's largest binade, ``|V_i| / X`` stays below
  ``2^(emax+1)`` but can exceed the element's Max (E4M3: 1.9·2^8 > 448) or round up past it;
  §6.3 clamps such values to ±Max ("clamping normal numbers").  Turning the block's largest
  element into NaN (E4M3's own overflow rule) or Inf (E5M2's) would destroy exactly the value
  the scale was chosen for, so the MX element formats here are the ml_dtypes element types with
  ``overflow='saturate'`` (their codes, values and NaN/Inf codes unchanged).
* *Zero block* (and every block whose max is below 2^-126, a float32 subnormal): scale code 0
  (``2^-127``), the smallest; the elements are the (signed) zeros or tiny values rounded.
* *NaN or ±Inf anywhere in a block*: scale code 255 (NaN) — the whole block decodes to NaN
  (§5.3: a NaN scale makes every element NaN); the element codes of such a block are 0.
* Scaling by ``X`` and back is one float32 multiplication by an exact power of two (correctly
  rounded, so NumPy and torch agree bit for bit); decoded values are ``float32(P_i · X)``.

:class:`ChannelFormat` — weights only: one exponent bias per output channel (axis 0), so a channel
of small weights is not forced onto the range of the tensor's largest channel.  The biases are
stored as ``bias_bits``-bit offsets from one 8-bit base per tensor; :func:`stored_bits` counts
them.  The bias of a channel puts its largest binade at the top of the range, or one binade
lower/higher when that rounds the channel with less squared error (decided on the weights
themselves, so the plan text ``ch4:e4m3`` is reproducible from the model).

Text forms (a plan entry): ``mx<k>:<element>`` and ``ch<b>:<element>``; the OCP element names
``fp8_e4m3 fp8_e5m2 fp6_e3m2 fp6_e2m3 fp4_e2m1`` and the OCP format names ``mxfp8_e4m3 ..
mxfp4_e2m1`` (k = 32) are accepted.  :func:`parse_format` reads every form, scalar included.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

import numpy as np

from .cfloat import Format, FormatError
from .emulator import as_float32, decode as _decode_elem, encode as _encode_elem

__all__ = ["BlockFormat", "ChannelFormat", "MX_ELEMENTS", "OCP_MX", "AnyFormat", "parse_format",
           "encode", "decode", "quantize", "quantize_torch", "stored_bits", "is_layout_format",
           "E8M0_NAN", "scale_values"]

E8M0_BIAS = 127
E8M0_NAN = 255
SCALE_MIN_EXP = -127   # E8M0 code 0
SCALE_MAX_EXP = 127    # E8M0 code 254
BASE_BIAS_BITS = 8     # the per-tensor base of a ChannelFormat's bias offsets
_MIN_ELEMENT_MIN = 2.0 ** -124  # element Min at or above this: V/X below 2^-126 always rounds to 0


def _mx_element(exp_bits: int, man_bits: int, bias: int, specials: str) -> Format:
    return Format(exp_bits, man_bits, bias, signed=True, subnormals=True, specials=specials, overflow="saturate")


#: OCP MX v1.0 element types (§5.3): ml_dtypes' bit layouts, saturating on overflow (see module doc).
MX_ELEMENTS: dict[str, Format] = {
    "fp8_e4m3": _mx_element(4, 3, 7, "fn"),
    "fp8_e5m2": _mx_element(5, 2, 15, "ieee"),
    "fp6_e3m2": _mx_element(3, 2, 3, "none"),
    "fp6_e2m3": _mx_element(2, 3, 1, "none"),
    "fp4_e2m1": _mx_element(2, 1, 1, "none"),
}
_ELEMENT_NAMES = {fmt: name for name, fmt in MX_ELEMENTS.items()}


def _element_text(fmt: Format) -> str:
    return _ELEMENT_NAMES.get(fmt, str(fmt))


def _parse_element(text: str) -> Format:
    return MX_ELEMENTS.get(text.strip().lower()) or Format.parse(text)


@dataclass(frozen=True)
class BlockFormat:
    """Elements of ``element`` sharing one E8M0 power-of-two scale per ``block`` along axis 1."""

    element: Format
    block: int = 32
    scale: str = "e8m0"

    def __post_init__(self) -> None:
        if not isinstance(self.element, Format):
            raise FormatError(f"a block format's element must be a sieve.Format, got {self.element!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, (int, np.integer)) or not 1 <= self.block <= 1024:
            raise FormatError(f"block size must be an integer 1..1024 (OCP MX uses 32), got {self.block!r}")
        object.__setattr__(self, "block", int(self.block))
        if self.scale != "e8m0":
            raise FormatError(f"block scale must be 'e8m0' (the OCP MX scale), got {self.scale!r}")
        el = self.element
        if not el.signed:
            raise FormatError(f"block format elements must be signed (OCP MX elements are); got {el}")
        if el.rounding != "nearest_even":
            raise FormatError(f"block format elements round to nearest even (OCP MX §6.3); got {el}")
        if el.max_exponent < 0:
            raise FormatError(f"element {el} has Max below 1 (exponent {el.max_exponent}); use a bias"
                              f" <= {el.max_exponent + el.bias} so the block scale (E8M0) can reach every float32")
        if el.min_value < _MIN_ELEMENT_MIN:
            raise FormatError(f"element {el} reaches below 2^-124; use a smaller bias (the block scale moves the range)")

    @property
    def width(self) -> int:
        """Bits per element code (the scales come on top: see :func:`stored_bits`)."""
        return self.element.width

    @property
    def scale_bits(self) -> int:
        return 8

    @property
    def emax(self) -> int:
        """The element's largest exponent, ``emax_elem`` of OCP MX §6.3."""
        return self.element.max_exponent

    def __str__(self) -> str:
        return f"mx{self.block}:{_element_text(self.element)}"


@dataclass(frozen=True)
class ChannelFormat:
    """Weights: ``element`` codes with one exponent bias per output channel (axis 0), stored as a
    ``bias_bits``-bit offset from a per-tensor base.  ``element.bias`` is normalised to the default
    (it is replaced per channel)."""

    element: Format
    bias_bits: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.element, Format):
            raise FormatError(f"a channel format's element must be a sieve.Format, got {self.element!r}")
        if isinstance(self.bias_bits, bool) or not isinstance(self.bias_bits, (int, np.integer)) \
                or not 1 <= self.bias_bits <= 8:
            raise FormatError(f"per-channel bias field must be 1..8 bits, got {self.bias_bits!r}")
        object.__setattr__(self, "bias_bits", int(self.bias_bits))
        default = (1 << (self.element.exp_bits - 1)) - 1
        if self.element.bias != default:
            object.__setattr__(self, "element", self.element.with_(bias=default))

    @property
    def width(self) -> int:
        return self.element.width

    def __str__(self) -> str:
        return f"ch{self.bias_bits}:{_element_text(self.element)}"


AnyFormat = Union[Format, BlockFormat, ChannelFormat]

#: The OCP MX v1.0 concrete formats (§5.3, k = 32, E8M0 scale).
OCP_MX: dict[str, BlockFormat] = {
    "mxfp8_e4m3": BlockFormat(MX_ELEMENTS["fp8_e4m3"], 32),
    "mxfp8_e5m2": BlockFormat(MX_ELEMENTS["fp8_e5m2"], 32),
    "mxfp6_e3m2": BlockFormat(MX_ELEMENTS["fp6_e3m2"], 32),
    "mxfp6_e2m3": BlockFormat(MX_ELEMENTS["fp6_e2m3"], 32),
    "mxfp4_e2m1": BlockFormat(MX_ELEMENTS["fp4_e2m1"], 32),
}

_LAYOUT_TEXT = re.compile(r"^(?P<kind>mx|ch)(?P<n>\d*):(?P<element>.+)$")


def is_layout_format(fmt) -> bool:
    return isinstance(fmt, (BlockFormat, ChannelFormat))


def parse_format(text: str) -> AnyFormat:
    """Read any plan format: scalar (``se4m3b7``, a preset), ``mx<k>:<element>`` (k default 32),
    ``ch<b>:<element>`` (b default 4) or an OCP name (``mxfp8_e4m3`` ...).  ``str()`` round-trips."""
    if not isinstance(text, str):
        raise FormatError(f"a format is given as text such as 'e4m3', 'mx32:fp8_e4m3' or 'ch4:e4m3', got {text!r}")
    s = text.strip().lower()
    if s in OCP_MX:
        return OCP_MX[s]
    m = _LAYOUT_TEXT.match(s)
    if m is None:
        return Format.parse(text)
    element = _parse_element(m["element"])
    if m["kind"] == "mx":
        return BlockFormat(element, int(m["n"]) if m["n"] else 32)
    return ChannelFormat(element, int(m["n"]) if m["n"] else 4)


# ---------------------------------------------------------------------------- block layout
def _rows(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(A, C, R)``: the tensor seen as ``A x C x R`` with the blocked axis (1) in the middle."""
    if len(shape) == 0:
        raise ValueError("a block format needs at least a 1-D array")
    if len(shape) == 1:
        return 1, shape[0], 1
    return shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))


def _scale_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    if len(shape) == 1:
        return (math.ceil(shape[0] / block),)
    return (shape[0], math.ceil(shape[1] / block), *shape[2:])


def pow2_f32(exp: np.ndarray) -> np.ndarray:
    """Exact float32 ``2^exp`` for integer exponents in [-127, 127] (2^-127 is a subnormal)."""
    exp = np.asarray(exp, dtype=np.int64)
    bits = np.where(exp >= -126, (exp + 127) << 23, 1 << 22).astype(np.uint32)
    return bits.view(np.float32)


def _blocked(x: np.ndarray, block: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``x`` as ``(A, R, nb, k)`` blocks (zero padded); and ``(A, C, R, nb)``."""
    a, c, r = _rows(x.shape)
    nb = math.ceil(c / block)
    xm = np.moveaxis(x.reshape(a, c, r), 1, -1)
    padded = np.zeros((a, r, nb * block), dtype=x.dtype)
    padded[..., :c] = xm
    return padded.reshape(a, r, nb, block), (a, c, r, nb)


def _unblocked(blocks: np.ndarray, dims: tuple[int, int, int, int], shape) -> np.ndarray:
    a, c, r, nb = dims
    flat = blocks.reshape(a, r, -1)[..., :c]
    return np.ascontiguousarray(np.moveaxis(flat, -1, 1)).reshape(shape)


def _shared_exponents(amax_bits: np.ndarray, emax: int) -> tuple[np.ndarray, np.ndarray]:
    """Shared exponents (int64, clamped to [-127, 127]) and the NaN-scale mask, from the float32
    bit patterns of each block's max |v|.  Every max below 2^-126 (zero, subnormal) counts as
    binade -127: with ``emax >= 0`` it lands on the clamp anyway, exactly as ``floor(log2)`` would."""
    field = (amax_bits >> 23) & 0xFF
    nan = field == 0xFF
    binade = np.where(field == 0, -127, field - 127)
    shared = np.clip(binade - emax, SCALE_MIN_EXP, SCALE_MAX_EXP)
    return np.where(nan, 0, shared), nan


def _check_block_input(x, fmt) -> np.ndarray:
    if not isinstance(fmt, BlockFormat):
        raise TypeError(f"expected a BlockFormat, got {type(fmt).__name__}")
    arr = as_float32(x)
    if arr.ndim == 0:
        raise ValueError("a block format needs at least a 1-D array")
    return arr


def encode_blocks(x, fmt: BlockFormat) -> tuple[np.ndarray, np.ndarray]:
    """``(element codes, E8M0 scale codes)``: codes have ``x``'s shape; scales have ``x``'s shape
    with axis 1 replaced by the block count (a 1-D ``x``: one scale per block)."""
    arr = _check_block_input(x, fmt)
    blocks, dims = _blocked(np.ascontiguousarray(arr), fmt.block)
    amax = np.abs(blocks).max(axis=-1)
    shared, nan = _shared_exponents(amax.view(np.uint32).astype(np.int64), fmt.emax)
    scaled = blocks * pow2_f32(-shared)[..., None]  # exact power of two: one correct rounding
    codes = _encode_elem(scaled, fmt.element)
    codes[nan] = 0
    scale_codes = np.where(nan, E8M0_NAN, shared + E8M0_BIAS).astype(np.uint8)
    a, c, r, nb = dims
    scales = np.moveaxis(scale_codes, -1, 1).reshape(_scale_shape(arr.shape, fmt.block))
    return _unblocked(codes, dims, arr.shape), np.ascontiguousarray(scales)


def scale_values(scale_codes) -> np.ndarray:
    """E8M0 codes to float32: ``2^(c-127)``, code 255 NaN (OCP MX §5.4.1)."""
    codes = np.asarray(scale_codes).astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() > 255):
        raise ValueError("E8M0 scale codes are 0..255")
    values = pow2_f32(np.minimum(codes, 254) - E8M0_BIAS)
    return np.where(codes == E8M0_NAN, np.float32(np.nan), values).astype(np.float32)


def decode_blocks(codes, scale_codes, fmt: BlockFormat) -> np.ndarray:
    """Values ``float32(P_i * X)`` of a block-encoded array (a NaN scale makes its block NaN)."""
    if not isinstance(fmt, BlockFormat):
        raise TypeError(f"expected a BlockFormat, got {type(fmt).__name__}")
    codes = np.asarray(codes)
    shape = codes.shape
    expected = _scale_shape(shape, fmt.block)
    scale_codes = np.asarray(scale_codes)
    if scale_codes.shape != expected:
        raise ValueError(f"scale codes of shape {scale_codes.shape} do not fit codes of shape {shape}"
                         f" with block {fmt.block}; expected {expected}")
    elements = _decode_elem(codes, fmt.element)
    blocks, dims = _blocked(elements, fmt.block)
    a, c, r, nb = dims
    scales = np.moveaxis(scale_values(scale_codes).reshape(a, nb, r), 1, -1)
    nan = np.isnan(scales)
    values = blocks * np.where(nan, np.float32(1), scales)[..., None]
    values[nan] = np.float32(np.nan)  # canonical +qNaN, as torch's masked_fill writes it
    return _unblocked(values, dims, shape)


# ---------------------------------------------------------------------------- channel layout
def _channel_biases(w: np.ndarray, fmt: ChannelFormat) -> np.ndarray:
    """One bias per output channel (see the module doc): max binade at the top, or one binade
    either side when that rounds the channel with less squared error; then offsets within
    ``2^bias_bits`` of the smallest bias (larger biases clamp: a tiny channel loses low range)."""
    el = fmt.element
    o = w.shape[0]
    rows = w.reshape(o, -1).astype(np.float32)
    finite = np.where(np.isfinite(rows), np.abs(rows), 0).max(axis=1) if rows.size else np.zeros(o, np.float32)
    top_field = el.max_exponent + el.bias
    binade = np.frexp(finite.astype(np.float64))[1] - 1
    binade = np.where(finite > 0, binade, 0)
    low, high = _legal_biases(el)
    ideal = np.clip(top_field - binade, low, high)
    candidates = sorted({int(b) for i in ideal for b in (i - 1, i, i + 1) if low <= b <= high})
    errors = np.full((len(candidates), o), np.inf)
    for j, b in enumerate(candidates):
        q = _decode_elem(_encode_elem(rows, el.with_(bias=b)), el.with_(bias=b))
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.where(np.isfinite(rows), (q.astype(np.float64) - rows) ** 2, 0.0).sum(axis=1)
        near = np.abs(np.array(b) - ideal) <= 1
        errors[j] = np.where(near, err, np.inf)
    best = np.array(candidates)[np.argmin(errors, axis=0)] if candidates else ideal
    base = int(best.min()) if o else 0
    return np.clip(best, base, min(base + (1 << fmt.bias_bits) - 1, high)).astype(np.int64)


def _legal_biases(el: Format) -> tuple[int, int]:
    """Biases keeping ``el`` legal and Min >= 2^-126 (every engine works on normal fp32 patterns)."""
    top_field = el.max_exponent + el.bias
    return top_field - 127, 127


def encode_channels(w, fmt: ChannelFormat) -> tuple[np.ndarray, np.ndarray]:
    """``(element codes, per-channel biases)`` of a weight (axis 0 = output channels)."""
    if not isinstance(fmt, ChannelFormat):
        raise TypeError(f"expected a ChannelFormat, got {type(fmt).__name__}")
    arr = as_float32(w)
    if arr.ndim < 2:
        raise ValueError("a per-channel format is for weights of at least 2 dimensions (axis 0: output channels)")
    biases = _channel_biases(arr, fmt)
    codes = np.empty(arr.shape, dtype=fmt.element.code_dtype)
    for o, b in enumerate(biases):
        codes[o] = _encode_elem(arr[o], fmt.element.with_(bias=int(b)))
    return codes, biases


def decode_channels(codes, biases, fmt: ChannelFormat) -> np.ndarray:
    if not isinstance(fmt, ChannelFormat):
        raise TypeError(f"expected a ChannelFormat, got {type(fmt).__name__}")
    codes = np.asarray(codes)
    biases = np.asarray(biases)
    if biases.shape != (codes.shape[0],):
        raise ValueError(f"{biases.shape} biases for {codes.shape[0]} output channels; give one per channel")
    out = np.empty(codes.shape, dtype=np.float32)
    for o, b in enumerate(biases):
        out[o] = _decode_elem(codes[o], fmt.element.with_(bias=int(b)))
    return out


# ---------------------------------------------------------------------------- one entry point
def encode(x, fmt: AnyFormat):
    """Scalar: codes.  Block: ``(codes, scale codes)``.  Channel: ``(codes, biases)``."""
    if isinstance(fmt, BlockFormat):
        return encode_blocks(x, fmt)
    if isinstance(fmt, ChannelFormat):
        return encode_channels(x, fmt)
    return _encode_elem(x, fmt)


def decode(encoded, fmt: AnyFormat) -> np.ndarray:
    """Inverse of :func:`encode` (takes its return value as is)."""
    if isinstance(fmt, BlockFormat):
        return decode_blocks(*encoded, fmt)
    if isinstance(fmt, ChannelFormat):
        return decode_channels(*encoded, fmt)
    return _decode_elem(encoded, fmt)


def quantize(x, fmt: AnyFormat) -> np.ndarray:
    """Round ``x`` to ``fmt`` with its layout: ``decode(encode(x, fmt), fmt)``."""
    return decode(encode(x, fmt), fmt)


def stored_bits(fmt: AnyFormat | None, shape: tuple[int, ...]) -> int:
    """Every stored bit of a tensor of ``shape`` (a weight, or one image's activation without the
    batch axis — pass it *with* a leading 1): element codes, E8M0 scales, per-channel biases
    plus their 8-bit base.  ``None`` is fp32."""
    n = int(np.prod(shape, dtype=np.int64))
    if fmt is None:
        return 32 * n
    bits = n * fmt.width
    if isinstance(fmt, BlockFormat):
        bits += fmt.scale_bits * int(np.prod(_scale_shape(tuple(shape), fmt.block), dtype=np.int64))
    elif isinstance(fmt, ChannelFormat):
        bits += fmt.bias_bits * int(shape[0]) + BASE_BIAS_BITS
    return bits


# ---------------------------------------------------------------------------- torch
def quantize_torch(t, fmt: AnyFormat, round_element):
    """``quantize`` for a torch tensor, bit-identical to the NumPy emulator.

    Block formats run in torch integer/float32 arithmetic on the tensor's device, the element
    rounding being ``round_element(tensor, Format)`` (:func:`sieve.qeval.quantize_tensor`, which
    calls this function for layouts: passing it in keeps this module free of torch evaluation);
    channel formats (weights, quantized once) go through the emulator on the host and come back
    to the tensor's device.
    """
    import torch

    quantize_tensor = round_element
    if isinstance(fmt, Format):
        return quantize_tensor(t, fmt)
    if isinstance(fmt, ChannelFormat):
        q = quantize(t.detach().float().cpu().numpy(), fmt)
        return torch.from_numpy(q).to(t.device)
    if not isinstance(fmt, BlockFormat):
        raise TypeError(f"fmt must be a sieve.Format, BlockFormat or ChannelFormat, got {type(fmt).__name__}")
    x = t.detach().float() if t.dtype != torch.float32 else t.detach()
    shape = tuple(x.shape)
    a, c, r = _rows(shape)
    k = fmt.block
    xm = x.reshape(a, c, r)  # blocks along the middle axis: no transpose, no padding copies
    mag = xm.abs()
    full = (c // k) * k
    parts = [mag[:, :full].reshape(a, c // k, k, r).amax(dim=2)] if full else []
    if full < c:
        parts.append(mag[:, full:].amax(dim=1, keepdim=True))
    amax = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (a, nb, r)
    field = (amax.view(torch.int32) >> 23) & 0xFF
    nan = field == 0xFF
    binade = torch.where(field == 0, torch.full_like(field, -127), field - 127)
    shared = (binade - fmt.emax).clamp(SCALE_MIN_EXP, SCALE_MAX_EXP).masked_fill(nan, 0)

    def per_element(blockwise):  # (a, nb, r) -> (a, c, r)
        return blockwise.repeat_interleave(k, dim=1)[:, :c]

    def pow2(e):
        return torch.where(e >= -126, (e + 127) << 23, torch.full_like(e, 1 << 22)).view(torch.float32)

    scaled = xm * per_element(pow2(-shared))
    q = quantize_tensor(scaled, fmt.element) * per_element(pow2(shared))
    q = q.masked_fill(per_element(nan), float("nan"))  # no nan.any(): that would sync a GPU per call
    return q.reshape(shape)


def check_plan_entry(key: str, kind: str, fmt) -> None:
    """Refuse a plan entry whose format cannot apply to its tensor (``kind``: weight | input)."""
    from .errors import SieveError

    if not isinstance(fmt, (Format, BlockFormat, ChannelFormat)):
        raise SieveError(f"plan entry {key!r} is {fmt!r}, not a sieve.Format (or a block/channel format)")
    if isinstance(fmt, ChannelFormat) and kind != "weight":
        raise SieveError(f"plan entry {key!r} is the per-output-channel format {fmt}, which is for weights;"
                         f" give the activation a scalar or block format (e.g. mx32:{_element_text(fmt.element)})")


def layout_bits(fmt: AnyFormat, info) -> int:
    """Stored bits of one planned tensor (a :class:`sieve.qeval.TensorInfo`; activations per
    image): :func:`stored_bits` on its shape, the batch axis restored for an activation."""
    if not info.shape:
        raise ValueError(f"{info.name}: the tensor's shape is needed to count a {fmt} layout's scales;"
                         " take the infos from sieve.qeval.quantizable_tensors")
    shape = tuple(info.shape) if info.kind == "weight" else (1, *info.shape)
    return stored_bits(fmt, shape)
