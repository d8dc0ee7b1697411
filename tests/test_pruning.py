"""Double-shot pruning (sieve.pruning): SNIP's layer rates, the five metrics, masks through
training, determinism, the search's bit count of a pruned model, and the CLI's bad input.
Tiny nets and made-up data only (seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sieve.cli.main import main
from sieve.data import Dataset, Split
from sieve.models import training
from sieve import sparse_storage as storage
from sieve.pruning import masks, metrics, snip
from sieve.pruning.pipeline import Pipeline, Setup
from sieve.qeval import quantizable_tensors
from sieve.search.formats import plan_bits
from tests.search_models import tiny_problem


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.flatten(x))))


def _data(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 4, 4, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return images, labels


# ---------------------------------------------------------------------------- SNIP
def test_snip_keep_counts_sum_to_global_count_and_follow_sensitivities() -> None:
    torch.manual_seed(0)
    model = Tiny()
    images, labels = _data()
    scores = snip.sensitivities(model, images, labels)
    grads_free = all(m.weight.grad is None for _, m in masks.prunable_layers(model))
    assert grads_free                      # the model is left as it was
    k = snip.keep_total(scores, 0.9)
    assert k == round(0.1 * (16 * 12 + 12 * 3))
    keep = snip.layer_keep_counts(snip.global_masks(scores, k))
    assert sum(keep.values()) == k
    # each layer's count is how many of the global top-k scores it holds
    flat = torch.cat([scores[n].flatten() for n in scores])
    threshold = torch.sort(flat, descending=True).values[k - 1]
    for name, s in scores.items():
        assert keep[name] == int((s > threshold).sum()) + min(int((s == threshold).sum()), keep[name])
    # |g ⊙ w| by hand for one weight
    model.zero_grad()
    nn.functional.cross_entropy(model(images), labels).backward()
    assert torch.equal(scores["fc2"], (model.fc2.weight.grad * model.fc2.weight).abs().detach())


def test_snip_counts_follow_made_up_sensitivities() -> None:
    scores = {"a": torch.tensor([[9.0, 8.0], [7.0, 0.1]]), "b": torch.tensor([6.0, 0.2, 0.3, 5.0, 0.4, 0.5])}
    keep = snip.layer_keep_counts(snip.global_masks(scores, 5))
    assert keep == {"a": 3, "b": 2}
    m = snip.global_masks(scores, 5)
    assert m["a"].tolist() == [[1, 1], [1, 0]] and m["b"].tolist() == [1, 0, 0, 1, 0, 0]
    with pytest.raises(Exception, match="sparsity"):
        snip.keep_total(scores, 1.0)


# ---------------------------------------------------------------------------- metrics
def test_each_metric_formula_on_hand_made_tensors() -> None:
    w_i = torch.tensor([1.0, -1.0, 0.5, -2.0, 0.0])
    w_f = torch.tensor([2.0, 1.0, -0.5, -1.0, 0.25])
    expect = {
        "magnitude": [2.0, 1.0, 0.5, 1.0, 0.25],
        "movement": [1.0, 2.0, 1.0, 1.0, 0.25],
        "magnitude_increase": [1.0, 0.0, 0.0, -1.0, 0.25],
        "weighted_movement": [2.0, 2.0, 0.5, 1.0, 0.0625],
        "weighted_magnitude_increase": [2.0, 0.0, 0.0, -1.0, 0.0625],
    }
    assert set(metrics.METRICS) == set(expect)
    for name, values in expect.items():
        assert metrics.METRICS[name](w_i, w_f).tolist() == values, name


def test_layer_masks_keep_the_highest_scores_per_layer() -> None:
    scores = {"x": torch.tensor([0.3, 0.9, 0.1, 0.5])}
    assert masks.layer_masks(scores, {"x": 2})["x"].tolist() == [0, 1, 0, 1]


# ---------------------------------------------------------------------------- masks
def test_masks_persist_through_training_and_remove_leaves_a_plain_state_dict() -> None:
    torch.manual_seed(1)
    model = Tiny()
    mask = (torch.rand(12, 16) < 0.2).float()
    masks.apply(model, {"fc1": mask})
    before = model.fc1.weight_orig.detach().clone()
    images, labels = _data(256)
    rec = {"lr": 1e-2, "weight_decay": 0.0, "batch_size": 32, "epochs": 2, "seed": 3, "threads": 1}
    training.fit(model, rec, images, labels, "tiny")
    w = model.fc1.weight.detach()
    assert torch.all(w[mask == 0] == 0)                      # exactly zero after 16 Adam steps
    assert not torch.equal(model.fc1.weight_orig.detach()[mask == 1], before[mask == 1])   # it did train
    masks.remove(model)
    state = model.state_dict()
    assert set(state) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert torch.all(state["fc1.weight"][mask == 0] == 0)
    report = masks.sparsity(model)
    assert report["layers"]["fc1"]["kept"] == int((state["fc1.weight"] != 0).sum())


def test_random_mask_keeps_the_count() -> None:
    m = masks.random_mask(torch.Size([5, 7]), 9, torch.Generator().manual_seed(0))
    assert int(m.sum()) == 9 and m.shape == (5, 7)


# ---------------------------------------------------------------------------- pipeline
def _fake_fashion(n_train: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_train + 200, 1, 28, 28, generator=g)
    labels = (images[:, 0, 10:18, 10:18].mean((1, 2)) > 0).long() * 3 + torch.randint(0, 2, (n_train + 200,), generator=g)
    train = Split(images[:n_train], labels[:n_train])
    ds = Dataset("fake", [str(i) for i in range(10)], Split(images[n_train:n_train + 100], labels[n_train:n_train + 100]),
                 Split(images[n_train + 100:], labels[n_train + 100:]), "made-up")
    return train, ds


def _states(tmp_path, monkeypatch, sub: str) -> tuple[dict, Pipeline]:
    monkeypatch.setenv("SIEVE_CACHE", str(tmp_path / sub))
    train, ds = _fake_fashion()
    pipe = Pipeline(Setup("lenet300", seed=5, sparsity=0.9, epochs=1, train_images=512), train, ds, "fake-v1")
    out = {m: pipe.run(m).model.state_dict() for m in ("dense", "snip", "random", "doubleshot/weighted_movement")}
    return out, pipe


def test_pipeline_is_deterministic_given_the_seed_and_shares_snips_layer_counts(tmp_path, monkeypatch) -> None:
    first, pipe = _states(tmp_path, monkeypatch, "a")
    second, _ = _states(tmp_path, monkeypatch, "b")          # a fresh cache: everything retrained
    for method in first:
        for key in first[method]:
            assert torch.equal(first[method][key], second[method][key]), (method, key)
    for method in ("snip", "random", "doubleshot/weighted_movement"):
        kept = {n: int(pipe.run(method).model.state_dict()[f"{n}.weight"].ne(0).sum()) for n in pipe.keep}
        assert kept == pipe.keep, method                      # pruned weights stayed exactly zero
    rec = pipe.run("doubleshot/weighted_movement").record
    assert rec["sparsity"]["global"] == pytest.approx(0.9, abs=1e-4)
    # the double-shot net started from the dense net's final weights: its kept values moved on from there
    dense_w = pipe.run("dense").model.fc1.weight
    ds_w = pipe.run("doubleshot/weighted_movement").model.fc1.weight
    kept = ds_w != 0
    assert (ds_w[kept] - dense_w[kept]).abs().mean() < (ds_w[kept] - pipe.w_i["fc1"][kept]).abs().mean()


# ---------------------------------------------------------------------------- storage and search
def _relative_entries_by_hand(positions, b):
    entries, prev = 0, -1
    for p in positions:
        gap = p - prev
        entries += math.ceil(gap / 2**b)
        prev = p
    return entries


def test_relative_index_entries_count_fillers() -> None:
    pos = np.array([0, 5, 40])
    assert storage.relative_entries(pos, 2) == 1 + 2 + 9 == _relative_entries_by_hand(pos, 2)
    layout = storage.sparse_layout(torch.tensor([0.0, 1.0, 0.0, 0.0, 2.0, 0.0]))
    assert layout.nonzero == 2 and layout.elements == 6
    assert storage.sparse_layout(torch.ones(3)) is None
    # 8-bit values: dense 48, bitmap 6 + 16 = 22, relative b=2: 2 entries · 10 = 20 → relative wins
    assert storage.cheapest(layout, 6, 8) == ("relative2", 20)


@pytest.mark.filterwarnings("ignore::sieve.search.driver.SearchWarning")   # tiny splits, said on purpose
def test_search_counts_only_kept_weights_plus_index_of_a_pruned_model() -> None:
    from sieve.search import run_search

    model, data = tiny_problem(n_val=300, n_test=100)
    scores = model.fc1.weight.detach().abs()
    masks.apply(model, {"fc1": masks.top_k_mask(scores, 38)})     # ~10 % of 384 kept
    masks.remove(model)
    doc = run_search(model, data, model_name="tiny-pruned", strategy="uniform", progress=False, report=False,
                     threads=1)
    weights = {n: m.weight.detach() for n, m in masks.prunable_layers(model)}
    for variant, v in doc["variants"].items():
        bits, elements = 0, 0
        for t in v["tensors"]:
            if t["kind"] != "weight":
                continue
            w = weights[t["name"].rsplit(".", 1)[0]].flatten()
            n, width = w.numel(), t["bits"]
            options = [n * width]
            nz = np.flatnonzero(w.numpy())
            if nz.size < n:
                options.append(n + nz.size * width)
                options += [_relative_entries_by_hand(nz, b) * (width + b) for b in range(1, 9)]
            bits += min(options)
            elements += n
        assert v["mean_bits_weights"] == pytest.approx(bits / elements), variant
        dense_bits = sum(t["elements"] * t["bits"] for t in v["tensors"] if t["kind"] == "weight") / elements
        assert v["mean_bits_weights"] < 0.5 * dense_bits, variant     # fc1 dominates and is 90 % zeros
    # a dense model's count is unchanged (no layout attached)
    dense_model, _ = tiny_problem(n_val=10, n_test=10)
    infos = storage.with_sparse_layouts(dense_model, quantizable_tensors(dense_model, (1, 8, 8)))
    assert all(getattr(i, "sparse", None) is None for i in infos)
    assert plan_bits({}, infos)["mean_bits"] == 32.0


# ---------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("argv, words", [
    (["--model", "resnet9"], "unknown network"),
    (["--sparsity", "1.0"], "--sparsity"),
    (["--method", "prune-all"], "--method"),
    (["--method", "doubleshot", "--metric", "speed"], "unknown metric"),
    (["--method", "snip", "--metric", "magnitude"], "--metric applies"),
    (["--seeds", "0"], "--seeds"),
    (["--epochs", "0"], "--epochs"),
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, words) -> None:
    out = tmp_path / "out"
    assert main(["prune", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and words in err and "\n" not in err
    assert not out.exists()
