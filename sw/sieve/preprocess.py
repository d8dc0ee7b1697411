"""How stored pixels become a model's input, written down once so it can be recorded.

A :class:`Preprocess` is a small frozen value: the geometry (resize, centre crop) applied to
decoded images, then the arithmetic ``((pixel / scale) - mean) / std`` per channel, with the
channels optionally reversed (RGB → BGR, for Caffe weights).  The search records it in
``plan.json`` (:meth:`Preprocess.to_json`), so what a plan was searched on is never implicit.

Presets (``PRESETS``) reproduce what the zoo always did, bit for bit:

* ``imagenet``: torchvision's — short side to 256, centre crop 224, mean/std normalised;
* ``caffe-imagenet``: Caffe's — resize to 256×256, centre crop 227, BGR minus (104, 117, 123);
* ``cifar10``: /255, then the mean/std the akamaster CIFAR-10 ResNets were trained with;
* ``mnist`` / ``fashion-mnist``: /255, then each training set's mean and standard deviation;
* ``caffe-mnist``: Caffe LeNet's ``scale: 0.00390625`` (= /256);
* ``none``: the stored values as they are.

``mean``/``std`` are in the units *after* the division by ``scale``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .errors import SieveError

__all__ = ["Preprocess", "PRESETS", "preset", "with_overrides", "parse_floats"]


@dataclass(frozen=True)
class Preprocess:
    """Geometry and arithmetic that turn uint8 pixels into a float32 N×C×H×W input."""

    name: str = "none"
    resize: int | None = None      # short side (or both sides when ``square``); None = keep the size
    square: bool = False           # resize to resize×resize (Caffe) instead of the short side (torchvision)
    crop: int | None = None        # centre crop crop×crop; None = no crop
    scale: float = 1.0             # pixels are divided by this first (255 → 0..1)
    mean: tuple[float, ...] = ()   # subtracted per channel (one value = every channel); () = nothing
    std: tuple[float, ...] = ()    # divided per channel; () = nothing
    bgr: bool = False              # reverse the channel order (RGB → BGR) before mean/std

    def __post_init__(self) -> None:
        for field in ("resize", "crop"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise SieveError(f"preprocessing {field} must be a positive number of pixels, got {value!r}")
        if not (isinstance(self.scale, (int, float)) and np.isfinite(self.scale) and self.scale > 0):
            raise SieveError(f"preprocessing scale must be a positive number, got {self.scale!r}")
        if any(not np.isfinite(v) for v in (*self.mean, *self.std)) or any(v == 0 for v in self.std):
            raise SieveError(f"preprocessing mean/std must be finite numbers and std non-zero, "
                             f"got mean {self.mean}, std {self.std}")
        if self.mean and self.std and len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise SieveError(f"preprocessing has {len(self.mean)} mean values but {len(self.std)} std values; "
                             "give one per channel (or one for all)")

    @property
    def has_geometry(self) -> bool:
        return self.resize is not None or self.crop is not None

    # ---------------------------------------------------------------- geometry (PIL images)

    def crop_image(self, img) -> np.ndarray:
        """Resize and centre-crop one RGB PIL image to an H×W×3 uint8 array."""
        from PIL import Image

        w, h = img.size
        new_w, new_h = w, h
        if self.resize is not None:
            if self.square:
                new_w, new_h = self.resize, self.resize
            elif w <= h:
                new_w, new_h = self.resize, int(self.resize * h / w)
            else:
                new_w, new_h = int(self.resize * w / h), self.resize
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        if self.crop is not None:
            if self.crop > min(new_w, new_h):
                raise SieveError(f"cannot centre-crop {self.crop}x{self.crop} from a {new_w}x{new_h} image; "
                                 "pass a smaller --crop or a larger --resize")
            top = int(round((new_h - self.crop) / 2.0))
            left = int(round((new_w - self.crop) / 2.0))
            img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.asarray(img, dtype=np.uint8)

    # ---------------------------------------------------------------- arithmetic

    def to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 N×H×W (grey) or N×H×W×C pixels → float32 N×C×H×W model input."""
        x = torch.from_numpy(np.array(pixels, copy=True))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.to(torch.float32)
        channels = int(x.shape[1])
        for what, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (0, 1, channels):
                raise SieveError(f"preprocessing '{self.name}' has {len(values)} {what} values but the images have "
                                 f"{channels} channel(s); pass --preprocess/--{what} for this data")
        if self.bgr:
            x = x.flip(1)
        if self.scale != 1:
            x = x.div_(float(self.scale))
        if self.mean:
            x = x - torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        if self.std:
            x = x / torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return x.contiguous()

    # ---------------------------------------------------------------- record

    def to_json(self) -> dict:
        """A JSON-ready dict of every field (what plan.json records)."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @staticmethod
    def from_json(doc: dict) -> "Preprocess":
        """The inverse of :meth:`to_json`; one SieveError line for anything malformed."""
        names = {f.name for f in dataclasses.fields(Preprocess)}
        if not isinstance(doc, dict) or set(doc) - names:
            extra = sorted(set(doc) - names) if isinstance(doc, dict) else doc
            raise SieveError(f"preprocessing record has unknown fields {extra}; expected {sorted(names)}")
        try:
            kwargs = dict(doc)
            for key in ("mean", "std"):
                if key in kwargs:
                    kwargs[key] = tuple(float(v) for v in kwargs[key])
            return Preprocess(**kwargs)
        except (TypeError, ValueError) as exc:
            raise SieveError(f"preprocessing record {doc!r} is malformed ({exc})") from None


_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

PRESETS: dict[str, Preprocess] = {p.name: p for p in [
    Preprocess("imagenet", resize=256, crop=224, mean=_IMAGENET_MEAN, std=_IMAGENET_STD),
    Preprocess("caffe-imagenet", resize=256, square=True, crop=227, bgr=True,
               mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0)),
    Preprocess("cifar10", scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    Preprocess("mnist", scale=255.0, mean=(0.1307,), std=(0.3081,)),
    Preprocess("fashion-mnist", scale=255.0, mean=(0.2860,), std=(0.3530,)),
    Preprocess("caffe-mnist", scale=256.0),
    Preprocess("none"),
]}


def preset(name: str | Preprocess) -> Preprocess:
    """The preset called ``name`` (a Preprocess passes through), or a SieveError listing them."""
    if isinstance(name, Preprocess):
        return name
    if name not in PRESETS:
        raise SieveError(f"unknown preprocessing preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` → a tuple of floats, or a SieveError naming the option."""
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise SieveError(f"--{what} takes comma-separated numbers such as 0.485,0.456,0.406; got {text!r}") from None
    if not values:
        raise SieveError(f"--{what} needs at least one number")
    return values


def with_overrides(base: Preprocess, resize: str | int | None = None, crop: int | None = None,
                   mean: str | tuple | None = None, std: str | tuple | None = None,
                   bgr: bool | None = None, scale: float | None = None) -> Preprocess:
    """``base`` with the given fields replaced (None = keep); renamed ``custom`` when anything changed.

    ``resize`` may be ``N`` (short side) or ``NxN`` (both sides, as Caffe does)."""
    changes: dict = {}
    if resize is not None:
        text = str(resize).lower()
        square = "x" in text
        parts = text.split("x")
        if not all(p.strip().isdigit() for p in parts) or (square and (len(parts) != 2 or parts[0] != parts[1])):
            raise SieveError(f"--resize takes N (short side) or NxN (both sides), got {resize!r}")
        changes.update(resize=int(parts[0]), square=square)
    if crop is not None:
        changes["crop"] = int(crop)
    if mean is not None:
        changes["mean"] = parse_floats(mean, "mean") if isinstance(mean, str) else tuple(mean)
    if std is not None:
        changes["std"] = parse_floats(std, "std") if isinstance(std, str) else tuple(std)
    if bgr is not None:
        changes["bgr"] = bool(bgr)
    if scale is not None:
        changes["scale"] = float(scale)
    if not changes:
        return base
    updated = dataclasses.replace(base, **changes)
    return updated if updated == base else dataclasses.replace(updated, name="custom")
