"""M&MNet (dissertation ch. 5): a pair of Minions speculates, the Master recovers.

Per input: Minion 1 answers; if SIEVE's detector doubts it, Minion 2 answers; if the detector
doubts that too, the Master answers — on the device or in the cloud, whichever is faster over
the current network (§5.2.1).  Expected latency per input is

    L = L_Minion1 + P_2 · L_Minion2 + P_3 · L_Master(placed)

(P_2, P_3: fractions of inputs reaching Minion 2 and the Master), and the device energy
likewise.  Everything here works on probabilities and measured latencies:

* :func:`place_master` — device vs cloud from the selector's network model
  (:func:`sieve.runtime.selector.costs`), split into compute and transfer;
* :func:`fit_two_stage` — thresholds of both stages on the calibration half: stage 1 is the
  detector (:func:`sieve.runtime.detector.fit`, single or per-class) fitted towards the Master
  at a grid of intermediate targets, stage 2 is the detector fitted on the inputs that reach
  Minion 2 for what is still missing of the overall target; the cheapest combination wins;
* :func:`select_exhaustive` / :func:`select_heuristic` — the Minion pair of a Master: every
  ordered pair whose Minions together cost less than the Master, or the heuristic that tries
  the cheapest Minion-1 candidates with the Minion 2s that are right most often where Minion 1
  is wrong (Dynamic Duo's odd-corrects ordering, :func:`sieve.runtime.pairing.overlap`);
* :func:`single_minion` — the best single-Minion cascade (today's Dynamic Duo) for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..stats import margin_passes
from . import detector, pairing
from .cascade import Policy, simulate
from .detector import Thresholds
from .selector import Device, Network, costs, transfer


@dataclass(frozen=True)
class MasterCost:
    """Per-input cost of a Master recovery where it is placed: compute and transfer parts."""

    where: str  # "device" or "cloud"
    compute_s: float
    transfer_s: float
    compute_j: float
    transfer_j: float
    device_s: float  # the alternatives, for the report
    cloud_s: float
    device_j: float
    cloud_j: float

    @property
    def seconds(self) -> float:
        return self.compute_s + self.transfer_s

    @property
    def joules(self) -> float:
        return self.compute_j + self.transfer_j

    def to_json(self) -> dict:
        return {**self.__dict__, "seconds": self.seconds, "joules": self.joules}


def place_master(net: Network, dev: Device, input_bytes: int, master_s: float,
                 where: str | None = None) -> MasterCost:
    """Put the Master where it answers faster (or at ``where``); its cost per recovery.

    Cloud: transfer = upload + download + round trip (radio energy), compute = the cloud's
    time (``master_s / cloud_speedup``) with the radio connected meanwhile.
    """
    c = costs(net, dev, input_bytes, 0.0, master_s)
    t_net, e_net = transfer(net, input_bytes, dev.result_bytes)
    if where is None:
        where = "device" if c.big_local_s <= c.cloud_s else "cloud"
    if where == "device":
        return MasterCost("device", c.big_local_s, 0.0, c.big_local_j, 0.0,
                          c.big_local_s, c.cloud_s, c.big_local_j, c.cloud_j)
    return MasterCost("cloud", c.cloud_s - t_net, t_net, c.cloud_j - e_net, e_net,
                      c.big_local_s, c.cloud_s, c.big_local_j, c.cloud_j)


def device_cost(dev: Device, seconds: float) -> tuple[float, float]:
    """(latency s, energy J) of running a Minion measured at ``seconds`` here on the device."""
    c = costs(Network("none", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0), dev, 0, seconds, 0.0)
    return c.little_s, c.little_j


@dataclass
class TwoStage:
    """A fitted Minion 1 → Minion 2 → Master policy and its calibration figures."""

    minion1: str
    minion2: str
    master: str
    rules: list[Thresholds]
    kind: str  # "single" or "per-class"
    stage1_need: int
    correct: int
    need: int
    reach: list[float]  # fraction of inputs running Minion 1, Minion 2, Master
    cost_s: float
    margin_ok: bool = True
    combine: bool = False  # recovery answers with the mean softmax of every model run

    @property
    def met(self) -> bool:
        return self.correct >= self.need

    @property
    def usable(self) -> bool:
        """Meets the target and keeps the generalization margin (:func:`keeps_margin`)."""
        return self.met and self.margin_ok

    @property
    def policy(self) -> Policy:
        return Policy([self.minion1, self.minion2, self.master], self.rules, self.combine)

    def to_json(self) -> dict:
        return {"minion1": self.minion1, "minion2": self.minion2, "master": self.master,
                "kind": self.kind, "stage1_need": self.stage1_need, "correct": self.correct,
                "need": self.need, "met": self.met, "margin_ok": self.margin_ok, "reach": self.reach, "cost_s": self.cost_s,
                "rules": [r.to_json() for r in self.rules]}


NO_RECOVERY = Thresholds("max_softmax", np.array([0.0]), False, "none", True)  # conf < 0: never


def fit_two_stage(m1: str, m2: str, master: str, probs: dict[str, np.ndarray], labels: np.ndarray,
                  need: int, latency: dict[str, float], per_class: bool, points: int = 8,
                  probe: str = "max_softmax", z: float = 0.0, combine: bool = False) -> TwoStage:
    """Cheapest two-stage policy reaching ``need`` correct calibration answers.

    Stage 1 is fitted as if the Master recovered Minion 1 directly, with ``stage1_need``
    swept from what Minion 1 gets right alone to ``need``; stage 2 is then fitted on the
    inputs that reach Minion 2 for ``need`` minus what stage 1 already answers right.  The
    last point (``stage1_need = need``) always meets the target when the Master does, so the
    fit is never worse than the single-Minion cascade of Minion 1 with Minion 2 skipped.
    ``latency`` holds per-input seconds of both Minions and of the Master where it is placed.
    """
    p1, p2, pm = probs[m1], probs[m2], probs[master]
    if combine:   # every stage answers with the mean softmax of the models run so far
        rec1, run2, rec2 = (p1 + pm) / 2, (p1 + p2) / 2, (p1 + p2 + pm) / 3
    else:
        rec1, run2, rec2 = pm, p2, pm
    ok1 = p1.argmax(1) == labels
    lo = int(ok1.sum())
    kind = ("per-class" if per_class else "single") + (", combined" if combine else "")
    best: TwoStage | None = None
    for need1 in np.unique(np.linspace(min(lo, need), need, points).round().astype(int)):
        r1 = detector.fit(p1, rec1, labels, int(need1), 1.0, probe, per_class)
        reach2 = r1.recover_mask(p1)
        got1 = int((ok1 & ~reach2).sum())
        if reach2.any():
            r2 = detector.fit(run2[reach2], rec2[reach2], labels[reach2], max(need - got1, 0), 1.0,
                              probe, per_class)
        else:
            r2 = NO_RECOVERY
        pol = Policy([m1, m2, master], [r1, r2], combine)
        final, exit_stage = simulate(pol, probs)
        correct = int((final == labels).sum())
        reach = [float((exit_stage >= i).mean()) for i in range(3)]
        cost = reach[0] * latency[m1] + reach[1] * latency[m2] + reach[2] * latency[master]
        margin = keeps_margin(final == labels, pm.argmax(1) == labels, need, z)
        cand = TwoStage(m1, m2, master, [r1, r2], kind, int(need1), correct, need, reach, cost, margin, combine)
        if best is None or (cand.usable, cand.met, -cand.cost_s) > (best.usable, best.met, -best.cost_s):
            best = cand
    return best


def best_two_stage(m1: str, m2: str, master: str, probs, labels, need, latency, points=8,
                   z: float = 0.0) -> TwoStage:
    """Single and per-class thresholds both fitted; the cheaper one meeting target and margin.

    (Recovery with the mean softmax of Minions and Master, ``combine=True`` of
    :func:`fit_two_stage`, is not tried: with these Minions the mean is less accurate than the
    Master alone, so it cannot reach a 100 % target — measured on Fashion-MNIST.)"""
    fits = [fit_two_stage(m1, m2, master, probs, labels, need, latency, pc, points, z=z) for pc in (False, True)]
    return min(fits, key=lambda f: (not f.usable, not f.met, f.cost_s))


def keeps_margin(correct: np.ndarray, master_ok: np.ndarray, need: int, z: float) -> bool:
    """The search's generalization margin against the Master on calibration data.

    A rule that reaches the target only by trading many gains for as many losses is a coin
    toss on new data (per-class thresholds fitted on a few hundred inputs per class are the
    usual culprits), so a policy must also pass
    :func:`sieve.stats.margin_passes`: ``(gains - losses) + slack >=
    z·sqrt(gains + losses)``, slack = Master's count − ``need``.
    """
    gains = int((correct & ~master_ok).sum())
    losses = int((master_ok & ~correct).sum())
    ref = int(master_ok.sum())
    if need > ref:   # a target above the Master: the excess must be gained first, net
        return margin_passes(gains - (need - ref), losses, ref, 1.0, z)
    return margin_passes(gains, losses, ref, need / ref if ref else 1.0, z)


@dataclass
class PairSelection:
    """The chosen Minion pair of a Master (None when no pair beats the Master alone)."""

    method: str
    best: TwoStage | None
    tried: int
    message: str
    candidates: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"method": self.method, "best": self.best.to_json() if self.best else None,
                "pairs_tried": self.tried, "message": self.message, "candidates": self.candidates}


def _eligible(candidates: list[str], master: str, latency: dict[str, float]) -> list[str]:
    """Minions cheaper than the placed Master, cheapest first."""
    return sorted((m for m in candidates if m != master and latency[m] < latency[master]),
                  key=lambda m: latency[m])


def _choose(method: str, fits: list[TwoStage], tried: int, master: str, latency, cands,
            check: Check | None = None) -> PairSelection:
    """The cheapest usable pair; with ``check``, the cheapest that also passes it."""
    ok = sorted((f for f in fits if f.usable and f.cost_s < latency[master]), key=lambda f: f.cost_s)
    passed = [f for f in ok if check is None or check(f.policy)][:1]
    if not passed:
        why = ("no pair meets the target" if not any(f.met for f in fits) else
               "no pair keeps the margin" if not any(f.usable for f in fits) else
               "no pair beats the Master alone" if not ok else "no pair passes the check half")
        return PairSelection(method, None, tried, f"{why}; {master} answers alone", cands)
    best = passed[0]
    return PairSelection(method, best, tried, f"{best.minion1} → {best.minion2} → {master}", cands)


Check = Callable[[Policy], bool]


def select_exhaustive(master: str, candidates: list[str], probs, labels, need, latency,
                      points: int = 8, progress: bool = False, z: float = 0.0,
                      check: Check | None = None) -> PairSelection:
    """Every ordered pair of distinct Minions whose latencies sum below the Master's."""
    from tqdm import tqdm

    cands = _eligible(candidates, master, latency)
    pairs = [(a, b) for a in cands for b in cands
             if a != b and latency[a] + latency[b] < latency[master]]
    fits = [best_two_stage(a, b, master, probs, labels, need, latency, points, z)
            for a, b in tqdm(pairs, desc=f"pairs for {master}", total=len(pairs), disable=not progress, leave=False)]
    return _choose("exhaustive", fits, len(pairs), master, latency, cands, check)


def select_heuristic(master: str, candidates: list[str], probs, labels, need, latency,
                     points: int = 8, width: int = 3, z: float = 0.0,
                     check: Check | None = None) -> PairSelection:
    """Cost-ordered, odd-corrects style: the ``width`` cheapest Minion 1s, each with the
    ``width`` Minion 2s that are right most often where Minion 1 is wrong."""
    cands = _eligible(candidates, master, latency)
    fits = []
    for a in cands[:width]:
        seconds = [b for b in cands if b != a and latency[a] + latency[b] < latency[master]]
        seconds.sort(key=lambda b: -pairing.overlap(probs[b], probs[a], labels)[1])
        fits += [best_two_stage(a, b, master, probs, labels, need, latency, points, z) for b in seconds[:width]]
    return _choose("heuristic", fits, len(fits), master, latency, cands, check)


def single_minion(master: str, candidates: list[str], probs, labels, need, latency,
                  z: float = 0.0, check: Check | None = None) -> pairing.PairResult | None:
    """Best single-Minion cascade (Dynamic Duo's pair with the placed Master's cost), held to
    the same margin ``z`` and ``check`` as the pairs so that the comparison is fair."""
    found = []
    for m in _eligible(candidates, master, latency):
        for per_class in (False, True):
            res = pairing.evaluate_pair(m, master, probs, labels, latency, need, "max_softmax",
                                        per_class, combine=False)
            mask = res.rule.recover_mask(probs[m])
            ok = np.where(mask, probs[master].argmax(1), probs[m].argmax(1)) == labels
            if res.met and keeps_margin(ok, probs[master].argmax(1) == labels, need, z) and res.cost < latency[master]:
                found.append(res)
    found.sort(key=lambda r: r.cost)
    return next((r for r in found if check is None or check(Policy([r.little, master], [r.rule]))), None)


def needed(probs: dict[str, np.ndarray], master: str, labels: np.ndarray, target: float) -> int:
    """Correct calibration answers a policy must reach: ``target`` × the Master's."""
    return int(math.ceil(target * int((probs[master].argmax(1) == labels).sum()) - 1e-9))
