"""Issue 15's cost measures: channels-last evaluation of ImageNet-size inputs (same roundings,
same layout through the prefix cache's spill files), the batch cap that bounds one batch's
activations, and approximate taking the accurate plan when the two targets are one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sieve import Format
from sieve.batch_memory import largest_activation_bytes, memory_batch_size
from sieve.emulator import quantize as golden
from sieve.prefix_store import PrefixStore, state_bytes
from sieve.qeval import PrefixEvaluator, quantize_tensor, wants_channels_last
from sieve.search import run_search
from sieve.search.greedy import identical_targets

from .search_models import tiny_problem


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


class PoolNet(nn.Module):
    """A small ImageNet-shaped CNN: conv, ceil-mode max pooling, conv, global pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        return self.fc(h.mean((2, 3)))


FORMATS = [Format(4, 3, 7), Format(3, 2, 3, signed=False), Format(5, 2, 15, subnormals=True),
           Format(4, 3, 7, specials="ieee"), Format(2, 1, 1, rounding="truncate")]


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_rounding_a_channels_last_tensor_keeps_its_layout_and_the_emulators_values(fmt) -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 5, 7, 6, generator=g) * 40).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, :3] = torch.tensor([float("inf"), float("nan"), -0.0])
    q = quantize_tensor(x, fmt)
    assert q.is_contiguous(memory_format=torch.channels_last) and not q.is_contiguous()
    want = golden(x.contiguous().numpy(), fmt)
    assert np.array_equal(q.contiguous().numpy().view(np.int32), want.view(np.int32))


def test_only_imagenet_size_inputs_run_channels_last() -> None:
    assert wants_channels_last(torch.zeros(2, 3, 64, 64))
    assert not wants_channels_last(torch.zeros(2, 3, 32, 32))  # CIFAR keeps row-major (and its figures)
    assert not wants_channels_last(torch.zeros(2, 784))


def _images(n=12, size=67, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_channels_last_evaluator_leaves_the_callers_model_alone_and_agrees_in_fp32() -> None:
    torch.manual_seed(0)
    model = PoolNet().eval()
    images = _images()
    ev = PrefixEvaluator(model, images, batch_size=5)
    assert ev.channels_last and model.conv1.weight.is_contiguous()  # the copy is channels-last, not the model
    with torch.no_grad():
        want = model(images)
    assert torch.allclose(ev.run({}), want, atol=1e-5, rtol=1e-5)
    row_major = PrefixEvaluator(model, images, batch_size=5, channels_last=False)
    assert not row_major.channels_last and torch.equal(row_major.run({}), want)


def test_spilled_channels_last_states_come_back_exact(tmp_path) -> None:
    torch.manual_seed(0)
    model = PoolNet().eval()
    images = _images()
    free = PrefixEvaluator(model, images, batch_size=4)
    free.run({}, checkpoint="conv2")
    limit = state_bytes(next(iter(free.states.values()))) // 3
    store = PrefixStore(limit, tmp_path / "spill")
    bounded = PrefixEvaluator(model, images, batch_size=4, store=store)
    bounded.run({}, checkpoint="conv2")
    assert store.spilled > 0
    for plan in ({"conv2.input": Format(3, 2, 3, signed=False)}, {"conv2.weight": Format(2, 3), "fc.input": Format(4, 1)}):
        assert torch.equal(bounded.run(plan), free.run(plan))
    assert bounded.nodes_run == free.nodes_run  # both restarted from the (spilled) state
    store.close()


def test_batch_cap_bounds_the_largest_activation() -> None:
    model = PoolNet().eval()
    per_image = largest_activation_bytes(model, (3, 67, 67))
    assert per_image == 4 * 16 * 33 * 33  # conv1's output, larger than the input (3 x 67 x 67)
    assert memory_batch_size(model, (3, 67, 67), 500, budget=10 * per_image) == 10
    assert memory_batch_size(model, (3, 67, 67), 7, budget=10 * per_image) == 7  # never more than asked
    assert memory_batch_size(model, (3, 67, 67), 500, budget=1) == 1


def test_approximate_takes_the_accurate_plan_when_its_allowance_is_zero(tmp_path) -> None:
    model, data = tiny_problem(residual=True, n_val=600, n_test=400)
    with pytest.warns(UserWarning):  # (splits this small draw the search's warnings)
        doc = run_search(model, data, model_name="tiny", out_dir=tmp_path, progress=False)
    v = doc["variants"]
    assert [t["format"] for t in v["approximate"]["tensors"]] == [t["format"] for t in v["accurate"]["tensors"]]
    rec = v["approximate"]["tightening"]
    assert rec["same_target"] and not v["accurate"]["tightening"]["same_target"]
    assert "was not searched again" in (tmp_path / "report.md").read_text()
    # a strategy that searches approximate itself does not claim it took the accurate plan
    with pytest.warns(UserWarning):
        uniform = run_search(model, data, model_name="tiny", strategy="uniform", out_dir=tmp_path / "u", progress=False)
    assert not uniform["variants"]["approximate"]["tightening"]["same_target"]
    assert "was not searched again" not in (tmp_path / "u" / "report.md").read_text()


def test_identical_targets_follows_the_allowance() -> None:
    class Ctx:
        def __init__(self, correct):
            self.base_correct = correct

        def need(self, variant):
            import math

            return math.ceil({"accurate": 1.0, "approximate": 0.999}[variant] * self.base_correct - 1e-9)

    assert identical_targets(Ctx(999)) and not identical_targets(Ctx(1000))


@pytest.mark.parametrize("size", [8, 67])  # row-major and channels-last evaluators
def test_an_evaluator_of_a_subset_shares_the_split_and_gives_the_copys_logits(size) -> None:
    torch.manual_seed(0)
    model = PoolNet().eval()
    images = _images(n=11, size=max(size, 16) if size == 8 else size)
    pick = torch.tensor([9, 2, 4, 0, 7])
    shared = PrefixEvaluator(model, images, batch_size=2, indices=pick)
    copied = PrefixEvaluator(model, images[pick], batch_size=2)
    assert shared.images is images and shared.n == 5  # no copy of the split
    plan = {"conv2.input": Format(3, 2, 3, signed=False), "fc.weight": Format(2, 3)}
    assert torch.equal(shared.run(plan, checkpoint="conv2"), copied.run(plan, checkpoint="conv2"))
    assert torch.equal(shared.run({"fc.input": Format(4, 1)}), copied.run({"fc.input": Format(4, 1)}))


# ---------------------------------------------------------------- session 7: cheaper evaluations
class _FakeUnit:
    """What a width walk sees of a unit: ``dense`` and real bits per step."""

    def __init__(self, bits, dense):
        self._b, self.dense = bits, dense

    def bits(self, i):
        return self._b[i] if i < len(self._b) else 32.0


def _step_by_step(unit, i, look, ok):
    """The walk as it was written before session 7: every step in turn."""
    from sieve.search.greedy import within

    j = i - 1
    while j >= 0 and within(unit, j, i, look):
        if ok(j):
            i = j
        j -= 1
    return i


@pytest.mark.parametrize("dense", [False, True], ids=["scalar", "dense"])
def test_narrowest_first_walk_reaches_the_step_by_step_walks_step_with_fewer_passing_runs(dense) -> None:
    from sieve.search.greedy import _walk_down

    rng = np.random.default_rng(7)
    fewer = 0
    for trial in range(3000):
        n = int(rng.integers(1, 14))
        bits = np.sort(rng.choice(np.arange(2, 17) + (0.5 * rng.random(15) if dense else 0), n, replace=False))
        unit = _FakeUnit(list(bits), dense)
        passes = rng.random(n) < rng.random()
        look = int(rng.integers(-1, 3))
        start = int(rng.integers(0, n + 1))
        runs = {"new": [], "old": []}

        def ok_for(label):
            def ok(j):
                runs[label].append(j)
                return bool(passes[j])
            return ok

        assert _walk_down(unit, start, look, ok_for("new")) == _step_by_step(unit, start, look, ok_for("old"))
        passed_new = sum(passes[j] for j in set(runs["new"]))
        passed_old = sum(passes[j] for j in set(runs["old"]))
        assert passed_new <= passed_old and set(runs["new"]) <= set(runs["old"])
        fewer += passed_new < passed_old
    assert fewer > 100  # it does save passing runs


def test_a_hinted_walk_starts_at_the_hints_widths_or_the_narrowest_step_as_wide() -> None:
    from sieve.search.formats import Candidate  # noqa: F401  (the ladder's element type)
    from sieve.search.greedy import _hinted_step

    class Unit:
        def __init__(self, steps):
            self.steps = steps
            self.infos = [type("I", (), {"name": k})() for k in steps[0]]

        def formats(self, i):
            return dict(self.steps[i])

    a4, a6, a8 = Format(3, 0, 3), Format(3, 2, 3), Format(4, 3, 7)
    unit = Unit([{"x": a4, "y": a4}, {"x": a6, "y": a4}, {"x": a6, "y": a6}, {"x": a8, "y": a8}])
    assert _hinted_step(unit, {"x": a6, "y": a4}) == 1            # the hint's own step
    assert _hinted_step(unit, {"x": a4, "y": a6}) == 2            # narrowest step at least as wide
    assert _hinted_step(unit, {"x": Format(5, 10, 15), "y": a4}) == 4  # none as wide: fp32
    assert _hinted_step(unit, {"x": a6}) == 4                     # the hint lacks a tensor: fp32


def test_cpu_runs_cache_sized_batches_that_divide_the_judged_batch() -> None:
    from sieve.batch_memory import CACHE_BUDGET, run_batch_size

    model = PoolNet()
    per_image = largest_activation_bytes(model, (3, 67, 67))
    run = run_batch_size(model, (3, 67, 67), 500, "cpu")
    assert 1 < run < 500 and 500 % run == 0 and run * per_image <= CACHE_BUDGET
    assert run_batch_size(model, (3, 67, 67), 7, "cpu") in (1, 7)
    assert run_batch_size(model, (3, 67, 67), 500, "cuda") == 500  # a GPU keeps large batches


class _RuleContext:
    """A search context whose plans pass when every tensor is at least as wide as it needs
    (so the narrowest passing width of each tensor is known), counting the runs that pass."""

    def __init__(self, need):
        from sieve.qeval import TensorInfo

        self.need = need
        self.infos = [TensorInfo(name, "weight", 1000, name[:-7], (10, 100)) for name in need]
        self.base_correct = 0
        self.passing_runs = 0
        self.stage = ""

    def evaluate(self, plan, sset, variant, checkpoint=None):
        passed = all(plan.get(name) is None or plan[name].width >= w for name, w in self.need.items())
        self.passing_runs += passed
        return type("Out", (), {"passed": passed, "evaluated": 1, "complete": False})()

    def step(self, count=1):
        pass


def test_a_tightening_walk_from_a_floor_plan_passes_once_per_tensor_and_finds_the_same_widths() -> None:
    from sieve.search.formats import Candidate
    from sieve.search.greedy import _greedy_pass, _Unit

    widths = range(4, 14)
    ladder = [Candidate(Format(3, w - 4, 3), 2.0 ** -(w - 3)) for w in widths]  # signed e3, width w
    need = {"a.weight": 9, "b.weight": 7, "c.weight": 11}
    seed = {name: ladder[-1].fmt for name in need}  # every tensor at 13 bits: passes
    floor = {"a.weight": ladder[2].fmt, "b.weight": ladder[1].fmt, "c.weight": ladder[4].fmt}  # 6, 5, 8 bits

    results = {}
    for label, hint in (("down", None), ("from floor", floor)):
        ctx = _RuleContext(need)
        units = [_Unit([info], {info.name: ladder}) for info in ctx.infos]
        sset = type("Set", (), {"size": 100})()
        plan = _greedy_pass(ctx, sset, "exact", units, [], None, seed=dict(seed), hint=hint)
        results[label] = ({k: f.width for k, f in plan.items()}, ctx.passing_runs)
    assert results["down"][0] == results["from floor"][0] == need
    assert results["from floor"][1] == len(need) < results["down"][1]
