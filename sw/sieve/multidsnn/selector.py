"""The selector unit (dissertation §3.3.4): a decision tree over the input's features that
predicts whether an input belongs to the main or the tail part, so one dsNN runs per input.

The tree is scikit-learn's ``DecisionTreeClassifier`` grown once per threshold to the deepest
depth of the sweep; a selector of depth ``d`` is that tree's top ``d`` levels (a node at depth
``d`` answers with the class its training inputs mostly had).  A greedy tree's splits do not
depend on the depth limit, so the prefix is the tree grown with ``max_depth=d`` (up to how ties
between equally good splits are broken), and the depth sweep costs one fit instead of one per
depth.  Classes are weighted by their inverse frequency ("balanced"): the tail is the minority,
and an unweighted tree sends nearly everything to the small main dsNN, which is what costs
accuracy.  The tree is fitted on at most ``max_rows`` training inputs (a seeded random subset)
to bound its fitting time on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from ..errors import SieveError

MAX_ROWS = 10000
NODE_BYTES = 16   # feature index (int32), threshold (fp32), left and right child (int32) per node visited


def fit_tree(features: np.ndarray, tail: np.ndarray, max_depth: int, seed: int = 0,
             max_rows: int | None = MAX_ROWS) -> DecisionTreeClassifier:
    """A balanced decision tree predicting ``tail`` from ``features`` (rows = inputs)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    tail = np.asarray(tail, dtype=bool)
    if features.ndim != 2 or len(features) != len(tail):
        raise SieveError(f"selector features {features.shape} do not match {len(tail)} partition labels")
    if tail.all() or not tail.any():
        raise SieveError("the partition puts every training input on one side; choose a tail fraction in (0, 1)")
    if max_depth < 1:
        raise SieveError(f"selector depth {max_depth} must be at least 1")
    rows = np.arange(len(tail))
    if max_rows is not None and len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_rows, replace=False))
    tree = DecisionTreeClassifier(max_depth=max_depth, class_weight="balanced", random_state=seed)
    return tree.fit(features[rows], tail[rows])


@dataclass
class Router:
    """The top ``depth`` levels of a fitted tree as a main/tail router."""

    tree: DecisionTreeClassifier
    depth: int

    def __post_init__(self) -> None:
        t = self.tree.tree_
        self._left, self._right = t.children_left, t.children_right
        self._feature, self._threshold = t.feature, t.threshold
        tail_col = list(self.tree.classes_).index(True)
        self._says_tail = t.value[:, 0, :].argmax(axis=1) == tail_col

    def route(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tail mask, comparisons made) per input, walking all inputs level by level."""
        x = np.asarray(features, dtype=np.float32)
        node = np.zeros(len(x), dtype=np.int64)
        compares = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        for _ in range(self.depth):
            inner = self._left[node] != -1
            if not inner.any():
                break
            go_left = x[rows, np.maximum(self._feature[node], 0)] <= self._threshold[node]
            step = np.where(go_left, self._left[node], self._right[node])
            node = np.where(inner, step, node)
            compares += inner
        return self._says_tail[node], compares

    def route_one(self, x: np.ndarray) -> bool:
        """The route of one input (a flat feature vector): the deployed selector's loop."""
        node = 0
        left, right, feature, threshold = self._left, self._right, self._feature, self._threshold
        for _ in range(self.depth):
            if left[node] == -1:
                break
            node = left[node] if x[feature[node]] <= threshold[node] else right[node]
        return bool(self._says_tail[node])

    def describe(self, levels: int) -> str:
        """The top ``levels`` levels of the selector as indented text; a node cut off below says
        how many more levels of the selector lie under it."""
        depth = node_depths(self.tree)
        below = _levels_below(self._left, self._right, depth, self.depth)
        lines: list[str] = []

        def walk(node: int, level: int) -> None:
            pad = "|   " * level
            if self._left[node] == -1 or level == self.depth:
                lines.append(f"{pad}-> {'tail' if self._says_tail[node] else 'main'}")
            elif level == levels:
                lines.append(f"{pad}... {below[node]} more level(s)")
            else:
                f, t = self._feature[node], self._threshold[node]
                lines.append(f"{pad}f{f} <= {t:.3g}")
                walk(self._left[node], level + 1)
                lines.append(f"{pad}f{f} >  {t:.3g}")
                walk(self._right[node], level + 1)

        walk(0, 0)
        return "\n".join(lines)

    def nodes(self) -> int:
        """Nodes stored by the depth-``depth`` prefix."""
        depth = node_depths(self.tree)
        return int((depth <= self.depth).sum())


def node_depths(tree: DecisionTreeClassifier) -> np.ndarray:
    """Depth of every node of a fitted tree (root 0)."""
    t = tree.tree_
    depth = np.zeros(t.node_count, dtype=np.int64)
    for node in range(t.node_count):        # children always have larger ids than their parent
        for child in (t.children_left[node], t.children_right[node]):
            if child != -1:
                depth[child] = depth[node] + 1
    return depth


def _levels_below(left: np.ndarray, right: np.ndarray, depth: np.ndarray, limit: int) -> np.ndarray:
    """Levels of the depth-``limit`` prefix under each node (0 for a leaf of the prefix)."""
    below = np.zeros(len(left), dtype=np.int64)
    for node in range(len(left) - 1, -1, -1):          # children have larger ids: visit them first
        if left[node] != -1 and depth[node] < limit:
            below[node] = 1 + max(below[left[node]], below[right[node]])
    return below


def routing_error(route_tail: np.ndarray, ideal_tail: np.ndarray) -> float:
    """Share of inputs the selector sends to the other side than the monolith's error says."""
    return float(np.mean(np.asarray(route_tail) != np.asarray(ideal_tail)))


def balanced_accuracy(route_tail: np.ndarray, ideal_tail: np.ndarray) -> float:
    """Mean of the selector's recall on the main and on the tail part."""
    route_tail, ideal_tail = np.asarray(route_tail, bool), np.asarray(ideal_tail, bool)
    recalls = [np.mean(route_tail[ideal_tail == side] == side) for side in (False, True) if (ideal_tail == side).any()]
    return float(np.mean(recalls))


def misclassification_rate(route_tail: np.ndarray, main_correct: np.ndarray, tail_correct: np.ndarray) -> float:
    """The dissertation's selector misclassification rate (§3.5.5): the share of inputs sent to
    a dsNN that answers wrongly while the other dsNN would have answered right."""
    route_tail = np.asarray(route_tail, bool)
    chosen = np.where(route_tail, tail_correct, main_correct)
    other = np.where(route_tail, main_correct, tail_correct)
    return float(np.mean(~chosen & other))
