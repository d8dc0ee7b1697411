"""``--device`` and ``--batch-size``: the same two options on every command that runs a model."""

from __future__ import annotations

from ..device import DEVICE_CHOICES


def add_device_arguments(p, batch_size: int = 500) -> None:
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help=f"where the forward passes run: {DEVICE_CHOICES} (default auto: a GPU when torch"
                        " sees one, else the CPU); results are the same on every device")
    p.add_argument("--batch-size", type=int, default=batch_size, metavar="N",
                   help=f"images per forward pass (default {batch_size})")


def device_options(args) -> dict:
    """``device`` and ``batch_size`` checked (one error line for a bad value or a missing GPU)."""
    from ..device import check_batch_size, resolve_device

    return {"device": resolve_device(args.device), "batch_size": check_batch_size(args.batch_size)}
