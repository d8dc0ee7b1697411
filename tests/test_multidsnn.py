"""Multi-dsNN (dissertation ch. 3) on small made-up problems: partition, selector, dsNN
training determinism, cost arithmetic, the paired verdict, the Pareto choice, the whole
exploration on a synthetic benchmark, and the CLI's one-line errors."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
from torch import nn

from sieve.data import to_split
from sieve.errors import SieveError
from sieve.multidsnn import cost, dsnn, selector
from sieve.multidsnn.partition import confidence_error, partition, thresholds_for_fractions
from sieve.multidsnn.pareto import cheapest_passing, pareto_front
from sieve.stats import margin_passes, mcnemar_worse_p, paired_verdict


# --------------------------------------------------------------------------- error and partition

def test_confidence_error_is_one_minus_max_softmax_and_keeps_confident_inputs_apart() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [60.0, 0.0], [80.0, 0.0]])
    err = confidence_error(logits)
    assert err[0] == pytest.approx(0.5) and err[1] == pytest.approx(0.25)
    # float32 softmax says exactly 1.0 for both confident rows; the errors still order them
    assert torch.softmax(logits, 1)[2:, 0].tolist() == [1.0, 1.0]
    assert 0.0 < err[3] < err[2] < 1e-20


def test_partition_by_threshold_and_tail_fraction() -> None:
    errors = np.linspace(0.0, 1.0, 101)
    assert partition(errors, 0.9).sum() == 10          # 0.91 .. 1.00
    assert not partition(errors, 0.9)[90]              # exactly at the threshold stays in main
    (thr,) = thresholds_for_fractions(errors, [0.2])
    assert partition(errors, thr).sum() == 20
    with pytest.raises(SieveError):
        thresholds_for_fractions(errors, [1.0])


# --------------------------------------------------------------------------- selector

def _tail_problem(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    tail = (x[:, 2] > 0.8) | ((x[:, 0] < -1.0) & (x[:, 4] > 0.0))
    return x, tail


def test_selector_learns_a_threshold_partition_and_router_matches_sklearn() -> None:
    x, tail = _tail_problem()
    tree = selector.fit_tree(x, tail, max_depth=6, seed=0, max_rows=None)
    full = selector.Router(tree, 6)
    routed, compares = full.route(x)
    assert np.array_equal(routed, tree.predict(x).astype(bool))          # same walk as scikit-learn
    assert [full.route_one(row) for row in x[:200]] == list(routed[:200])
    assert selector.balanced_accuracy(routed, tail) > 0.97
    assert selector.routing_error(routed, tail) < 0.03
    assert compares.max() <= 6 and compares.min() >= 1
    # a depth-1 prefix is a single comparison per input and routes worse than the full tree
    one = selector.Router(tree, 1)
    r1, c1 = one.route(x)
    assert set(c1.tolist()) == {1}
    assert selector.balanced_accuracy(r1, tail) < selector.balanced_accuracy(routed, tail)
    assert one.nodes() == 3 and full.nodes() <= tree.tree_.node_count


def test_selector_rejects_one_sided_partitions() -> None:
    x, _ = _tail_problem(100)
    with pytest.raises(SieveError):
        selector.fit_tree(x, np.zeros(100, bool), 3)


def test_misclassification_rate_counts_only_inputs_the_other_dsnn_would_get_right() -> None:
    route_tail = np.array([False, False, True, True, False])
    main_ok = np.array([False, False, True, False, True])
    tail_ok = np.array([True, False, False, True, True])
    # input 0: sent to main (wrong), tail right -> counted; input 1: both wrong -> not;
    # input 2: sent to tail (wrong), main right -> counted; inputs 3, 4: chosen one right
    assert selector.misclassification_rate(route_tail, main_ok, tail_ok) == pytest.approx(2 / 5)


# --------------------------------------------------------------------------- dsNN training

def _toy_data(n=300, features=12, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, :classes].argmax(1)).long()
    return x, y


def test_dsnn_training_is_deterministic_and_cached(tmp_path, monkeypatch) -> None:
    x, y = _toy_data()
    states = []
    for where in ("a", "b"):                        # two empty caches: both really train
        monkeypatch.setenv("SIEVE_CACHE", str(tmp_path / where))
        net = dsnn.train_mlp("dsnn-test", x, y, (8,), 3)
        states.append(net.state_dict())
        assert len(list((tmp_path / where / dsnn.CACHE_KIND).glob("dsnn-test-*.pt"))) == 1
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    torch.manual_seed(dsnn.RECIPE["seed"])
    init = dsnn.build_mlp(12, (8,), 3)
    assert not torch.equal(init.state_dict()["0.weight"], states[0]["0.weight"])   # it did train
    # another subset is another recipe: a second file, different weights
    other = dsnn.train_mlp("dsnn-test", x[:200], y[:200], (8,), 3)
    assert len(list((tmp_path / "b" / dsnn.CACHE_KIND).glob("dsnn-test-*.pt"))) == 2
    assert not torch.equal(other.state_dict()["0.weight"], states[1]["0.weight"])


def test_epochs_scale_with_subset_size() -> None:
    assert dsnn.epochs_for(55000) == 3
    assert dsnn.epochs_for(11000) == math.ceil(dsnn.TARGET_STEPS / math.ceil(11000 / dsnn.BATCH))
    assert dsnn.epochs_for(100) == dsnn.MAX_EPOCHS
    assert dsnn.topology_name(800, (64,), 10) == "800-64-10"
    assert dsnn.topology_name(784, (), 10) == "784-10"


# --------------------------------------------------------------------------- cost model

def test_mac_and_byte_counts() -> None:
    mlp = dsnn.build_mlp(10, (5,), 2)
    assert cost.module_macs(mlp, (10,)) == 10 * 5 + 5 * 2
    assert cost.param_bytes(mlp) == 4 * (10 * 5 + 5 + 5 * 2 + 2)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(18, 4))
    assert cost.module_macs(conv, (1, 5, 5)) == 2 * 3 * 3 * 9 + 18 * 4


def test_energy_and_system_cost_arithmetic() -> None:
    e = cost.EnergyModel()
    assert e.pj_per_mac == pytest.approx(4.6) and e.pj_per_byte == pytest.approx(12.5)
    assert e.energy_pj(1000, 10, 100) == pytest.approx(1000 * 4.6 + 10 * 0.9 + 100 * 12.5)
    pre, main, tail = cost.NetCost(100, 40), cost.NetCost(1000, 400), cost.NetCost(5000, 2000)
    c = cost.system_cost(pre, main, tail, tail_share=0.25, compares=4, node_bytes=80,
                         stored_selector_bytes=160, energy=e)
    assert c["macs_replaced"] == pytest.approx(0.75 * 1000 + 0.25 * 5000)
    assert c["macs_total"] == pytest.approx(100 + 2000)
    assert c["bytes_replaced"] == pytest.approx(0.75 * 400 + 0.25 * 2000 + 80)
    assert c["bytes_total"] == pytest.approx(40 + 880)
    assert c["energy_total_pj"] == pytest.approx(e.energy_pj(2100, 4, 920))
    assert c["stored_bytes"] == 40 + 400 + 2000 + 160
    m = cost.monolith_cost(pre, cost.NetCost(3000, 1200), e)
    assert m["macs_replaced"] == 3000 and m["energy_total_pj"] == pytest.approx(e.energy_pj(3100, 0, 1240))


# --------------------------------------------------------------------------- verdict and Pareto choice

def test_exact_mcnemar_and_verdict() -> None:
    assert mcnemar_worse_p(2, 8) == pytest.approx((45 + 10 + 1) / 1024)
    assert mcnemar_worse_p(0, 0) == 1.0
    ref = np.array([True] * 90 + [False] * 10)
    new = ref.copy()
    new[:8] = False                               # 8 losses
    new[90:92] = True                             # 2 gains
    v = paired_verdict(ref, new)
    assert (v["gains"], v["losses"]) == (2, 8)
    assert v["p_worse"] == pytest.approx(56 / 1024) and v["holds"]      # p = 0.055: not significant
    new[8:10] = False                             # 10 losses: p = 0.019
    assert not paired_verdict(ref, new)["holds"]
    assert margin_passes(5, 1, 100, 1.0, 1.0) and not margin_passes(2, 2, 100, 1.0, 1.0)
    assert margin_passes(2, 2, 100, 1.0, 0.0)
    assert margin_passes(0, 1, 1000, 0.999, 0.0)          # one loss within the 0.1 % slack ...
    assert not margin_passes(0, 1, 1000, 0.999, 1.0)      # ... but not beyond one standard error


def test_pareto_front_and_cheapest_passing_point() -> None:
    pts = [{"id": i, "cost": c, "acc": a} for i, (c, a) in
           enumerate([(1.0, 0.80), (2.0, 0.90), (2.5, 0.85), (3.0, 0.95), (3.0, 0.93), (4.0, 0.95)])]
    assert [p["id"] for p in pareto_front(pts, "cost", "acc")] == [0, 1, 3]
    chosen = cheapest_passing(pts, "cost", lambda p: p["acc"] >= 0.93, tie_break="acc")
    assert chosen["id"] == 3
    assert cheapest_passing(pts, "cost", lambda p: p["acc"] > 0.99) is None


def test_exploration_on_a_synthetic_benchmark(tmp_path, monkeypatch) -> None:
    """Partition -> selector -> dsNN training -> Pareto choice -> held-out verdict, end to end."""
    from sieve.multidsnn.benchmarks import Benchmark
    from sieve.multidsnn.explore import Settings, explore
    from sieve.multidsnn.report import write_report

    monkeypatch.setenv("SIEVE_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(3)
    n = 5000
    x = 3 * torch.randn(n, 1, 4, 4, generator=g)
    flat = x.reshape(n, -1)
    y = (flat @ torch.randn(16, 3, generator=g)).argmax(1)     # a linear teacher, 3 of the 10 classes
    head = dsnn.train_mlp("monolith-toy", flat[:4000], y[:4000], (64,), 10)
    bench = Benchmark("toy", "synthetic", "a made-up problem", None, head, (64,), [(), (8,), (64,)],
                      to_split(x[:4000], y[:4000]), to_split(x[4000:4500], y[4000:4500]),
                      to_split(x[4500:], y[4500:]), input_shape=(1, 4, 4))
    # short trainings on small subsets: the dsNNs reach 64-89 % of the monolith here, so the
    # choice is exercised at a target of 80 %
    settings = Settings(tail_fractions=(0.2, 0.4), depths=(2, 4), target=0.8, margin_z=0.0, latency_inputs=20)
    result, art = explore(bench, settings, progress=False)
    assert result["training"]["trainings"] == 2 * (2 + 3)       # main grid excludes the 64-wide net
    assert len(result["points"]) == 2 * 2 * 4                   # 2 main x (3 tails + monolith) per threshold
    c = result["chosen"]
    assert c is not None and "no_choice" not in result
    passing = [p for p in result["points"] if p["passes_target"]]
    assert passing and all(p["val_normalised"] >= 0.8 - 1e-9 for p in passing)
    assert any(p["val_normalised"] < 0.8 for p in result["points"])
    assert c["val_energy_total_pj"] == min(p["val_energy_total_pj"] for p in passing)
    front = sorted((p for p in result["points"] if p["pareto"]), key=lambda p: p["val_energy_total_pj"])
    assert c["pareto"] and [p["val_accuracy"] for p in front] == sorted(p["val_accuracy"] for p in front)
    assert c["batch1_predictions_match"]
    assert c["test"]["images"] == 500 and 0 <= c["selector"]["test_misclassification"] <= 1
    assert c["reduction_vs_monolith"]["macs_replaced"] == pytest.approx(
        result["monolith"]["cost"]["macs_replaced"] / c["test_cost"]["macs_replaced"])
    report = write_report(result, art, tmp_path / "out")
    for name in ("result.json", "report.md", "error_distribution.png", "pareto.png", "tree.png", "chosen.png"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "McNemar" in report.read_text()


# --------------------------------------------------------------------------- data and CLI

def test_mnist5k_reader_checks_its_file(tmp_path) -> None:
    from sieve.datasets.mnist5k import load_mnist5k

    rows = np.zeros((3, 785), dtype=np.int64)
    rows[:, :784] = 7
    rows[:, 784] = [1, 2, 3]
    good = tmp_path / "ok.csv.gz"
    with gzip.open(good, "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    images, labels, digest = load_mnist5k(good)
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8 and labels.tolist() == [1, 2, 3]
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        np.savetxt(f, rows[:, :100], fmt="%d", delimiter=",")
    with pytest.raises(SieveError):
        load_mnist5k(bad)


@pytest.mark.parametrize("argv", [
    ["--model", "resnet20"],
    ["--model", "lenet5", "--target", "2"],
    ["--model", "lenet5", "--tail-fractions", "0.1,1.5"],
    ["--model", "lenet5", "--depths", "a,b"],
    ["--model", "lenet5,fc300_100", "--out", "x"],
])
def test_cli_bad_input_is_one_line_exit_2(argv, tmp_path, capsys, monkeypatch) -> None:
    from sieve.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["multidsnn", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "build").exists() and not (tmp_path / "x").exists()


def test_selector_text_shows_the_prefix_the_router_uses() -> None:
    x, tail = _tail_problem()
    tree = selector.fit_tree(x, tail, max_depth=6, seed=0, max_rows=None)
    text = selector.Router(tree, 2).describe(levels=5).splitlines()
    # depth 2: two levels of comparisons, then four answers; nothing deeper is shown
    assert sum("<=" in line for line in text) == 3 and sum("->" in line for line in text) == 4
    cut = selector.Router(tree, 6).describe(levels=1).splitlines()
    assert len(cut) == 4 and all("more level" in line for line in cut[1::2])


def test_cli_without_mlxtend_stops_before_any_benchmark(tmp_path, capsys, monkeypatch) -> None:
    import importlib.util

    from sieve.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    monkeypatch.chdir(tmp_path)
    assert main(["multidsnn", "--model", "lenet5,lenet_caffe"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "mlxtend" in err and err.count("\n") == 1
    assert not (tmp_path / "build").exists()
