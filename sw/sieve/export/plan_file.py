"""Read one variant of ``build/search/<model>/plan.json`` for the exporter.

The Formats come from ``sieve.plan_io.load_plan`` (the search's reader) when it is installed;
the exporter also needs the file's model name and per-tensor element counts, to refuse a plan
written for another model with one clear line.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..cfloat import Format, FormatError
from ..errors import SieveError

__all__ = ["read_plan"]


def read_plan(path: str | Path, variant: str, model: str | None = None
              ) -> tuple[dict[str, Format], dict[str, int]]:
    """``(plan, elements)`` of ``variant`` in ``path``; checks the file was written for ``model``."""
    path = Path(path)
    if not path.is_file():
        raise SieveError(f"plan file {path} does not exist; run `make search MODEL={model or '<model>'}` first")
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SieveError(f"cannot read plan file {path} as JSON ({exc}); search again to rewrite it") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict):
        raise SieveError(f"{path} is not a SIEVE plan (no 'variants'); search again to rewrite it")
    if model is not None and doc.get("model") not in (None, model):
        raise SieveError(f"{path} is a plan for model '{doc.get('model')}', not '{model}'; "
                         f"use build/search/{model}/plan.json")
    variants = doc["variants"]
    if variant not in variants:
        raise SieveError(f"{path} has no variant '{variant}'; it has: {', '.join(variants) or 'none'}")
    tensors = variants[variant].get("tensors")
    if not isinstance(tensors, list):
        raise SieveError(f"{path}: variant '{variant}' has no 'tensors' list; search again to rewrite it")
    plan: dict[str, Format] = {}
    elements: dict[str, int] = {}
    for entry in tensors:
        try:
            name = entry["name"]
            if entry.get("format") not in (None, "", "fp32", "float32"):
                plan[name] = Format.parse(entry["format"])
            if "elements" in entry:
                elements[name] = int(entry["elements"])
        except (KeyError, TypeError, ValueError, FormatError) as exc:
            raise SieveError(f"{path}: bad tensor entry {entry!r} in variant '{variant}' ({exc})") from exc
    try:  # the search's own reader is the reference for the Formats when it exists
        from ..plan_io import load_plan
    except ImportError:
        return plan, elements
    return dict(load_plan(path, variant)), elements
