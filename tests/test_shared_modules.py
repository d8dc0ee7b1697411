"""A module called more than once in forward() (weight sharing): every call site is its own tensor.

``<module>.input`` is the first call's input, ``<module>.input#2``, ``#3``... the later ones; tensor
discovery, ``apply_plan``, the prefix cache, the search and the ONNX export must all round each
call site with its own format (issue 12: the export used to round only the first call).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import sieve
from sieve import Format
from sieve.errors import SieveError
from sieve.export.exporter import export_onnx, quantizable_names, read_records
from sieve.export.verify import compare, explain
from sieve.qeval import PrefixEvaluator, activation_name, apply_plan, parse_tensor_name, quantizable_tensors
from sieve.search import run_search
from tests.search_models import Data, Split

SHAPE = (3, 8, 8)
P = Format.parse


class Shared(nn.Module):
    """A conv applied twice (16 channels: the blocked rounding applies) and a linear applied twice."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 16, 3, padding=1)
        self.proj = nn.Linear(16 * 2 * 2, 12)
        self.l = nn.Linear(12, 12)
        self.head = nn.Linear(12, 10)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.c(h))
        h = F.relu(self.c(h))                 # second call of c: input never negative
        h = F.max_pool2d(h, 4).flatten(1)
        h = self.l(F.relu(self.proj(h)))
        h = self.l(h)                         # second call of l: a signed input
        return self.head(F.relu(h))


class Branchy(Shared):
    """The same calls behind data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        if bool(x.sum() > -1e30):
            return super().forward(x)
        return x


def shared_model(seed: int = 0, cls=Shared, channels: int = 3) -> nn.Module:
    """Kaiming-initialized, so that the logits vary from image to image (PyTorch's default
    initialization shrinks them through five layers until the biases decide every prediction)."""
    torch.manual_seed(seed)
    model = cls(channels).eval()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


SITES = ("c.input", "c.input#2", "l.input", "l.input#2")
# a different format at each call site of the same module
PLAN = {
    "stem.input": P("e4m3"), "stem.weight": P("e4m3"),
    "c.input": P("ue4m3"), "c.input#2": P("ue3m1b4"), "c.weight": P("e4m2"),
    "proj.input": P("ue4m2"), "proj.weight": P("e5m3b15"),
    "l.input": P("e4m2"), "l.input#2": P("e3m3b5"), "l.weight": P("e4m3"),
}


def images(n: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


def emulate(model: Shared, plan: dict[str, Format], x: torch.Tensor) -> torch.Tensor:
    """The quantized forward pass written out by hand with the NumPy golden model."""
    def q(name, t):
        return torch.from_numpy(sieve.quantize(t.detach().numpy(), plan[name])) if name in plan else t

    def w(layer):
        return q(f"{layer}.weight", getattr(model, layer).weight)

    with torch.no_grad():
        h = F.relu(F.conv2d(q("stem.input", x), w("stem"), model.stem.bias, padding=1))
        h = F.relu(F.conv2d(q("c.input", h), w("c"), model.c.bias, padding=1))
        h = F.relu(F.conv2d(q("c.input#2", h), w("c"), model.c.bias, padding=1))
        h = F.max_pool2d(h, 4).flatten(1)
        h = F.linear(q("l.input", F.relu(F.linear(q("proj.input", h), w("proj"), model.proj.bias))),
                     w("l"), model.l.bias)
        h = F.linear(q("l.input#2", h), w("l"), model.l.bias)
        return F.linear(q("head.input", F.relu(h)), w("head"), model.head.bias)


def test_names_of_call_sites() -> None:
    assert activation_name("c") == "c.input" and activation_name("c", 3) == "c.input#3"
    assert parse_tensor_name("a.b.input#12") == ("a.b", "input", 12)
    assert parse_tensor_name("c.weight") == ("c", "weight", 1) and parse_tensor_name("c.input") == ("c", "input", 1)
    for bad in ("c.input#1", "c.input#02", "c.weight#2", "c.bias", "c.input#", "input"):
        assert parse_tensor_name(bad) is None, bad


def test_discovery_lists_every_call_site() -> None:
    infos = quantizable_tensors(shared_model(), SHAPE)
    assert [(i.name, i.kind, i.elements) for i in infos] == [
        ("stem.input", "activation", 192), ("stem.weight", "weight", 432),
        ("c.input", "activation", 1024), ("c.input#2", "activation", 1024), ("c.weight", "weight", 2304),
        ("proj.input", "activation", 64), ("proj.weight", "weight", 768),
        ("l.input", "activation", 12), ("l.input#2", "activation", 12), ("l.weight", "weight", 144),
        ("head.input", "activation", 12), ("head.weight", "weight", 120)]
    assert {i.module_name for i in infos if i.name in SITES} == {"c", "l"}
    known = quantizable_names(shared_model(), SHAPE)  # the exporter sees the same tensors
    assert set(known) == {i.name for i in infos} and known["c.input#2"] == ("activation", 1024)


def test_apply_plan_rounds_each_call_site_with_its_own_format() -> None:
    model, x = shared_model(), images()
    with torch.no_grad():
        got = apply_plan(model, PLAN)(x)
    assert torch.equal(got, emulate(model, PLAN, x))
    # each call site's format matters: the second call's format alone changes the output
    for site in ("c.input#2", "l.input#2"):
        other = {k: v for k, v in PLAN.items() if k != site}
        with torch.no_grad():
            assert not torch.equal(apply_plan(model, other)(x), got), site
    # the same model object twice in a row: call counting restarts with every forward pass
    q = apply_plan(model, PLAN)
    with torch.no_grad():
        assert torch.equal(q(x[:5]), got[:5]) and torch.equal(q(x[:5]), got[:5])


def test_plans_naming_missing_call_sites_are_refused(tmp_path) -> None:
    for plan, match in (({"c.input#3": P("e4m3")}, "c.input#3"), ({"stem.input#2": P("e4m3")}, "stem.input#2"),
                        ({"c.input#1": P("e4m3")}, "c.input#1")):
        with pytest.raises(SieveError, match=match) as err:
            apply_plan(shared_model(), plan, SHAPE)
        assert "\n" not in str(err.value)
        with pytest.raises(SieveError, match=match):
            export_onnx(shared_model(), plan, tmp_path / "x.onnx", SHAPE)
    assert list(tmp_path.iterdir()) == []
    # without the input shape, the first forward pass finds the call site missing
    q = apply_plan(shared_model(), {"c.input#3": P("e4m3")})
    with pytest.raises(SieveError, match=r"never reaches: c.input#3"), torch.no_grad():
        q(images(2))


@pytest.mark.parametrize("cls", [Shared, Branchy], ids=["traced", "untraceable"])
def test_prefix_evaluator_agrees_with_apply_plan(cls) -> None:
    model, x = shared_model(cls=cls), images(120)
    ev = PrefixEvaluator(model, x, batch_size=40)
    assert (ev.gm is not None) == (cls is Shared)
    seen: dict[str, int] = {}
    ev.fp32_logits(observer=lambda name, t: seen.__setitem__(name, seen.get(name, 0) + t.shape[0]))
    assert set(seen) == {i.name for i in ev.infos if i.kind == "activation"} and set(SITES) <= set(seen)
    assert set(seen.values()) == {120}  # each call site observed once per image
    rng = np.random.default_rng(2)
    for step in range(4):
        plan = {k: v for k, v in PLAN.items() if rng.random() < 0.8}
        for checkpoint in ("c.input#2", "l.input#2"):  # a cut at a later call site
            for variant in (plan, {**plan, checkpoint: P("ue2m2") if checkpoint[0] == "c" else P("e2m2")}):
                before = ev.nodes_run
                got = ev.run(variant, checkpoint=checkpoint)
                with torch.no_grad():
                    assert torch.equal(got, apply_plan(model, variant)(x)), (step, checkpoint, variant)
                if variant is not plan and ev.gm is not None:  # restarted at the later call site
                    assert ev.nodes_run - before <= 3 * (len(ev.nodes) - ev.first_use[checkpoint])


def test_onnx_agrees_with_the_emulated_model(tmp_path) -> None:
    model, x = shared_model(), images(96)
    path = tmp_path / "shared.onnx"
    result = export_onnx(model, PLAN, path, SHAPE, model_name="shared")
    records = {e.name: e for e in read_records(onnx.load(str(path)))}
    assert set(records) == set(PLAN)
    assert {records[s].format for s in SITES} == {str(PLAN[s]) for s in SITES}
    assert records["c.input"].tensor != records["c.input#2"].tensor
    assert any(e.method == "blocked" for e in result.tensors)  # both rounding kinds are exercised
    r = compare(model, PLAN, str(path), x, tolerance=1e-6)
    assert r["top1_agreement"] == 1.0, r
    if r["images_over_tolerance"]:  # same rule as tests/test_export.py
        for e in explain(model, PLAN, str(path), x[r["over_tolerance_indices"]]):
            assert e["onnx_rounding_matches_emulator_on_onnx_inputs"], e
            assert e["max_input_diff_vs_tensor_max"] < 1e-5, e
    assert r["images_over_tolerance"] <= 2, r
    # the file rounds the second calls: without them its logits would differ from the emulator's
    lacking = {k: v for k, v in PLAN.items() if k not in ("c.input#2", "l.input#2")}
    assert compare(model, lacking, str(path), x)["max_relative_logit_diff"] > 1e-3


def test_tied_weights_across_layers_are_refused_for_activations(tmp_path) -> None:
    """Two layers sharing one Parameter: the graph cannot tell whose call a node is."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6)).eval()
    m[2].weight = m[0].weight
    with pytest.raises(SieveError, match=r"0 is called 1 time\(s\) in forward\(\) but the exported graph has 2") as err:
        export_onnx(m, {"0.input": P("e4m3")}, tmp_path / "x.onnx", (6,))
    assert "\n" not in str(err.value) and list(tmp_path.iterdir()) == []


def test_search_plans_every_call_site(tmp_path) -> None:
    torch.set_num_threads(1)
    model = shared_model(channels=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 1, 8, 8, generator=g)
    with torch.no_grad():
        labels = model(x).argmax(1)
    flip = torch.rand(len(labels), generator=g) < 0.2
    labels[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)
    data = Data("synthetic", Split(x[:400], labels[:400]), Split(x[400:], labels[400:]), [str(i) for i in range(10)])
    doc = run_search(model, data, model_name="shared", out_dir=tmp_path, progress=False, report=False)
    for variant in ("exact", "accurate"):
        tensors = {t["name"]: t for t in doc["variants"][variant]["tensors"]}
        assert set(SITES) <= set(tensors), variant
        assert tensors["c.input#2"]["elements"] == 1024
        plan = sieve.plan_io.load_plan(tmp_path / "plan.json", variant)
        # the plan, applied call site by call site, reproduces the search's accuracy
        with torch.no_grad():
            pred = apply_plan(model, plan)(data.val.images).argmax(1)
        accuracy = float((pred == data.val.labels).float().mean())
        assert accuracy == pytest.approx(doc["variants"][variant]["val_accuracy"])
        if variant == "exact":
            with torch.no_grad():
                assert torch.equal(pred, model(data.val.images).argmax(1))


def test_onnx_import_maps_every_call_site(tmp_path) -> None:
    """An ONNX file whose Conv/Gemm nodes share a weight imports as one layer called twice; its
    name map lists each call site's input tensor in the file."""
    import warnings

    from sieve.onnx_import import import_onnx

    model, path = shared_model(), tmp_path / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *SHAPE),), str(path), dynamo=False, opset_version=13,
                          input_names=["input"], output_names=["logits"])
    imported = import_onnx(path)
    assert set(imported.tensor_map) == {i.name for i in quantizable_tensors(imported.module, SHAPE)}
    assert imported.tensor_map["c.input"]["tensor"] != imported.tensor_map["c.input#2"]["tensor"]
    with torch.no_grad():  # the imported layer rounds per call site like the original
        assert torch.equal(apply_plan(imported.module, PLAN)(images(8)), apply_plan(model, PLAN)(images(8)))
