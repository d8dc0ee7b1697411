"""SIEVE's CNN selector: answer on the device, in the cloud, or speculate and recover.

A mobile device holds the little (compressed) model; the cloud holds the big one.  For every
input the selector compares (dissertation §4.3)

    cloud:        E_t  = radio energy to send the input and receive the answer
                         (+ the radio's power while it waits for the cloud)
    speculation:  E_m + P_r · E_t   (little on the device, recover through the cloud when the
                                      misspeculation detector doubts the answer)

and the same for latency, where P_r is the recovery probability.  Because consecutive inputs
of a camera stream are similar, P_r is estimated per input from the *speculation history*:
an exponential moving average of whether recent inputs needed recovery.

Modes
  normal          — 100 % target thresholds; pick the lower expected energy per input.
  mission-critical — 100 % target thresholds; pick the lower expected latency per input.
  power-saving    — 99 % target thresholds (fewer recoveries); pick the lower expected energy.
  private         — nothing leaves the device: little model, recovery with the big model on
                    the device itself.

Network model (energy on the device's side):
  time to send b bits at u Mbps: t_u = b / (u·10^6); radio power while sending
  P_u = α_u·u + β, while receiving P_d = α_d·d + β (Huang et al., "A Close Examination of
  Performance and Power Characteristics of 4G LTE Networks", MobiSys 2012, the throughput-
  based power model of their §5 and its fitted parameters, Table 3).  While waiting for the
  round trip and the cloud's compute the radio stays in its connected state at β.  Promotion
  and tail energy are left out: a stream keeps the radio connected.
Compute: the device's compute time is the little model's latency *measured on this machine*
(``device_slowdown`` scales it for a slower phone); its power ``device_power_w`` is an assumed
active power of a mobile SoC; the cloud runs the big model ``cloud_speedup`` times faster
than this machine.  All of these are parameters, printed in every report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from . import detector
from .probes import softmax


@dataclass(frozen=True)
class Network:
    """Throughput (Mbps), power-model coefficients (mW per Mbps, mW) and round trip (ms)."""

    name: str
    up_mbps: float
    down_mbps: float
    alpha_up: float
    alpha_down: float
    beta: float
    rtt_ms: float


# α_u, α_d, β: Huang et al. MobiSys 2012, Table 3 (LTE 438.39 / 51.97 / 1288.04 mW,
# 3G 868.98 / 122.12 / 817.88 mW, WiFi 283.17 / 137.01 / 132.86 mW).
# LTE throughput: the same paper's median LTE downlink 13 Mbps and uplink 6 Mbps (abstract,
# §4); LTE RTT about 70 ms (their §4 measurements).  3G and WiFi throughput and RTT are
# representative values of the kind Neurosurgeon (Kang et al., ASPLOS 2017, §3 / Table 3:
# 3G, LTE and Wi-Fi uplink rates) works with; they are parameters, not measurements of ours.
NETWORKS = {
    "3G": Network("3G", up_mbps=1.1, down_mbps=2.0, alpha_up=868.98, alpha_down=122.12, beta=817.88, rtt_ms=200.0),
    "LTE": Network("LTE", up_mbps=6.0, down_mbps=13.0, alpha_up=438.39, alpha_down=51.97, beta=1288.04, rtt_ms=70.0),
    "WiFi": Network("WiFi", up_mbps=18.88, down_mbps=54.97, alpha_up=283.17, alpha_down=137.01, beta=132.86, rtt_ms=30.0),
}

MODES = ("normal", "mission-critical", "power-saving", "private")


@dataclass(frozen=True)
class Device:
    """Assumed device/cloud parameters (see module docstring)."""

    device_power_w: float = 2.0
    device_slowdown: float = 1.0
    cloud_speedup: float = 10.0
    result_bytes: int = 64


def transfer(net: Network, up_bytes: float, down_bytes: float) -> tuple[float, float]:
    """(seconds, joules) for one upload + download over ``net`` including the round trip."""
    t_up = up_bytes * 8 / (net.up_mbps * 1e6)
    t_down = down_bytes * 8 / (net.down_mbps * 1e6)
    e_up = (net.alpha_up * net.up_mbps + net.beta) * 1e-3 * t_up
    e_down = (net.alpha_down * net.down_mbps + net.beta) * 1e-3 * t_down
    rtt = net.rtt_ms * 1e-3
    return t_up + t_down + rtt, e_up + e_down + net.beta * 1e-3 * rtt


@dataclass
class Costs:
    """Per-input latency (s) and device energy (J) of each way to answer."""

    cloud_s: float
    cloud_j: float
    little_s: float
    little_j: float
    big_local_s: float
    big_local_j: float


def costs(net: Network, dev: Device, input_bytes: int, little_s: float, big_s: float) -> Costs:
    t_net, e_net = transfer(net, input_bytes, dev.result_bytes)
    cloud_compute = big_s / dev.cloud_speedup
    return Costs(
        cloud_s=t_net + cloud_compute,
        cloud_j=e_net + net.beta * 1e-3 * cloud_compute,  # radio stays connected while the cloud works
        little_s=little_s * dev.device_slowdown,
        little_j=little_s * dev.device_slowdown * dev.device_power_w,
        big_local_s=big_s * dev.device_slowdown,
        big_local_j=big_s * dev.device_slowdown * dev.device_power_w)


def stream_order(labels: np.ndarray, run: int = 8, seed: int = 0) -> np.ndarray:
    """A camera-like stream: runs of ``run`` consecutive inputs of the same class, runs shuffled."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        runs += [idx[i:i + run] for i in range(0, len(idx), run)]
    order = rng.permutation(len(runs))
    return np.concatenate([runs[i] for i in order])


def simulate_stream(recover: np.ndarray, correct_spec: np.ndarray, correct_cloud: np.ndarray,
                    c: Costs, mode: str, p_prior: float, history: bool = True,
                    window: int = 4, prior_weight: float = 2.0) -> dict:
    """Walk a stream of inputs and decide each one; totals per input.

    ``recover[i]``: the detector doubts input i's little answer; ``correct_spec[i]``: the
    speculative path (little, or recovery when doubted) is right; ``correct_cloud[i]``: big is right.
    With ``history`` the recovery probability of the next input is estimated from the last
    ``window`` speculated inputs, shrunk towards the calibrated rate ``p_prior`` with the weight
    of ``prior_weight`` inputs; without it every input uses ``p_prior``.
    """
    from collections import deque

    n = len(recover)
    recent: deque = deque(maxlen=window)
    energy = latency = right = offloaded = 0.0
    for i in range(n):
        if mode == "private":
            e = c.little_j + (c.big_local_j if recover[i] else 0.0)
            t = c.little_s + (c.big_local_s if recover[i] else 0.0)
            energy, latency, right = energy + e, latency + t, right + correct_spec[i]
            continue
        est = (prior_weight * p_prior + sum(recent)) / (prior_weight + len(recent)) if history else p_prior
        if mode == "mission-critical":
            speculate = c.little_s + est * c.cloud_s < c.cloud_s
        else:
            speculate = c.little_j + est * c.cloud_j < c.cloud_j
        if speculate:
            e = c.little_j + (c.cloud_j if recover[i] else 0.0)
            t = c.little_s + (c.cloud_s if recover[i] else 0.0)
            ok = correct_spec[i]
            offloaded += float(recover[i])
            recent.append(float(recover[i]))
        else:
            e, t, ok = c.cloud_j, c.cloud_s, correct_cloud[i]
            offloaded += 1.0
            recent.append(p_prior)  # nothing learnt about the little model: decay towards the prior
        energy, latency, right = energy + e, latency + t, right + ok
    return {"energy_mj": 1e3 * energy / n, "latency_ms": 1e3 * latency / n,
            "accuracy": right / n, "offloaded": offloaded / n}


def run_selector_study(pool, target: float = 1.0, progress: bool = True, dev: Device = Device(),
                       run: int = 8) -> dict:
    """``sieve selector``: the cheapest model is on the device, the best one in the cloud."""
    from .sources import measure_latencies, per_image_latency

    names = pool.names
    timings = measure_latencies({m: pool.models[m] for m in names}, pool.test_images, [1], reps=7)
    per_image = {m: per_image_latency(timings[m]) for m in names}  # batch 1: one input at a time
    vp = {m: softmax(pool.val_logits[m]) for m in names}
    tp = {m: softmax(pool.test_logits[m]) for m in names}
    yv, yt = pool.val_labels, pool.test_labels
    little = min(names, key=lambda m: per_image[m])
    big = max(names, key=lambda m: (int((vp[m].argmax(1) == yv).sum()), -per_image[m]))
    big_correct = int((vp[big].argmax(1) == yv).sum())
    rules = {t: detector.fit(vp[little], vp[big], yv, big_correct, t, "max_softmax", True)
             for t in (target, 0.99 * target)}
    order = stream_order(yt, run)
    shape = pool.test_images.shape[1:]
    input_bytes = int(np.prod(shape))  # one byte per pixel and channel, as a camera sends it
    cloud_ok = (tp[big].argmax(1) == yt)[order]
    little_ok = (tp[little].argmax(1) == yt)[order]
    rows = []
    for net in NETWORKS.values():
        c = costs(net, dev, input_bytes, per_image[little], per_image[big])
        base = {"network": net.name, "costs": asdict(c),
                "cloud_only": {"energy_mj": 1e3 * c.cloud_j, "latency_ms": 1e3 * c.cloud_s,
                               "accuracy": float(cloud_ok.mean()), "offloaded": 1.0},
                "device_only_big": {"energy_mj": 1e3 * c.big_local_j, "latency_ms": 1e3 * c.big_local_s,
                                    "accuracy": float(cloud_ok.mean()), "offloaded": 0.0},
                "device_only_little": {"energy_mj": 1e3 * c.little_j, "latency_ms": 1e3 * c.little_s,
                                       "accuracy": float(little_ok.mean()), "offloaded": 0.0},
                "modes": {}}
        for mode in MODES:
            rule = rules[0.99 * target] if mode == "power-saving" else rules[target]
            rec_v = rule.recover_mask(vp[little])
            rec = rule.recover_mask(tp[little])[order]
            spec_ok = np.where(rec, cloud_ok, little_ok)
            for hist in (True, False):
                key = mode if hist else f"{mode} (no history)"
                if mode == "private" and not hist:
                    continue
                base["modes"][key] = simulate_stream(rec, spec_ok, cloud_ok, c, mode, float(rec_v.mean()), hist)
        rows.append(base)
    return {"dataset": pool.dataset, "little": little, "big": big, "target": target,
            "latency_s": per_image, "device": asdict(dev), "input_bytes": input_bytes,
            "stream_run_length": run, "networks": {k: asdict(v) for k, v in NETWORKS.items()},
            "rules": {str(t): r.to_json() for t, r in rules.items()}, "rows": rows,
            "calibration_images": int(len(yv)), "test_images": int(len(yt))}
