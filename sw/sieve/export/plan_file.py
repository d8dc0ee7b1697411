"""Read one variant of ``build/search/<model>/plan.json`` for the exporter.

The document and its Formats come from the search's reader (``sieve.plan_io``); the exporter also
takes the file's model name and per-tensor element counts, to refuse a plan written for another
model with one clear line before anything is exported.
"""

from __future__ import annotations

from pathlib import Path

from ..cfloat import Format
from ..errors import SieveError
from ..plan_io import load_plan, load_plan_document

__all__ = ["read_plan"]


def read_plan(path: str | Path, variant: str, model: str | None = None
              ) -> tuple[dict[str, Format], dict[str, int]]:
    """``(plan, elements)`` of ``variant`` in ``path``; checks the file was written for ``model``."""
    doc = load_plan_document(path)
    if model is not None and doc.get("model") != model:
        raise SieveError(f"{path} is a plan for model '{doc.get('model')}', not '{model}'; "
                         f"use build/search/{model}/plan.json or search {model} first")
    plan = dict(load_plan(path, variant))
    elements = {t["name"]: int(t["elements"]) for t in doc["variants"][variant]["tensors"]}
    return plan, elements
