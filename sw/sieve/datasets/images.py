"""Image collections on disk (folders, tars) and the decoded-pixel cache.

Decoding thousands of JPEGs every time a test loads a model is too slow, so decoded uint8
arrays are cached under ``<cache>/data`` keyed by the source (path, size, mtime of every
file) and by the preprocessing, written atomically under a file lock.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..cache import cache_dir, file_lock
from ..errors import SieveError
from ..io_utils import atomic_path

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff")
CACHE_MIN_IMAGES = 256   # smaller collections decode faster than the cache is worth


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


@dataclass(frozen=True)
class ImageRef:
    """One image inside a folder (``member`` None) or a tar (``member`` = member name)."""

    path: Path
    member: str | None = None

    @property
    def display(self) -> str:
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def relname(self) -> str:
        """Name used for ordering and labels: tar member name or the file path."""
        return self.member if self.member else str(self.path)


def decode_image(ref: ImageRef, data: bytes | None = None) -> Image.Image:
    """An RGB PIL image, or a SieveError naming the file that cannot be decoded."""
    try:
        if data is None:
            with open(ref.path, "rb") as handle:
                data = handle.read()
        img = Image.open(io.BytesIO(data))
        img.load()
        return img.convert("RGB")
    except UnidentifiedImageError:
        # PIL's own message names the in-memory buffer (<_io.BytesIO object at 0x…>), not the file
        raise SieveError(f"cannot decode image {ref.display}: not a recognised image format "
                         f"({len(data or b'')} bytes); remove or replace the file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", str(exc))
        raise SieveError(f"cannot decode image {ref.display}: {reason}; remove or replace the file") from None


def tar_image_members(tar_path: Path) -> list[str]:
    """Names of the image members of a tar, or a SieveError when it cannot be read."""
    try:
        with tarfile.open(tar_path) as tar:
            return [m.name for m in tar.getmembers() if m.isfile() and is_image(m.name)]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SieveError(f"cannot read tar {tar_path}: {exc}") from None


def read_image(ref: ImageRef, tars: dict[Path, tarfile.TarFile]) -> Image.Image:
    """Decode one image; a tar member is read through ``tars`` (opened once per tar and kept
    there, so the caller decides how long the tars stay open)."""
    if ref.member is None:
        return decode_image(ref)
    try:
        tar = tars.get(ref.path)
        if tar is None:
            tar = tars[ref.path] = tarfile.open(ref.path)
        handle = tar.extractfile(ref.member)
        data = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, KeyError, EOFError) as exc:
        raise SieveError(f"cannot read {ref.display}: {exc}") from None
    return decode_image(ref, data)


def iter_decoded(refs: list[ImageRef]) -> Iterator[tuple[ImageRef, Image.Image]]:
    """Decode images in order, opening each tar once."""
    tars: dict[Path, tarfile.TarFile] = {}
    try:
        for ref in refs:
            yield ref, read_image(ref, tars)
    finally:
        for tar in tars.values():
            tar.close()


def source_key(path: Path, extra: str = "") -> str:
    """Hash of a file's (path, size, mtime) or of every file under a directory."""
    h = hashlib.sha256(extra.encode())
    path = path.resolve()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.join(root, name)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    else:
        st = path.stat()
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cached_arrays(stem: str, key: str, build: Callable[[], dict[str, np.ndarray]],
                  enabled: bool = True) -> dict[str, np.ndarray]:
    """``build()``'s arrays, cached as ``<cache>/data/<stem>-<key>.npz`` when ``enabled``."""
    if not enabled:
        return build()
    target = cache_dir("data") / f"{stem}-{key}.npz"
    if not target.is_file():
        with file_lock(target):
            if not target.is_file():
                arrays = build()
                with atomic_path(target) as tmp:
                    with open(tmp, "wb") as handle:
                        np.savez(handle, **arrays)
    try:
        with np.load(target, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except Exception as exc:  # noqa: BLE001 - object arrays, truncation: the cache file is unusable
        raise SieveError(f"cannot read data cache {target} ({' '.join(str(exc).split())}); "
                         "delete it and rerun to decode the images again") from None
