"""On-disk cache of evaluation outcomes: what makes an interrupted search resume exactly.

Why: every decision of a search is a pure function of evaluation outcomes; if the outcomes of
the evaluations already done are replayed from disk, a resumed search walks the same path and
produces the identical plan while skipping the model runs.  One JSON line per outcome,
appended and flushed as soon as it is known, so a kill loses at most the running evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["EvalCache", "digest"]


def digest(*parts) -> str:
    """A stable hex digest of strings, bytes and numbers."""
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, (bytes, bytearray, memoryview)) else str(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class EvalCache:
    """Append-only JSON-lines store ``key -> outcome dict`` (``path=None``: memory only)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.records: dict[str, dict] = {}
        self.hits = 0
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill: ignore it
                        continue
                    if isinstance(rec, dict) and "key" in rec and "value" in rec:
                        self.records[rec["key"]] = rec["value"]
            with open(self.path, "rb+") as fh:  # end a line a kill cut short, so appends start clean
                fh.seek(0, os.SEEK_END)
                if fh.tell() and (fh.seek(-1, os.SEEK_END) or fh.read(1) != b"\n"):
                    fh.write(b"\n")

    def get(self, key: str) -> dict | None:
        value = self.records.get(key)
        if value is not None:
            self.hits += 1
        return value

    def put(self, key: str, value: dict) -> None:
        self.records[key] = value
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "value": value}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
