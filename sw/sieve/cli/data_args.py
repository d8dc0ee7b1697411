"""The options that say what ``--data`` is and how its images become model inputs, shared by
every command that takes ``--data`` (search, export, models --eval/--train, cascade/ensemble/selector)."""

from __future__ import annotations


def add_data_arguments(p) -> None:
    """Add ``--dataset``, ``--preprocess``, the preprocessing overrides and ``--workers`` to parser ``p``."""
    from ..datasets.identity import DATASETS
    from ..preprocess import PRESETS

    p.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="what --data is, when its content does not say (idx files are recognised by checksum, "
                        "CIFAR-10 by its classes, ImageNet by wnids/labels.csv); sets class names and normalisation")
    p.add_argument("--preprocess", choices=list(PRESETS), default=None,
                   help="preprocessing preset (default: the model's own; an .npz is used as it is)")
    p.add_argument("--resize", default=None, metavar="N|NxN",
                   help="resize images: short side to N, or NxN exactly (overrides the preset)")
    p.add_argument("--crop", type=int, default=None, metavar="N", help="centre crop NxN (overrides the preset)")
    p.add_argument("--mean", default=None, metavar="M[,M,M]",
                   help="per-channel mean subtracted after dividing by --scale (overrides the preset)")
    p.add_argument("--std", default=None, metavar="S[,S,S]", help="per-channel std divided by (overrides the preset)")
    p.add_argument("--bgr", default=None, action="store_true", help="reverse channels RGB→BGR (Caffe weights)")
    p.add_argument("--scale", type=float, default=None, metavar="D",
                   help="divide pixels (0..255) by D first, e.g. 255 (overrides the preset)")
    p.add_argument("--workers", default=None, metavar="N",
                   help="processes that decode image files (JPEG folders/tars) the first time, before the "
                        "crops are cached (default min(4, cores); 0 = in the main process); same results")


def data_options(args) -> dict:
    """Keyword arguments of :func:`sieve.zoo.load` from the parsed options (a bad ``--workers``
    is one SieveError line here, before any loading)."""
    from ..datasets.workers import check_workers

    overrides = {k: getattr(args, k, None) for k in ("resize", "crop", "mean", "std", "bgr", "scale")}
    return {"dataset": getattr(args, "dataset", None), "preprocess": getattr(args, "preprocess", None),
            "preprocess_overrides": {k: v for k, v in overrides.items() if v is not None},
            "workers": check_workers(getattr(args, "workers", None))}
