"""SIEVE selector: network energy model, decisions per mode, speculation history."""

from __future__ import annotations

import numpy as np
import pytest

from sieve.runtime import selector as S


def test_transfer_follows_the_power_model():
    net = S.Network("x", up_mbps=8.0, down_mbps=16.0, alpha_up=100.0, alpha_down=50.0, beta=1000.0, rtt_ms=50.0)
    t, e = S.transfer(net, up_bytes=1_000_000, down_bytes=0)
    # 8 Mbit at 8 Mbps = 1 s at (100*8 + 1000) mW = 1.8 J, plus 50 ms waiting at 1 W
    assert t == pytest.approx(1.05)
    assert e == pytest.approx(1.8 + 0.05)


def test_published_parameters_present():
    lte = S.NETWORKS["LTE"]
    assert (lte.alpha_up, lte.alpha_down, lte.beta) == (438.39, 51.97, 1288.04)
    assert set(S.NETWORKS) == {"3G", "LTE", "WiFi"}
    # LTE is the least power-efficient radio per bit sent in this model (Huang et al.'s finding)
    per_bit = {k: (n.alpha_up * n.up_mbps + n.beta) / n.up_mbps for k, n in S.NETWORKS.items()}
    assert per_bit["WiFi"] < per_bit["LTE"]


def _costs(little_j, cloud_j):
    return S.Costs(cloud_s=0.1, cloud_j=cloud_j, little_s=0.01, little_j=little_j, big_local_s=0.05, big_local_j=0.1)


def test_modes_decide_as_documented():
    rec = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
    ok = np.ones(8, bool)
    cheap_device = S.simulate_stream(rec, ok, ok, _costs(0.001, 0.1), "normal", p_prior=0.25)
    assert cheap_device["offloaded"] == pytest.approx(2 / 8)  # speculates, offloads only recoveries
    assert cheap_device["energy_mj"] == pytest.approx(1e3 * (0.001 + 0.1 * 2 / 8))
    dear_device = S.simulate_stream(rec, ok, ok, _costs(0.2, 0.1), "normal", p_prior=0.25)
    assert dear_device["offloaded"] == 1.0  # device costs more than the cloud: everything goes up
    private = S.simulate_stream(rec, ok, ok, _costs(0.2, 0.1), "private", p_prior=0.25)
    assert private["offloaded"] == 0.0
    assert private["energy_mj"] == pytest.approx(1e3 * (0.2 + 0.1 * 2 / 8))


def test_history_helps_on_runs_of_doubtful_inputs():
    # runs of 8 inputs that are all doubtful alternate with runs that are all confident
    rec = np.array(([1] * 8 + [0] * 8) * 50, bool)
    ok = np.ones(len(rec), bool)
    c = _costs(0.05, 0.1)  # break-even at P_r = 0.5
    with_h = S.simulate_stream(rec, ok, ok, c, "normal", p_prior=0.45, history=True)
    without = S.simulate_stream(rec, ok, ok, c, "normal", p_prior=0.45, history=False)
    assert with_h["energy_mj"] < without["energy_mj"]


def test_stream_order_is_runs_of_one_class():
    y = np.repeat(np.arange(4), 20)
    order = S.stream_order(y, run=5)
    assert sorted(order.tolist()) == list(range(80))
    runs = y[order].reshape(-1, 5)
    assert (runs == runs[:, :1]).all()
