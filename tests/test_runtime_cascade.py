"""Cascade executor, offered-load simulation, flexible ensembles and pair selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sieve.errors import SieveError
from sieve.runtime import ensemble, pairing
from sieve.runtime.cascade import Policy, _simulate_queue, execute, measure, offered_load, simulate
from sieve.runtime.detector import Thresholds
from sieve.runtime.probes import softmax


def _models(k=4, d=6, seed=0):
    torch.manual_seed(seed)
    little = torch.nn.Linear(d, k).eval()
    mid = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, k)).eval()
    big = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, k)).eval()
    return {"little": little, "mid": mid, "big": big}


@pytest.mark.parametrize("combine", [False, True])
@pytest.mark.parametrize("stages", [["little", "big"], ["little", "mid", "big"]])
def test_execute_matches_simulation(combine, stages):
    models = _models()
    x = torch.randn(300, 6)
    with torch.no_grad():
        probs = {m: softmax(models[m](x).numpy()) for m in models}
    rules = [Thresholds("max_softmax", np.array([0.4]), False)] + \
            [Thresholds("score_margin", np.array([0.2]), False)] * (len(stages) - 2)
    pol = Policy(stages, rules, combine)
    sim_pred, sim_exit = simulate(pol, probs)
    timing = {}
    ex_pred, ex_exit, secs = execute(pol, models, x, batch_size=64, timing=timing)
    assert set(timing) == {"wall", "cpu"} and timing["wall"] == secs
    assert (sim_exit == ex_exit).all()
    assert (sim_pred == ex_pred).all()
    assert secs > 0
    assert 0 < (sim_exit > 0).mean() < 1  # the threshold really splits the inputs


def test_policy_rule_count_checked():
    with pytest.raises(SieveError, match="needs 1 rules"):
        Policy(["a", "b"], [], False)


def test_measure_reach_and_accuracy():
    probs = {"a": np.array([[0.9, 0.1], [0.55, 0.45]]), "b": np.array([[0.2, 0.8], [0.1, 0.9]])}
    pol = Policy(["a", "b"], [Thresholds("max_softmax", np.array([0.6]), False)], False)
    got = measure(pol, probs, np.array([0, 1]))
    assert got.accuracy == 1.0 and got.reach == [1.0, 0.5] and got.recovery_rate == 0.5
    assert got.cost({"a": 1.0, "b": 4.0}, ["a", "b"]) == pytest.approx(3.0)


def test_queue_simulation_known_cases():
    # one request at a time, far apart: latency = service time exactly
    arr = np.array([0.0, 10.0, 20.0])
    lat = _simulate_queue(arr, np.array([0, 1, 0]), [(0.1, 0.01), (0.2, 0.05)], max_batch=8)
    assert np.allclose(lat, [0.11, 0.11 + 0.25, 0.11])
    # three at once: one batch of 3, one of them recovered
    lat = _simulate_queue(np.zeros(3), np.array([0, 1, 0]), [(0.1, 0.01), (0.2, 0.05)], max_batch=8)
    assert np.allclose(lat, [0.13, 0.13 + 0.25, 0.13])


def test_offered_load_cascade_wins_when_little_is_cheap():
    exits = np.array([0] * 90 + [1] * 10)
    rows = offered_load(exits, [(1e-3, 1e-4), (3e-3, 4e-4)], (3e-3, 4e-4), [0.5, 0.9, 1.5], requests=4000)
    for r in rows:
        assert r["cascade"]["mean_ms"] < r["big"]["mean_ms"]
        assert r["cascade"]["p99_ms"] < r["big"]["p99_ms"]
    assert rows[-1]["big"]["saturated"] and not rows[0]["big"]["saturated"]
    assert not rows[-1]["cascade"]["saturated"]


def _pool(seed=0, n=3000, k=5):
    """Synthetic pool: a cheap weak model, a mid one, an expensive strong one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)

    def model(acc, sharp):
        right = rng.uniform(size=n) < acc
        pred = np.where(right, y, (y + rng.integers(1, k, n)) % k)
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), pred] += sharp * (1 + right)  # confident when right
        return softmax(logits)

    probs = {"small": model(0.75, 1.5), "mid": model(0.82, 1.5), "large": model(0.88, 1.5)}
    lat = {"small": 1.0, "mid": 2.0, "large": 4.0}
    return probs, y, lat


def test_pairing_heuristic_and_exhaustive():
    probs, y, lat = _pool()
    h = pairing.heuristic(probs, y, lat, target=1.0)
    e = pairing.exhaustive(probs, y, lat, target=1.0)
    assert h.pair is not None and h.pair.big == "large" and h.pair.met
    assert e.pair is not None and e.pair.met and e.pair.cost <= h.pair.cost + 1e-12
    assert e.pair.cost < lat["large"]
    for p in e.tried:
        assert p.cost == pytest.approx(lat[p.little] + p.recovery_rate * lat[p.big])
    c, o, b = pairing.overlap(probs["small"], probs["large"], y)
    assert c + o == int((probs["small"].argmax(1) == y).sum())
    assert c + b == int((probs["large"].argmax(1) == y).sum())


def test_pairing_falls_back_when_no_pair_meets_target():
    probs, y, lat = _pool()
    h = pairing.heuristic(probs, y, lat, target=1.2)  # 120 % of the best: impossible
    e = pairing.exhaustive(probs, y, lat, target=1.2)
    assert h.pair is None and e.pair is None
    assert e.fallback == "large" and "no pair meets the target" in e.message


def test_chain_extremes_and_grid():
    probs, y, lat = _pool()
    order = ["small", "mid", "large"]
    full = ensemble.evaluate_chain(ensemble.Chain(order, [np.inf, np.inf]), probs, y, lat)
    assert full.latency == pytest.approx(7.0) and full.exit_fractions[-1] == 1.0
    mean = (probs["small"] + probs["mid"] + probs["large"]) / 3
    assert full.accuracy == pytest.approx((mean.argmax(1) == y).mean())
    first = ensemble.evaluate_chain(ensemble.Chain(order, [0.0, 0.0]), probs, y, lat)
    assert first.latency == pytest.approx(1.0) and first.accuracy == pytest.approx((probs["small"].argmax(1) == y).mean())
    need = int(0.99 * full.accuracy * len(y))
    best = ensemble.fit_for_accuracy(order, probs, y, lat, need, points=12)
    assert best.accuracy * len(y) >= need - 1e-6
    assert best.latency < full.latency
    flex = ensemble.fit_flexible(order, probs, y, lat, lam=10.0, points=12)
    assert flex.latency <= full.latency
    assert ensemble.fit_for_accuracy(order, probs, y, lat, len(y) + 1, points=6) is None


def test_grid_search_equals_brute_force():
    import itertools

    probs, y, lat = _pool(seed=3, n=800)
    order = ["small", "mid", "large"]
    need = int(0.8 * len(y))
    got = ensemble.fit_for_accuracy(order, probs, y, lat, need, points=8)
    preds, confs = ensemble.stage_outputs([probs[m] for m in order], True, "score_margin")
    best = None
    for ts in itertools.product(*[ensemble._candidates(confs[i], 8) for i in range(2)]):
        r = ensemble.evaluate_chain(ensemble.Chain(order, list(ts)), probs, y, lat)
        if r.accuracy * len(y) >= need - 1e-6 and (best is None or r.latency < best.latency - 1e-12):
            best = r
    assert got.latency == pytest.approx(best.latency)
    assert got.accuracy * len(y) >= need - 1e-6
