"""Per-layer custom-float search (dissertation §4.4.1) and the default strategy that beats it.

``run_search(model, dataset, model_name=..., strategy="greedy"|"sieve", out_dir=...)`` returns
(and writes) the plan.json document; see :mod:`sieve.search.driver`.
"""

from .context import TARGETS, VARIANTS
from .driver import DEFAULT_FAMILY, DEFAULT_STRATEGY, STRATEGIES, run_search
from .formats import FAMILIES

__all__ = ["run_search", "STRATEGIES", "DEFAULT_STRATEGY", "DEFAULT_FAMILY", "FAMILIES", "VARIANTS", "TARGETS"]
