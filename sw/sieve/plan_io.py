"""Reading and writing ``plan.json`` (schema fixed by the contract; see ``notes/contracts.md``).

``load_plan(path, variant)`` is what export and the runtime use to get ``tensor -> Format``.
Tensors recorded as ``fp32`` are left out of the returned plan (they stay unquantized).

Optional keys (plans written before them still load): ``input_shape`` (C, H, W of one image
the search ran on) and ``preprocess`` (:meth:`sieve.preprocess.Preprocess.to_json`, or null
when the data came preprocessed), so that export builds the graph for the input the plan was
searched with (``plan_input_shape``).

Schema versions (``schema_version``; a plan without it is version 1 and still loads):

* 2 adds, per variant, ``test_verdict`` — the paired comparison with fp32 on the test split
  (:func:`sieve.stats.verdict`: images, reference_correct, correct, gains, losses,
  normalized_accuracy, target, allowance, p_worse, alpha, holds) — and ``holds_on_test`` (its
  ``holds``: test accuracy not significantly below the variant's target at the 5 % level);
  optionally ``tightening`` (the cheaper plans the search tried below a variant's plan, with
  their validation results: why no cheaper plan passed).

Optional since issue 16 (same schema version: a plan without them reads as before): ``family``
(the format family searched: ``scalar``, ``channel``, ``block`` or ``all``; absent = scalar) and,
for a layout-format tensor, ``bits_per_element`` (every stored bit: element codes plus block
scales or per-channel biases; scalar entries keep their five keys).  A tensor's ``format`` may then be a layout text, ``mx<k>:<element>`` or
``ch<b>:<element>`` (:func:`sieve.blockfmt.parse_format`, which reads scalar text as before);
its ``bits`` stays the element code width.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .blockfmt import AnyFormat, check_plan_entry, parse_format
from .cfloat import FormatError
from .errors import SieveError
from .io_utils import write_json

__all__ = ["load_plan", "load_plan_document", "write_plan", "validate_plan_document", "VARIANTS",
           "VARIANT_KEYS", "TOP_KEYS", "SCHEMA_VERSION", "VERDICT_KEYS", "plan_schema_version", "data_record", "plan_input_shape", "plan_preprocess"]

VARIANTS = ("exact", "accurate", "approximate")
SCHEMA_VERSION = 2
VERDICT_KEYS = ("images", "reference_correct", "correct", "gains", "losses", "normalized_accuracy",
                "target", "allowance", "p_worse", "alpha", "holds")
TOP_KEYS = ("model", "dataset", "strategy", "baseline", "variants", "search_seconds", "evaluations")
VARIANT_KEYS = ("val_accuracy", "test_accuracy", "normalized_test_accuracy", "mean_bits_weights",
                "mean_bits_activations", "mean_bits", "compression_ratio", "tensors")
TENSOR_KEYS = ("name", "kind", "elements", "format", "bits")
#: the format families a plan may record (``sieve.search.formats.FAMILIES``; not imported from
#: there, the search imports this module)
PLAN_FAMILIES = ("scalar", "channel", "block", "all")


def validate_plan_document(doc, source: str = "plan") -> None:
    """Raise SieveError naming the first missing or malformed field."""
    if not isinstance(doc, dict):
        raise SieveError(f"{source}: not a JSON object; expected a plan.json written by `sieve search`")
    for key in TOP_KEYS:
        if key not in doc:
            raise SieveError(f"{source}: missing key {key!r}; re-run `sieve search` to write a complete plan")
    version = plan_schema_version(doc, source)
    family = doc.get("family", "scalar")
    if family not in PLAN_FAMILIES:
        raise SieveError(f"{source}: family {family!r} is not one of {', '.join(PLAN_FAMILIES)}; re-run `sieve search`")
    for key in ("val_accuracy", "test_accuracy"):
        if key not in doc["baseline"]:
            raise SieveError(f"{source}: baseline lacks {key!r}")
    for v in VARIANTS:
        var = doc["variants"].get(v)
        if not isinstance(var, dict):
            raise SieveError(f"{source}: variant {v!r} is missing")
        for key in VARIANT_KEYS:
            if key not in var:
                raise SieveError(f"{source}: variant {v!r} lacks {key!r}")
        if version >= 2:
            verdict = var.get("test_verdict")
            if not isinstance(verdict, dict) or any(k not in verdict for k in VERDICT_KEYS) \
                    or not isinstance(var.get("holds_on_test"), bool):
                raise SieveError(f"{source}: variant {v!r} lacks a complete test_verdict {VERDICT_KEYS} and"
                                 " holds_on_test (schema 2); re-run `sieve search` to rewrite the plan")
        for t in var["tensors"]:
            if not isinstance(t, dict) or any(k not in t for k in TENSOR_KEYS):
                raise SieveError(f"{source}: variant {v!r} has a tensor entry without {TENSOR_KEYS}: {t!r}")
            if t["kind"] not in ("weight", "activation"):
                raise SieveError(f"{source}: tensor {t['name']!r} has kind {t['kind']!r}; expected weight or activation")
    shape = doc.get("input_shape")
    if shape is not None and (not isinstance(shape, list) or not shape
                              or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
        raise SieveError(f"{source}: input_shape {shape!r} is not a list of positive sizes (C, H, W)")
    if doc.get("preprocess") is not None:
        plan_preprocess(doc, source)


def plan_schema_version(doc: dict, source: str = "plan") -> int:
    """The plan's schema version (1 for plans written before it was recorded)."""
    version = doc.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SieveError(f"{source}: schema_version {version!r} is not a whole number >= 1; re-run `sieve search`")
    if version > SCHEMA_VERSION:
        raise SieveError(f"{source}: schema_version {version} is newer than this sieve reads ({SCHEMA_VERSION});"
                         " update sieve or re-run `sieve search` with this one")
    return version


def load_plan_document(path: str | os.PathLike) -> dict:
    """The whole plan.json, validated."""
    p = Path(path)
    if not p.is_file():
        raise SieveError(f"plan file {p} does not exist; run `sieve search --model M` (writes build/search/M/plan.json)")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SieveError(f"cannot read {p} as JSON ({exc}); re-run `sieve search` to rewrite it") from exc
    validate_plan_document(doc, str(p))
    return doc


def load_plan(path: str | os.PathLike, variant: str = "accurate") -> dict[str, AnyFormat]:
    """``tensor name -> format`` of one variant (``exact``, ``accurate`` or ``approximate``):
    a :class:`~sieve.cfloat.Format`, or a block/channel layout for plans of the layout families."""
    if variant not in VARIANTS:
        raise SieveError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    doc = load_plan_document(path)
    plan: dict[str, AnyFormat] = {}
    for t in doc["variants"][variant]["tensors"]:
        if t["format"] == "fp32":
            continue
        try:
            fmt = parse_format(t["format"])
        except (FormatError, ValueError) as exc:
            raise SieveError(f"{path}: tensor {t['name']!r} has an unreadable format {t['format']!r} ({exc})") from exc
        check_plan_entry(f"{path}: {t['name']}", t["kind"], fmt)
        if fmt.width != t["bits"]:
            raise SieveError(f"{path}: tensor {t['name']!r} says {t['bits']} bits but {fmt} has {fmt.width}")
        plan[t["name"]] = fmt
    return plan


def data_record(dataset) -> dict:
    """The plan keys that say what the search's inputs were: ``input_shape`` and ``preprocess``."""
    prep = getattr(dataset, "preprocess", None)
    shape = getattr(dataset, "input_shape", None)
    return {"input_shape": list(shape) if shape else None, "preprocess": prep.to_json() if prep is not None else None}


def plan_input_shape(doc: dict) -> tuple[int, ...] | None:
    """(C, H, W) the plan was searched with, or None for plans written before it was recorded."""
    shape = doc.get("input_shape")
    return tuple(shape) if shape else None


def plan_preprocess(doc: dict, source: str = "plan"):
    """The :class:`~sieve.preprocess.Preprocess` recorded in a plan, or None."""
    from .preprocess import Preprocess

    record = doc.get("preprocess")
    if record is None:
        return None
    try:
        return Preprocess.from_json(record)
    except SieveError as exc:
        raise SieveError(f"{source}: {exc}") from None


def write_plan(path: str | os.PathLike, doc: dict) -> None:
    """Validate and atomically write a plan document."""
    validate_plan_document(doc, str(path))
    write_json(path, doc)
