"""M&MNet (dissertation ch. 5): Minion generation, two-stage calibration, pairing, placement, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sieve.cache import recipe_hash
from sieve.cli.main import main
from sieve.models import fashion, training
from sieve.runtime import minions, mmnet
from sieve.runtime.cascade import simulate
from sieve.runtime.probes import softmax
from sieve.runtime.selector import NETWORKS, Device, costs


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("base", ["lenet5", "convnet", "minivgg"])
def test_alpha_one_is_the_pool_model_with_the_same_recipe(base):
    torch.manual_seed(0)
    pool = fashion.build(base)
    torch.manual_seed(0)
    same = minions.build_minion(base, 1.0, 1.0)
    assert type(same) is type(pool)
    a, b = pool.state_dict(), same.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)   # same layers, created in the same order
    rec = training.recipe(base, "fp", 0.286, 0.353, 55000)
    assert minions.recipe(rec, 1.0, 1.0, 1) is rec   # α = ρ = 1: the cached pool weights
    assert recipe_hash(minions.recipe(rec, 0.5, 1.0, 1)) != recipe_hash(rec)
    assert recipe_hash(minions.recipe(rec, 1.0, 0.71, 1)) != recipe_hash(minions.recipe(rec, 1.0, 0.57, 1))


@pytest.mark.parametrize("base", ["lenet5", "convnet", "minivgg"])
def test_macs_scale_with_alpha_squared_and_rho_squared(base):
    full = minions.model_macs(minions.build_minion(base, 1.0, 1.0))
    half = minions.model_macs(minions.build_minion(base, 0.5, 1.0))
    # α² for every inner convolution; the 1-channel first layer and the 10-way last scale by α
    assert 0.25 <= half / full <= 0.36, half / full
    small = minions.build_minion(base, 1.0, 0.57)
    assert small(torch.zeros(3, 1, 28, 28)).shape == (3, 10)   # takes the pool's 28 px input
    ratio = minions.model_macs(small) / full
    # ≈ ρ² = 0.33 for the padded convolutions (pooling floors aside); LeNet's unpadded 5×5
    # convolutions lose their 4-pixel border at every side length, so it shrinks faster
    low = 0.05 if base == "lenet5" else 0.25
    assert low <= ratio <= 0.45, ratio


def test_minion_grid_sides_and_tags():
    assert [minions.input_px(r) for r in minions.RHOS] == [28, 24, 20, 16]
    assert minions.minion_tag("lenet5", 1.0, 1.0) == "lenet5"
    assert minions.minion_tag("convnet", 0.25, 0.57) == "convnet-a0.25-r16"
    assert len(minions.grid(minions.FASHION_BASES, minions.ALPHAS, minions.RHOS)) == 48


# ----------------------------------------------------------------------------- made-up pools

def _made_up(n=3000, k=10, seed=0, accs=None):
    """Probabilities of models with the given accuracies: right answers are more confident."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    accs = accs or {"m_a": 0.72, "m_b": 0.78, "m_c": 0.84, "m_d": 0.80, "master": 0.92}
    probs = {}
    for name, acc in accs.items():
        right = rng.random(n) < acc
        pred = np.where(right, y, (y + rng.integers(1, k, n)) % k)
        logits = rng.normal(0, 1, (n, k))
        logits[np.arange(n), pred] += np.where(right, rng.gamma(4, 1.0, n), rng.gamma(1.5, 1.0, n))
        probs[name] = softmax(logits)
    return probs, y


LAT = {"m_a": 1e-4, "m_b": 1.5e-4, "m_c": 3e-4, "m_d": 2e-4, "master": 1e-3}


@pytest.mark.parametrize("per_class", [False, True])
def test_two_stage_calibration_meets_its_target_on_the_calibration_half(per_class):
    probs, y = _made_up()
    need = mmnet.needed(probs, "master", y, 1.0)
    fit = mmnet.fit_two_stage("m_a", "m_c", "master", probs, y, need, LAT, per_class)
    final, exit_stage = simulate(fit.policy, probs)
    assert fit.met and int((final == y).sum()) == fit.correct >= need
    assert fit.reach[0] == 1.0 and fit.reach[2] < 1.0
    expected = sum(r * LAT[m] for r, m in zip(fit.reach, ["m_a", "m_c", "master"]))
    assert fit.cost_s == pytest.approx(expected)
    assert fit.cost_s < LAT["master"]
    # a target above what the Master can reach is reported as not met
    assert not mmnet.fit_two_stage("m_a", "m_c", "master", probs, y, need + 400, LAT, per_class).met


def test_exhaustive_selection_is_the_cheapest_pair_and_the_heuristic_is_never_cheaper():
    probs, y = _made_up(n=1500, seed=1)
    need = mmnet.needed(probs, "master", y, 1.0)
    cands = ["m_a", "m_b", "m_c", "m_d"]
    exh = mmnet.select_exhaustive("master", cands, probs, y, need, LAT, z=0.0)
    heur = mmnet.select_heuristic("master", cands, probs, y, need, LAT, width=2, z=0.0)
    assert exh.best is not None and heur.best is not None
    brute = [mmnet.best_two_stage(a, b, "master", probs, y, need, LAT, z=0.0) for a in cands for b in cands
             if a != b and LAT[a] + LAT[b] < LAT["master"]]
    assert exh.tried == len(brute) == 12
    assert exh.best.cost_s == pytest.approx(min(f.cost_s for f in brute if f.met))
    assert heur.tried <= 4 and heur.best.cost_s >= exh.best.cost_s - 1e-15
    single = mmnet.single_minion("master", cands, probs, y, need, LAT, z=0.0)
    assert single is not None and single.met and single.cost < LAT["master"]


def test_the_margin_rejects_rules_that_trade_gains_for_losses():
    probs, y = _made_up(n=1500, seed=3)
    need = mmnet.needed(probs, "master", y, 1.0)
    master_ok = probs["master"].argmax(1) == y
    assert mmnet.keeps_margin(master_ok, master_ok, need, 1.0)           # the Master itself: 0 ≥ 0
    swapped = master_ok.copy()
    wrong, right = np.flatnonzero(~master_ok)[:30], np.flatnonzero(master_ok)[:30]
    swapped[wrong], swapped[right] = True, False                         # 30 gains, 30 losses
    assert int(swapped.sum()) == need and not mmnet.keeps_margin(swapped, master_ok, need, 1.0)
    assert mmnet.keeps_margin(swapped, master_ok, need, 0.0)
    for per_class in (False, True):
        fit = mmnet.fit_two_stage("m_a", "m_c", "master", probs, y, need, LAT, per_class, z=1.0)
        ok = simulate(fit.policy, probs)[0] == y
        assert fit.usable == (fit.met and mmnet.keeps_margin(ok, master_ok, need, 1.0))


def test_no_pair_when_the_minions_cost_as_much_as_the_master():
    probs, y = _made_up(seed=2)
    need = mmnet.needed(probs, "master", y, 1.0)
    lat = {**LAT, "master": 2e-4}   # only m_a + m_b... none sums below the Master
    sel = mmnet.select_exhaustive("master", ["m_a", "m_b", "m_c", "m_d"], probs, y, need, lat)
    assert sel.best is None and sel.tried == 0 and "alone" in sel.message


# ----------------------------------------------------------------------------- placement

@pytest.mark.parametrize("net", ["LTE", "WiFi", "3G"])
@pytest.mark.parametrize("master_s", [1e-3, 0.05, 2.0])
def test_master_placement_follows_the_selector_latency_models(net, master_s):
    dev = Device()
    mc = mmnet.place_master(NETWORKS[net], dev, 784, master_s)
    c = costs(NETWORKS[net], dev, 784, 0.0, master_s)
    assert mc.where == ("device" if c.big_local_s <= c.cloud_s else "cloud")
    assert mc.seconds == pytest.approx(min(c.big_local_s, c.cloud_s))
    assert mc.joules == pytest.approx(c.big_local_j if mc.where == "device" else c.cloud_j)
    if mc.where == "cloud":
        assert mc.transfer_s > 0 and mc.compute_s == pytest.approx(master_s / dev.cloud_speedup)
    else:
        assert mc.transfer_s == 0.0


def test_placement_turns_to_the_cloud_for_slow_masters_first_on_wifi():
    dev = Device()
    wifi = mmnet.place_master(NETWORKS["WiFi"], dev, 3072, 0.06)
    lte = mmnet.place_master(NETWORKS["LTE"], dev, 3072, 0.06)
    assert (wifi.where, lte.where) == ("cloud", "device")
    assert mmnet.place_master(NETWORKS["LTE"], dev, 3072, 1e-3).where == "device"


# ----------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("argv, words", [
    (["mmnet", "--network", "5g"], "--network"),
    (["mmnet", "--target", "0"], "--target"),
    (["mmnet", "--grid", "huge"], "--grid"),
    (["mmnet", "--minion-epochs", "0"], "--minion-epochs"),
    (["mmnet", "--margin-z", "-1"], "--margin-z"),
    (["mmnet", "--pool", "lenet5"], "at least two"),
    (["mmnet", "--pool", "lenet5,convnet", "--masters", "minivgg"], "--masters"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- study and report

def test_study_on_a_made_up_pool_writes_json_markdown_and_plots(tmp_path):
    from sieve.runtime.mmnet_report import write_mmnet
    from sieve.runtime.mmnet_study import run_mmnet

    probs, y = _made_up(n=4000, seed=4)
    logits = {m: np.log(p) for m, p in probs.items()}
    half = slice(0, 2000), slice(2000, 4000)
    val = {m: v[half[0]] for m, v in logits.items()}
    test = {m: v[half[1]] for m, v in logits.items()}
    cands = {"master": ["m_a", "m_b", "m_c", "m_d"]}
    res = run_mmnet(val, test, y[half[0]], y[half[1]], {}, torch.zeros(2, 1, 28, 28), ["master"], cands,
                    1.0, networks=("LTE", "WiFi"), progress=False, per_image=LAT, dataset="made-up")
    assert [r["network"] for r in res["rows"]] == ["LTE", "WiFi"]
    assert res["fit_images"] + res["check_images"] == 2000
    for r in res["rows"]:
        assert r["placement"]["where"] == "device"            # 1 ms here beats any round trip
        mm = r["mmnet"]
        parts = sum(v for k, v in mm["latency_s"].items() if k != "total")
        assert mm["latency_s"]["total"] == pytest.approx(parts)
        assert r["mobile_only"]["latency_s"]["total"] == pytest.approx(LAT["master"])
        assert r["cloud_only"]["latency_s"]["transfer"] > 0
        if r["deployed"]:
            assert mm["latency_s"]["total"] < LAT["master"] and mm["reach"][0] == 1.0
        assert {"gains", "losses", "p_worse", "holds"} <= set(mm["verdict"])
    assert res["lookup"]["LTE"][0]["master"] == "master"
    path = write_mmnet({**res, "minions": []}, tmp_path / "out")
    text = path.read_text()
    assert "Lookup table" in text and "second Minion" in text
    for name in ("mmnet.json", "latency.png", "energy.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
