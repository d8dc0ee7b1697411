"""--ray: the validation and test splits sharded across Ray actors give the single-process plan,
also when an actor is killed mid-search (it is re-created and its shard re-run)."""

from __future__ import annotations

import pytest
import torch

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")

from sieve.search import run_search  # noqa: E402
from sieve.search.ray_eval import RayEvaluator, RayPool  # noqa: E402

from .search_models import tiny_problem  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
KW = dict(model_name="tiny", progress=False, report=False, threads=1)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def alone():
    model, data = tiny_problem()
    return run_search(model, data, **KW)


def _plans(doc):
    return {v: d["tensors"] for v, d in doc["variants"].items()}




def test_sharded_evaluator_logits_and_early_stop_equal_local(cluster) -> None:
    from sieve.qeval import PrefixEvaluator
    from sieve import Format

    model, data = tiny_problem()
    plan = {"conv2.input": Format(3, 1), "fc1.weight": Format(2, 1)}
    local = PrefixEvaluator(model, data.val.images, batch_size=70)
    pool = RayPool("local", model, workers=2)
    try:
        sharded = pool.evaluator(data.val.images, 70)
        assert [k for k, _ in sharded.shards] == [0, 1]
        assert torch.equal(sharded.run(plan, checkpoint="fc1"), local.run(plan, checkpoint="fc1"))
        stop = lambda b, out: b < 3  # noqa: E731 - the fourth batch rejects
        assert torch.equal(sharded.run(plan, on_batch=stop), local.run(plan, on_batch=stop))
    finally:
        pool.close()


def test_two_workers_give_the_single_process_plan(cluster, alone) -> None:
    model, data = tiny_problem()
    sharded = run_search(model, data, ray="local", ray_workers=2, **KW)
    assert _plans(sharded) == _plans(alone)
    assert sharded["evaluations"] == alone["evaluations"]
    assert {v: d["test_accuracy"] for v, d in sharded["variants"].items()} == \
        {v: d["test_accuracy"] for v, d in alone["variants"].items()}
    assert sharded["cost"]["ray"]["workers"] == 2 and sharded["cost"]["ray"]["restarts"] == 0


def test_killed_actor_is_recreated_and_the_plan_is_unchanged(cluster, monkeypatch) -> None:
    model, data = tiny_problem()
    alone = run_search(model, data, strategy="uniform", **KW)
    real = RayEvaluator._collect
    calls = {"n": 0}

    def kill_then_collect(self, refs, plan, checkpoint):
        calls["n"] += 1
        if calls["n"] == 3:  # mid-search: after the shards were submitted, before they are merged
            ray.kill(self.pool.actors[1])
        return real(self, refs, plan, checkpoint)

    monkeypatch.setattr(RayEvaluator, "_collect", kill_then_collect)
    sharded = run_search(model, data, strategy="uniform", ray="local", ray_workers=2, **KW)
    assert calls["n"] > 3 and sharded["cost"]["ray"]["restarts"] == 1
    assert _plans(sharded) == _plans(alone)
    assert sharded["evaluations"] == alone["evaluations"]


def test_without_ray_flag_nothing_imports_ray() -> None:
    import subprocess
    import sys

    code = ("import sys; from tests.search_models import tiny_problem; from sieve.search import run_search;"
            "import warnings; warnings.simplefilter('ignore');"
            "m, d = tiny_problem(n_val=200, n_test=100);"
            "run_search(m, d, model_name='t', strategy='uniform', progress=False, report=False, threads=1);"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
