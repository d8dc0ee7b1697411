"""Pareto frontier of accuracy vs cost and the cheapest design meeting an accuracy target."""

from __future__ import annotations

from typing import Callable, Sequence


def pareto_front(points: Sequence[dict], cost: str, accuracy: str) -> list[dict]:
    """Points no other point beats on both (lower or equal cost and higher or equal accuracy,
    one strictly), sorted by cost."""
    ordered = sorted(points, key=lambda p: (p[cost], -p[accuracy]))
    front, best = [], float("-inf")
    for p in ordered:
        if p[accuracy] > best:
            front.append(p)
            best = p[accuracy]
    return front


def cheapest_passing(points: Sequence[dict], cost: str, passes: Callable[[dict], bool],
                     tie_break: str | None = None) -> dict | None:
    """The cheapest point for which ``passes(point)`` is true (None when there is none);
    equal costs are broken by the larger ``tie_break`` value."""
    ok = [p for p in points if passes(p)]
    if not ok:
        return None
    return min(ok, key=lambda p: (p[cost], -(p[tie_break] if tie_break else 0.0)))
