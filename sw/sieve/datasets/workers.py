"""``--workers N``: the first decode of an image collection in worker processes.

Why: decoding and resizing JPEGs is the one part of loading ImageNet-style data that does not
touch the model, costs milliseconds per image and is independent per image, so it spreads over
cores cleanly.  It runs once per collection (the crops are then cached as uint8 by
:func:`sieve.datasets.images.cached_arrays`), so the pool lives only as long as that decode.

Each worker decodes contiguous chunks of the image list, opening every tar itself (once per
worker, not per chunk: a fresh ``TarFile`` reads the whole member index).  The parent writes the
chunks back in list order, so the array is byte-identical to a decode in the main process
(``workers=0``) and the first bad image in list order is the one reported, whatever the workers.
Workers are forked where the platform can (no re-import of torch per worker, as torch's own
DataLoader does), spawned elsewhere.
"""

from __future__ import annotations

import multiprocessing
import numbers
import re
import tarfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..device import all_cores
from ..errors import SieveError
from .images import ImageRef, iter_decoded, read_image

__all__ = ["POOL_MIN_IMAGES", "default_workers", "check_workers", "decode_into"]

POOL_MIN_IMAGES = 64   # fewer images decode faster in the main process than a pool starts
_CHUNK = 64            # images per task at most: small enough to balance, large enough to amortise the pickling
_TARS: dict[Path, tarfile.TarFile] = {}   # in a worker process: its own open tars, kept until it exits

Convert = Callable[[ImageRef, Image.Image], np.ndarray]


def default_workers() -> int:
    """``min(4, cores this process may use)``: decode scales to a few cores, and the machine is shared."""
    return max(1, min(4, all_cores()))


def check_workers(workers) -> int:
    """``workers`` as an int >= 0 (None: :func:`default_workers`; a digit string from the CLI is
    accepted), or a one-line SieveError naming the bad value."""
    if workers is None:
        return default_workers()
    value = workers
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise SieveError(f"workers must be a whole number >= 0 (0 decodes in the main process), got {workers!r}")
    return int(value)


def _decode_chunk(refs: list[ImageRef], convert: Convert) -> np.ndarray:
    """In a worker: the converted images of ``refs``, stacked in order."""
    return np.stack([convert(ref, read_image(ref, _TARS)) for ref in refs])


def _context():
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def decode_into(out: np.ndarray, refs: list[ImageRef], convert: Convert, workers: int | None = None,
                desc: str = "decode") -> np.ndarray:
    """Fill ``out[i]`` with ``convert(refs[i], decoded image)`` for every ``i`` and return ``out``.

    ``convert`` must be picklable (a module-level function or a ``functools.partial`` of one)
    when ``workers`` >= 1.  ``workers`` 0, a collection under :data:`POOL_MIN_IMAGES`, or a
    daemonic caller (which may not start processes) decodes in this process.  A tqdm bar counts
    the images either way."""
    workers = check_workers(workers)
    n = len(refs)
    with tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        if workers == 0 or n < POOL_MIN_IMAGES or multiprocessing.current_process().daemon:
            for i, (ref, img) in enumerate(iter_decoded(refs)):
                out[i] = convert(ref, img)
                bar.update(1)
            return out
        size = max(1, min(_CHUNK, -(-n // (workers * 8))))   # >= 8 chunks per worker to balance the load
        bounds = iter([(lo, min(lo + size, n)) for lo in range(0, n, size)])
        pool = ProcessPoolExecutor(max_workers=min(workers, -(-n // size)), mp_context=_context())
        try:
            pending: deque = deque()

            def submit() -> None:
                nxt = next(bounds, None)
                if nxt is not None:
                    pending.append((*nxt, pool.submit(_decode_chunk, refs[nxt[0]:nxt[1]], convert)))

            for _ in range(2 * workers):   # a bounded window: finished chunks never pile up in RAM
                submit()
            while pending:
                lo, hi, future = pending.popleft()
                out[lo:hi] = future.result()
                bar.update(hi - lo)
                submit()
        except SieveError as exc:   # raised in a worker: the same line as in the main process
            raise SieveError(str(exc)) from None
        except BrokenProcessPool:
            raise SieveError(f"a decode worker process died while decoding {desc.removeprefix('decode ')} "
                             "(out of memory?); rerun with --workers 0 or fewer workers") from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return out
