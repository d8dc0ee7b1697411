"""--device / --batch-size: the CPU default is unchanged, device rounding stays bit-identical to
the emulator, and a GPU that is not there is one error line.  The CUDA tests run unchanged on a
machine with a GPU and skip (with the reason) here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import sieve
from sieve import Format
from sieve.cli.main import main
from sieve.device import resolve_device
from sieve.errors import SieveError
from sieve.qeval import PrefixEvaluator, _round_plain_torch, quantize_tensor
from sieve.search import run_search

from .search_models import tiny_problem
from .test_qeval import _corner_values, _random_values

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU on this machine")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")

# one representative per format family: the search's (signed/unsigned, nearest/truncate, any bias)
# and the special-value conventions with subnormals (the general path)
FAMILIES = [Format(4, 3), Format(5, 10), Format(3, 0, signed=False), Format(4, 3, rounding="truncate"),
            Format(5, 2, bias=-3), Format(8, 7, bias=128), Format(4, 3, subnormals=True),
            Format(5, 2, specials="ieee", overflow="inf", subnormals=True),
            Format(4, 3, specials="fn", overflow="nan", subnormals=True),
            Format(4, 3, specials="fnuz", overflow="nan", subnormals=True)]
SEARCH_FORMATS = [Format(e, m, signed=s, rounding=r)
                  for e, m, s, r in itertools.product((2, 4, 5, 7), (0, 2, 7), (True, False), ("nearest_even", "truncate"))]


def test_auto_is_the_cpu_without_a_gpu() -> None:
    assert resolve_device("auto") == (torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu"))
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "tpu", ""])
def test_unknown_device_spelling_is_refused(bad) -> None:
    with pytest.raises(SieveError, match="not one of cpu|cuda|cuda:N|auto"):
        resolve_device(bad)


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_one_error(spec) -> None:
    with pytest.raises(SieveError, match="no CUDA GPU.*--device cpu"):
        resolve_device(spec)


@no_cuda
@pytest.mark.parametrize("command", [["search", "--model", "lenet5"], ["models", "--eval", "lenet5"],
                                     ["cascade"], ["ensemble"], ["selector"]])
def test_cli_cuda_without_a_gpu_is_one_line_exit_2(command, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--device", "cuda", "--quiet"] if command[0] != "models" else
                [*command, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device 'cuda' requested but torch sees no CUDA GPU"), err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("bad", ["0", "-5"])
def test_cli_bad_batch_size_is_one_line(bad, capsys) -> None:
    assert main(["search", "--model", "lenet5", "--batch-size", bad, "--quiet"]) == 2
    assert "batch size must be a whole number >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", SEARCH_FORMATS, ids=str)
def test_device_path_of_the_fast_rounding_matches_the_emulator(fmt) -> None:
    """The GPU takes the fast path with Inf/NaN handled in place (no host round-trip): run that
    same code on the CPU against the emulator, specials included."""
    x = np.concatenate([_corner_values(fmt), _random_values(20000, 3)])
    bits = torch.from_numpy(x.copy()).view(torch.int32)
    got = _round_plain_torch(bits.view(torch.float32), bits, fmt)
    want = sieve.quantize(x, fmt).view(np.uint32)
    got = got.numpy().view(np.uint32)
    bad = np.flatnonzero(want != got)
    assert bad.size == 0, f"{fmt}: {x.view(np.uint32)[bad[0]]:#x} -> {got[bad[0]]:#x}, emulator {want[bad[0]]:#x}"


def test_batch_size_and_cpu_device_do_not_change_the_plan() -> None:
    model, data = tiny_problem()
    kwargs = dict(model_name="tiny", strategy="uniform", progress=False, report=False, threads=1)
    default = run_search(model, data, **kwargs)
    other = run_search(model, data, device="cpu", batch_size=64, **kwargs)
    assert default["variants"] == other["variants"]


# ---------------------------------------------------------------- on a GPU (skip here)
@needs_cuda
@pytest.mark.parametrize("fmt", FAMILIES, ids=str)
def test_cuda_rounding_bit_identical_to_emulator_on_1e7_values(fmt) -> None:
    rng = np.random.default_rng(15)
    x = np.concatenate([_corner_values(fmt), rng.integers(0, 2**32, size=5_000_000, dtype=np.uint64)
                        .astype(np.uint32).view(np.float32), _random_values(2_500_000, 16)])
    got = quantize_tensor(torch.from_numpy(x).cuda(), fmt).cpu().numpy().view(np.uint32)
    want = sieve.quantize(x, fmt).view(np.uint32)
    bad = np.flatnonzero(want != got)
    assert bad.size == 0, f"{fmt}: {x.view(np.uint32)[bad[0]]:#x} -> {got[bad[0]]:#x}, emulator {want[bad[0]]:#x}"


@needs_cuda
def test_cuda_prefix_evaluator_logits_equal_cpu() -> None:
    model, data = tiny_problem()
    plan = {"conv2.input": Format(4, 3), "conv2.weight": Format(3, 2), "fc1.input": Format(5, 1, signed=False)}
    cpu = PrefixEvaluator(model, data.val.images, batch_size=128).run(plan)
    gpu = PrefixEvaluator(model, data.val.images, batch_size=128, device="cuda").run(plan)
    assert torch.equal(cpu.argmax(1), gpu.argmax(1))


@needs_cuda
def test_cuda_search_gives_the_cpu_plan() -> None:
    model, data = tiny_problem()
    kwargs = dict(model_name="tiny", progress=False, report=False, threads=1)
    cpu = run_search(model, data, device="cpu", **kwargs)
    gpu = run_search(model, data, device="cuda", **kwargs)
    assert {v: d["tensors"] for v, d in gpu["variants"].items()} == {v: d["tensors"] for v, d in cpu["variants"].items()}


@pytest.mark.parametrize("argv, message", [
    (["--ray", "bogus"], "--ray 'bogus' is not one of auto|local|HOST:PORT"),
    (["--ray-workers", "2"], "--ray-workers needs --ray"),
    (["--ray", "local", "--ray-workers", "0"], "--ray-workers needs --ray and a whole number >= 1"),
])
def test_cli_bad_ray_options_are_one_line(argv, message, capsys) -> None:
    """Checked before any model or data is loaded (and without importing Ray)."""
    assert main(["search", "--model", "lenet5", *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err
