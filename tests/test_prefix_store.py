"""--cache-mem: the prefix cache stays under its RAM bound (states beyond it spill to disk,
exact) and every result is the one the unbounded cache gives."""

from __future__ import annotations

import pytest
import torch

from sieve import Format
from sieve.cli.main import main
from sieve.errors import SieveError
from sieve.prefix_store import PrefixStore, parse_size, state_bytes
from sieve.qeval import PrefixEvaluator
from sieve.search import run_search

from .search_models import tiny_problem


@pytest.mark.parametrize("text, size", [("2G", 2 << 30), ("512M", 512 << 20), ("1.5k", 1536), ("4096", 4096),
                                        ("3GiB", 3 << 30), (0, 0), ("64KB", 64 << 10)])
def test_parse_size(text, size) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "2X", "-1", "", "1e9"])
def test_parse_size_refuses_what_is_not_a_size(bad) -> None:
    with pytest.raises(SieveError, match="not a size like 2G"):
        parse_size(bad)


PLANS = [({"conv2.input": Format(4, 3)}, "fc1"), ({"conv2.input": Format(4, 3), "fc1.input": Format(3, 1)}, None),
         ({"conv2.input": Format(4, 3), "fc1.weight": Format(2, 2)}, "fc2"),
         ({"conv2.input": Format(4, 3), "fc1.weight": Format(2, 2), "fc2.input": Format(3, 0)}, None),
         ({"conv2.input": Format(5, 1)}, "fc1"), ({"conv2.input": Format(4, 3), "fc1.input": Format(2, 4)}, None)]


def test_bounded_cache_gives_the_unbounded_logits_under_its_bound(tmp_path) -> None:
    model, data = tiny_problem(residual=True)
    images = data.val.images
    free = PrefixEvaluator(model, images, batch_size=64)
    free.run({}, checkpoint="conv2")
    one_state = state_bytes(next(iter(free.states.values())))
    limit = one_state // 3  # a third of one state fits: most batches go to disk
    store = PrefixStore(limit, tmp_path / "spill")
    bounded = PrefixEvaluator(model, images, batch_size=64, store=store)
    bounded.run({}, checkpoint="conv2")
    for plan, checkpoint in PLANS:
        assert torch.equal(bounded.run(plan, checkpoint=checkpoint), free.run(plan, checkpoint=checkpoint))
    assert bounded.nodes_run == free.nodes_run  # restarts from the spilled states happened alike
    assert store.spilled > 0 and 0 < store.peak <= limit and store.used <= limit
    assert any(tmp_path.joinpath("spill").iterdir())
    store.close()
    assert not any(tmp_path.joinpath("spill").iterdir())


def test_zero_bound_keeps_nothing_in_ram(tmp_path) -> None:
    model, data = tiny_problem()
    store = PrefixStore(0, tmp_path)
    ev = PrefixEvaluator(model, data.val.images, batch_size=100, store=store)
    ref = PrefixEvaluator(model, data.val.images, batch_size=100)
    for plan, checkpoint in PLANS:
        assert torch.equal(ev.run(plan, checkpoint=checkpoint), ref.run(plan, checkpoint=checkpoint))
    assert store.peak == 0 and store.spilled > 0


def test_evicted_and_abandoned_states_give_their_bytes_back(tmp_path) -> None:
    model, data = tiny_problem()
    store = PrefixStore(1 << 30, tmp_path)
    ev = PrefixEvaluator(model, data.val.images, batch_size=100, max_states=1, store=store)
    for plan, checkpoint in PLANS:
        ev.run(plan, checkpoint=checkpoint)
        assert store.used == sum(state_bytes(list(s.batches[i][1] for i in range(len(s))))
                                 for s in ev.states.values())
    ev.run({"fc1.input": Format(2, 0)}, checkpoint="fc2", on_batch=lambda b, out: b < 1)  # stops: not stored
    assert store.used == sum(s.ram_bytes for s in ev.states.values())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_search_under_a_small_bound_gives_the_same_plan(tmp_path) -> None:
    model, data = tiny_problem()
    kw = dict(model_name="tiny", progress=False, report=False, threads=1)
    free = run_search(model, data, cache_mem="1G", **kw)
    small = run_search(model, data, cache_mem="20K", out_dir=tmp_path, **kw)
    assert {v: d["tensors"] for v, d in small["variants"].items()} == {v: d["tensors"] for v, d in free["variants"].items()}
    assert small["evaluations"] == free["evaluations"]
    cache = small["cost"]["prefix_cache"]
    assert cache["spilled_states"] > 0 and cache["peak_ram_bytes"] <= 20 << 10
    assert free["cost"]["prefix_cache"]["spilled_states"] == 0
    assert not list((tmp_path / "cache" / "prefix").glob("*.bin"))  # spill files removed at the end
    import json

    written = json.loads((tmp_path / "plan.json").read_text())["cost"]["prefix_cache"]
    assert written == cache  # plan.json carries the cache record too (it used to be added after writing)


def test_cli_bad_cache_mem_is_one_line(capsys) -> None:
    assert main(["search", "--model", "lenet5", "--cache-mem", "lots", "--quiet"]) == 2
    assert "cache memory 'lots' is not a size like 2G" in capsys.readouterr().err
