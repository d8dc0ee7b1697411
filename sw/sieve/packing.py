"""Dense bit packing of codes: ``n`` codes of ``w`` bits in ``ceil(n*w/8)`` bytes.

Bit order (the contract, shared with the ONNX decode graph and the hardware's memory
image): LSB first.  Code ``i`` occupies stream bits ``i*w .. i*w+w-1``, its own LSB first;
stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``.  Padding bits of the last byte are
zero.  For ``w`` = 8, 16, 32 this is simply the little-endian array of codes.

Speed comes from SWAR on 64-bit words: codes sit in 8/16/32-bit lanes of a uint64, and
log2(lanes) mask-and-shift steps squeeze neighbouring lanes together until one word holds
``lanes*w`` contiguous bits; a short loop then splices a few such words into whole bytes.
Every step is a NumPy operation over all words at once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .cfloat import Format, code_dtype

__all__ = ["pack", "unpack"]

_U64 = np.uint64


def _layout(w: int) -> tuple[int, int, int]:
    """(lane bits, codes per uint64 word, words per byte-aligned group)."""
    lane = 8 if w <= 8 else 16 if w <= 16 else 32
    per_word = 64 // lane
    words = 1
    while (words * per_word * w) % 8:
        words *= 2
    return lane, per_word, words


@lru_cache(maxsize=None)
def _block_mask(block: int, lo: int, hi: int) -> _U64:
    """uint64 with bits [lo, hi) set inside every ``block``-bit block."""
    one = sum(1 << b for b in range(lo, hi))
    return _U64(sum(one << (s * block) for s in range(64 // block)))


_CHUNK_WORDS = 1 << 15  # words per chunk: buffers stay in L2 cache, no page faults


def _squeeze(x: np.ndarray, lane: int, w: int, scratch: np.ndarray) -> None:
    """In place: lanes of ``w`` valid bits -> one run of ``(64/lane)*w`` bits per word."""
    s, bits = lane, w
    while s < 64:
        np.bitwise_and(x, _block_mask(2 * s, s, s + bits), out=scratch)
        np.right_shift(scratch, _U64(s - bits), out=scratch)
        np.bitwise_and(x, _block_mask(2 * s, 0, bits), out=x)
        np.bitwise_or(x, scratch, out=x)
        s, bits = 2 * s, 2 * bits


def _spread(x: np.ndarray, lane: int, w: int, scratch: np.ndarray) -> None:
    """In place: the inverse of :func:`_squeeze`."""
    s, bits = 64, (64 // lane) * w
    while s > lane:
        s, bits = s // 2, bits // 2
        np.left_shift(x, _U64(s - bits), out=scratch)
        np.bitwise_and(scratch, _block_mask(2 * s, s, s + bits), out=scratch)
        np.bitwise_and(x, _block_mask(2 * s, 0, bits), out=x)
        np.bitwise_or(x, scratch, out=x)


def _check_codes(arr: np.ndarray, w: int) -> None:
    if arr.dtype.kind not in "ui":
        raise TypeError(f"codes must be an integer array, got dtype {arr.dtype}")
    if arr.size and ((arr.dtype.kind == "i" and arr.min() < 0) or int(arr.max()) >> w):
        raise ValueError(f"codes out of range for a {w}-bit format: 0..{(1 << w) - 1}")


def _strided_words(buf: np.ndarray, offset: int, count: int, stride: int) -> np.ndarray:
    """``count`` little-endian uint64 views into ``buf`` (uint8) at ``offset + i*stride`` bytes.

    The words may be unaligned and may overlap one another; the ndarray constructor checks
    that all of them lie inside ``buf``.
    """
    return np.ndarray((count,), dtype="<u8", buffer=buf, offset=offset, strides=(stride,))


def _runs(x: np.ndarray, words: int, run: int, acc: np.ndarray) -> np.ndarray:
    """Splice ``words`` consecutive runs of ``run`` bits into whole-byte groups (uint64 rows)."""
    if words == 1:
        return x.reshape(-1, 1)
    xw = x.reshape(-1, words)
    a = acc[: xw.shape[0]]
    a[:] = 0
    for i in range(words):
        j, s = divmod(i * run, 64)
        a[:, j] |= xw[:, i] << _U64(s)
        if s + run > 64:
            a[:, j + 1] |= xw[:, i] >> _U64(64 - s)
    return a


def pack(codes, fmt: Format) -> bytes:
    """Pack codes of ``fmt`` into ``ceil(n*width/8)`` bytes (bit order in the module docstring)."""
    w = fmt.width
    arr = np.asarray(codes).reshape(-1)
    _check_codes(arr, w)
    n = arr.size
    nbytes = (n * w + 7) // 8
    if w in (8, 16, 32):
        return arr.astype(f"<u{w // 8}", copy=False).tobytes()
    if w == 1:  # NumPy's own bit packer already speaks this bit order
        return np.packbits(arr.astype(np.uint8, copy=False), bitorder="little").tobytes()
    lane, per_word, words = _layout(w)
    group_codes = per_word * words
    group_bytes = group_codes * w // 8
    groups = -(-n // group_codes)
    run = per_word * w  # valid bits per word after squeezing
    cols = -(-group_bytes // 8)
    # Each group is written as whole uint64 words at byte offset g*group_bytes; neighbouring
    # groups' words overlap in memory, so they are OR-ed in, in passes whose words are disjoint.
    passes = -(-8 // group_bytes)
    out = np.zeros(groups * group_bytes + 8, dtype=np.uint8)
    step = max(passes, (_CHUNK_WORDS // words) // passes * passes)  # groups per chunk
    lanes = np.zeros(step * group_codes, dtype=f"<u{lane // 8}")
    x_all = lanes.view("<u8")
    scratch_all = np.empty_like(x_all)
    acc = np.zeros((step, cols), dtype="<u8")
    for g0 in range(0, groups, step):
        g1 = min(groups, g0 + step)
        m = (g1 - g0) * group_codes
        src = arr[g0 * group_codes: min(n, g1 * group_codes)]
        lanes[: src.size] = src
        lanes[src.size: m] = 0
        x = x_all[: m // per_word]
        _squeeze(x, lane, w, scratch_all[: x.size])
        rows = _runs(x, words, run, acc)
        for j in range(cols):
            for k in range(min(passes, g1 - g0)):
                part = rows[k::passes, j]
                dst = _strided_words(out, (g0 + k) * group_bytes + 8 * j, part.size, passes * group_bytes)
                np.bitwise_or(dst, part, out=dst)
    return out[:nbytes].tobytes()


def unpack(blob: bytes, fmt: Format, count: int) -> np.ndarray:
    """Read ``count`` codes of ``fmt`` from ``blob`` (the inverse of :func:`pack`)."""
    w = fmt.width
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    nbytes = (count * w + 7) // 8
    buf = np.frombuffer(blob, dtype=np.uint8)
    if buf.size < nbytes:
        raise ValueError(f"{count} codes of {w} bits need {nbytes} bytes, got {buf.size}")
    dtype = code_dtype(w)
    if w in (8, 16, 32):
        return buf[:nbytes].view(f"<u{w // 8}").astype(dtype)
    if w == 1:
        return np.unpackbits(buf[:nbytes], count=count, bitorder="little").astype(dtype, copy=False)
    lane, per_word, words = _layout(w)
    group_codes = per_word * words
    group_bytes = group_codes * w // 8
    groups = -(-count // group_codes)
    run = per_word * w
    cols = -(-group_bytes // 8)
    padded = np.zeros(groups * group_bytes + 8, dtype=np.uint8)  # zero tail: reads stay inside
    padded[:nbytes] = buf[:nbytes]
    out = np.empty(groups * group_codes, dtype=f"<u{lane // 8}")
    out_words = out.view("<u8")
    step = max(1, _CHUNK_WORDS // words)
    scratch_all = np.empty(step * words, dtype="<u8")
    mask = _U64((1 << run) - 1)
    for g0 in range(0, groups, step):
        g1 = min(groups, g0 + step)
        x = out_words[g0 * words: g1 * words]
        xw = x.reshape(-1, words)
        group_words = [_strided_words(padded, g0 * group_bytes + 8 * j, g1 - g0, group_bytes) for j in range(cols)]
        for i in range(words):
            j, s = divmod(i * run, 64)
            col = group_words[j] >> _U64(s)
            if s + run > 64:
                col |= group_words[j + 1] << _U64(64 - s)
            np.bitwise_and(col, mask, out=xw[:, i])
        _spread(x, lane, w, scratch_all[: x.size])
    return out[:count].astype(dtype, copy=False)
