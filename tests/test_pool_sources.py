"""Runtime pools whose members are ONNX files or PyTorch modules (not only zoo names)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sieve.data import split_test_only
from sieve.errors import SieveError
from sieve.runtime.sources import Member, load_pool, parse_pool
from tests.test_onnx_import import SqueezeNetStyle, VGGStyle, _export


def test_pool_entries_parse_model_sources():
    assert Member.parse("resnet20:accurate") == Member("resnet20", "accurate", "build/search/resnet20/plan.json")
    assert Member.parse("nets/a.onnx:exact") == Member("nets/a.onnx", "exact", "build/search/a/plan.json")
    assert Member.parse("pkg.mod:make") == Member("pkg.mod:make", None, None)
    assert Member.parse("my.py:Net:approximate").plan == "build/search/my.Net/plan.json"
    with pytest.raises(SieveError, match="unknown plan variant 'bogus'"):
        Member.parse("resnet20:bogus")


def test_pool_of_onnx_files_on_npz_data(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    files = []
    for cls in (SqueezeNetStyle, VGGStyle):
        model = cls().eval()
        files.append((_export(model, tmp_path / f"{cls.__name__}.onnx", (3, 32, 32), 13), model))
    x = torch.randn(30, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    data = tmp_path / "d.npz"
    np.savez(data, x=x.numpy(), y=np.arange(30) % 10)
    members = parse_pool(",".join(str(f) for f, _ in files))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pool = load_pool(members, data=str(data), cache=tmp_path / "cache", progress=False)
    assert set(pool.val_logits) == {str(f) for f, _ in files}
    val_idx, test_idx = split_test_only(np.arange(30) % 10, class_ordered=True)   # the .npz split rule
    for f, model in files:
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(pool.val_logits[str(f)], expected[val_idx], atol=1e-5)
        np.testing.assert_allclose(pool.test_logits[str(f)], expected[test_idx], atol=1e-5)
    assert len(list((tmp_path / "cache").iterdir())) == 2        # cache files named after the paths
