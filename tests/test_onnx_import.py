"""The ONNX importer against onnxruntime on the same file.

CNN shapes the zoo never had (AlexNet/LRN + grouped conv, Inception branches, ResNet-50
bottlenecks, SqueezeNet fire modules with ceil-mode pooling, VGG, DenseNet concatenation,
ShuffleNet channel shuffle + depthwise, adaptive pooling) are defined in torch, exported with
``torch.onnx.export(dynamo=False)`` at several opsets and imported; every zoo model is
round-tripped the same way; hand-built graphs (onnx.helper) cover what torch never writes.
Agreement: max |torch - onnxruntime| <= 1e-4 x the range of onnxruntime's logits.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sieve.errors import SieveError
from sieve.onnx_import import import_onnx

OPSETS = (9, 11, 13, 17)
TOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _export(model, path, shape, opset, *, preserve_bn=False, dynamic=True, fold=True):
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(2, *shape), str(path), dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}} if dynamic else None,
                          training=torch.onnx.TrainingMode.PRESERVE if preserve_bn else torch.onnx.TrainingMode.EVAL,
                          do_constant_folding=fold)
    return path


def _ort(path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_matches_ort(path, shape, batch=3, seed=0, input_shape=None):
    """Import ``path`` and compare with onnxruntime; returns the import result."""
    imported = import_onnx(path, input_shape=input_shape)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))
    ref = _ort(path, x.numpy())
    with torch.no_grad():
        out = imported.module(x).numpy()
    assert out.shape == ref.shape
    scale = float(ref.max() - ref.min()) or 1.0
    diff = float(np.abs(out - ref).max())
    assert diff <= TOL * scale, f"max abs diff {diff} > {TOL} x range {scale}"
    return imported


def random_bn_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so that BatchNorm is really exercised."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


# ---------------------------------------------------------------------------- torch-built CNNs
class AlexNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0),
            nn.MaxPool2d(3, 2), nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.ReLU(),
            nn.LocalResponseNorm(3), nn.MaxPool2d(3, 2))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(16 * 3 * 3, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class Inception(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.b1 = nn.Conv2d(cin, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(cin, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(cin, 2, 1), nn.ReLU(), nn.Conv2d(2, 4, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(cin, 4, 1))

    def forward(self, x):
        return torch.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


class GoogLeNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True))
        self.a = Inception(8)
        self.b = Inception(16)
        self.pool = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.b(self.a(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, mid * 4, 1, bias=False), nn.BatchNorm2d(mid * 4)
        self.down = None
        if stride != 1 or cin != mid * 4:
            self.down = nn.Sequential(nn.Conv2d(cin, mid * 4, 1, stride, bias=False), nn.BatchNorm2d(mid * 4))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet50Style(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.layer1 = nn.Sequential(Bottleneck(8, 4, 1), Bottleneck(16, 4, 1))
        self.layer2 = nn.Sequential(Bottleneck(16, 8, 2), Bottleneck(32, 8, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.layer2(self.layer1(self.stem(x)))), 1))


class Fire(nn.Module):
    def __init__(self, cin, s, e):
        super().__init__()
        self.squeeze, self.e1, self.e3 = nn.Conv2d(cin, s, 1), nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)


class SqueezeNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(8, 2, 4), Fire(8, 2, 4), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(8, 4, 8))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(16, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class VGGStyle(nn.Module):
    def __init__(self):
        super().__init__()
        layers, cin = [], 3
        for cout in (4, "M", 8, 8, "M", 16, "M"):
            if cout == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(16 * 4 * 4, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.features(x)
        return torch.softmax(self.classifier(x.view(x.size(0), -1)), dim=1)


class DenseNetStyle(nn.Module):
    def __init__(self, growth=4):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.layers = nn.ModuleList()
        cin = 8
        for _ in range(3):
            self.layers.append(nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, growth, 3, padding=1, bias=False)))
            cin += growth
        self.trans = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, 8, 1, bias=False), nn.AvgPool2d(2, 2))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv0(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        x = self.trans(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))


def channel_shuffle(x, groups):
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pw1 = nn.Conv2d(c // 2, c // 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c // 2)
        self.dw = nn.Conv2d(c // 2, c // 2, 3, padding=1, groups=c // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(c // 2)
        self.pw2 = nn.Conv2d(c // 2, c // 2, 1, bias=False)
        self.half = c // 2

    def forward(self, x):
        a, b = x[:, :self.half], x[:, self.half:]
        b = torch.relu(self.pw2(self.bn2(self.dw(torch.relu(self.bn1(self.pw1(b)))))))
        return channel_shuffle(torch.cat([a, b], 1), 2)


class ShuffleNetStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.units = nn.Sequential(ShuffleUnit(8), ShuffleUnit(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.units(torch.relu(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


class AdaptivePool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((2, 2))
        self.gmax = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(6 * 4 + 6, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(torch.cat([torch.flatten(self.pool(y), 1), torch.flatten(self.gmax(y), 1)], 1))


CNNS = {
    "alexnet": (AlexNetStyle, (3, 32, 32), {}),
    "googlenet": (GoogLeNetStyle, (3, 32, 32), {}),
    "resnet50": (ResNet50Style, (3, 32, 32), {"preserve_bn": True}),
    "squeezenet": (SqueezeNetStyle, (3, 33, 33), {}),
    "vgg": (VGGStyle, (3, 32, 32), {}),
    "densenet": (DenseNetStyle, (3, 16, 16), {"preserve_bn": True}),
    "shufflenet": (ShuffleNetStyle, (3, 16, 16), {"preserve_bn": True}),
    "adaptive": (AdaptivePool, (3, 8, 8), {}),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("arch", list(CNNS))
def test_torch_exported_cnn_matches_onnxruntime(arch, opset, tmp_path):
    torch.manual_seed(0)
    cls, shape, kw = CNNS[arch]
    model = cls().eval()
    if kw.get("preserve_bn"):
        random_bn_statistics(model)
    path = _export(model, tmp_path / f"{arch}.onnx", shape, opset, **kw)
    imported = assert_matches_ort(path, shape)
    # the imported graph's layers hold the file's initializers under names the plan can use
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    modules = dict(imported.module.named_modules())
    for key, where in imported.tensor_map.items():
        if key.endswith(".weight"):
            weight = modules[key[:-7]].weight.detach().numpy()
            stored = init[where["initializer"]]
            np.testing.assert_array_equal(weight, stored.T if where["transposed"] else stored)
    # it also agrees with the torch model it came from, on a batch size never exported
    x = torch.randn(5, *shape)
    with torch.no_grad():
        np.testing.assert_allclose(imported.module(x).numpy(), model(x).numpy(), rtol=0, atol=1e-4)


def test_layer_names_follow_the_file(tmp_path):
    """Unfolded exports keep torch's parameter names: the plan names are the module's own."""
    model = ResNet50Style().eval()
    path = _export(model, tmp_path / "r.onnx", (3, 32, 32), 13, preserve_bn=True)
    imported = import_onnx(path)
    names = {n for n, m in imported.module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    expected = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert names == expected
    assert imported.tensor_map["layer1.0.conv1.weight"]["initializer"] == "layer1.0.conv1.weight"
    assert imported.input_shape == (3, 32, 32)


def test_shape_subgraph_folds_to_a_constant(tmp_path):
    """``x.view(x.size(0), -1)`` (Shape/Gather/Unsqueeze/Concat/Reshape) becomes one reshape."""
    path = _export(VGGStyle(), tmp_path / "v.onnx", (3, 32, 32), 9, fold=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Shape", "Gather", "Unsqueeze", "Concat"} <= ops
    gm = assert_matches_ort(path, (3, 32, 32)).module
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.reshape in targets and torch.cat not in targets
    assert all(n.op != "placeholder" or n.name == "x" for n in gm.graph.nodes)


def test_fixed_batch_file_runs_on_any_batch(tmp_path):
    """A file exported for batch 2 with the reshape target hard-coded still runs batch 5."""
    path = _export(VGGStyle(), tmp_path / "v.onnx", (3, 32, 32), 11, dynamic=False)
    gm = import_onnx(path).module
    model_out = gm(torch.randn(5, 3, 32, 32))
    assert model_out.shape == (5, 10)


# ---------------------------------------------------------------------------- zoo models
ZOO_SHAPES = {"lenet5": (1, 28, 28), "convnet": (1, 28, 28), "minivgg": (1, 28, 28), "lenet_caffe": (1, 28, 28),
              "resnet20": (3, 32, 32), "alexnet": (3, 224, 224), "squeezenet1_0": (3, 96, 96)}


def _zoo_model(name):
    from sieve.models import caffe_lenet, cifar_resnet, fashion, imagenet

    if name in ("lenet5", "convnet", "minivgg"):
        return fashion.build(name)
    if name == "lenet_caffe":
        return caffe_lenet.CaffeLeNet()
    if name == "resnet20":
        return cifar_resnet.build(name)
    return imagenet.BUILDERS[name]()


@pytest.mark.parametrize("name", list(ZOO_SHAPES))
def test_zoo_model_round_trip(name, tmp_path):
    """Every zoo architecture (made-up weights, BatchNorm kept) through ONNX and back."""
    from sieve import zoo

    assert set(ZOO_SHAPES) <= set(zoo.known_models())
    torch.manual_seed(1)
    model = random_bn_statistics(_zoo_model(name).eval())
    shape = ZOO_SHAPES[name]
    path = _export(model, tmp_path / f"{name}.onnx", shape, 11 if name == "resnet20" else 13, preserve_bn=True)
    imported = assert_matches_ort(path, shape, batch=2)
    ours = {n for n, m in imported.module.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert ours == {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


# ---------------------------------------------------------------------------- hand-built graphs
def _tensor(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _save(tmp_path, nodes, inits, in_shape, out_name="y", opset=13, name="g.onnx", in_dims=None, out_rank=4):
    rng_dims = in_dims if in_dims is not None else ["N", *in_shape]
    out_dims = [f"d{i}" for i in range(out_rank)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, rng_dims)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_dims)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _w(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad(auto_pad, tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], auto_pad=auto_pad, strides=[2, 2], name="conv_a"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2], auto_pad=auto_pad),
             helper.make_node("Conv", ["p", "w2"], ["y"], auto_pad=auto_pad, kernel_shape=[4, 4],
                              dilations=[2, 1] if auto_pad == "VALID" else [1, 1])]  # (onnxruntime: SAME + dilation unsupported)
    path = _save(tmp_path, nodes, [_tensor("w", _w(4, 3, 4, 4)), _tensor("b", _w(4)), _tensor("w2", _w(5, 4, 4, 4, seed=1))],
                 (3, 31, 30), opset=11)
    assert_matches_ort(path, (3, 31, 30))


def test_sum_mul_broadcast_and_old_clip(tmp_path):
    """Sum of three (one a per-channel constant), Mul broadcast, Clip/LeakyRelu with opset-8 attributes."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"]),
             helper.make_node("Sum", ["c", "s", "k"], ["t"]),
             helper.make_node("Mul", ["t", "scale"], ["m"]),
             helper.make_node("Clip", ["m"], ["cl"], min=-0.5, max=0.7),
             helper.make_node("LeakyRelu", ["cl"], ["lr"], alpha=0.2),
             helper.make_node("Tanh", ["lr"], ["y"])]
    inits = [_tensor("w", _w(4, 3, 3, 3)), _tensor("k", _w(1, 4, 1, 1, seed=2)), _tensor("scale", np.float32(1.5))]
    assert_matches_ort(_save(tmp_path, nodes, inits, (3, 8, 8), opset=8), (3, 8, 8))


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_axis_semantics(opset, tmp_path):
    """Before opset 13 Softmax(axis=1) on N x C x H x W is ONE softmax over C*H*W; from 13 over C."""
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    path = _save(tmp_path, nodes, [], (3, 4, 5), opset=opset)
    assert_matches_ort(path, (3, 4, 5))
    y = import_onnx(path).module(torch.randn(2, 3, 4, 5))
    sums = y.sum(dim=(1, 2, 3)) if opset < 13 else y.sum(dim=1)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_pooling_corner_cases(tmp_path):
    nodes = [helper.make_node("AveragePool", ["x"], ["a0"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1],
                              count_include_pad=0),
             helper.make_node("AveragePool", ["x"], ["a1"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1],
                              count_include_pad=1),
             helper.make_node("MaxPool", ["x"], ["m0"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 1]),
             helper.make_node("AveragePool", ["x"], ["a2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("LRN", ["x"], ["l"], size=3, alpha=0.01, beta=0.75, bias=1.5),
             helper.make_node("GlobalMaxPool", ["l"], ["g"]),
             helper.make_node("Sum", ["a0", "a1", "m0", "g"], ["s"]),
             helper.make_node("GlobalAveragePool", ["a2"], ["ga"]),
             helper.make_node("Sub", ["a2", "ga"], ["d"]),
             helper.make_node("Concat", ["s", "d"], ["y"], axis=1)]
    assert_matches_ort(_save(tmp_path, nodes, [], (6, 9, 9), opset=11), (6, 9, 9))


def test_even_lrn_window_follows_the_onnx_spec(tmp_path):
    """onnxruntime refuses even LRN sizes (and onnx.reference loops over the batch instead of
    the channels), so the spec's formula is spelled out here: channels max(0, c - floor((size-1)/2))
    .. min(C-1, c + ceil((size-1)/2)); torch's LocalResponseNorm puts the larger half before."""
    size, alpha, beta, bias = 4, 0.01, 0.75, 1.5
    nodes = [helper.make_node("LRN", ["x"], ["y"], size=size, alpha=alpha, beta=beta, bias=bias)]
    path = _save(tmp_path, nodes, [], (6, 3, 3), opset=13)
    x = np.random.default_rng(0).standard_normal((2, 6, 3, 3)).astype(np.float64) * 3
    square_sum = np.zeros_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + -(-(size - 1) // 2))
        square_sum[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    ref = x / (bias + alpha / size * square_sum) ** beta
    out = import_onnx(path).module(torch.from_numpy(x.astype(np.float32))).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    torch_module = nn.LocalResponseNorm(size, alpha, beta, bias)(torch.from_numpy(x.astype(np.float32))).numpy()
    assert np.abs(torch_module - ref).max() > 1e-3


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_alpha_beta_and_matmul_add(trans_b, tmp_path):
    b = _w(12, 7) if not trans_b else _w(7, 12)
    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "b", "c"], ["g"], alpha=0.5, beta=2.0, transB=trans_b),
             helper.make_node("Gemm", ["f", "b", "c1"], ["g1"], transB=trans_b),
             helper.make_node("Add", ["g", "g1"], ["s"]),
             helper.make_node("MatMul", ["s", "m"], ["mm"]),
             helper.make_node("Add", ["mm", "mb"], ["y"])]
    inits = [_tensor("b", b), _tensor("c", _w(1, 7, seed=3)), _tensor("c1", _w(7, seed=6)),
             _tensor("m", _w(7, 5, seed=4)), _tensor("mb", _w(5, seed=5))]
    imported = assert_matches_ort(_save(tmp_path, nodes, inits, (3, 2, 2), opset=9, out_rank=2), (3, 2, 2))
    linears = [m for m in imported.module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and linears[-1].bias is not None   # MatMul + Add became one layer


def test_reshape_constants_pad_and_squeeze(tmp_path):
    """Reshape targets from a Constant (0 and -1), ConstantOfShape, Pad with inputs (reflect), Squeeze/Unsqueeze."""
    shape_const = helper.make_node("Constant", [], ["shp"], value=_tensor("v", np.array([0, 2, -1], np.int64)))
    nodes = [shape_const,
             helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
             helper.make_node("Reshape", ["p", "shp"], ["r"]),
             helper.make_node("ConstantOfShape", ["cs"], ["ones"], value=_tensor("o", np.array([0.25], np.float32))),
             helper.make_node("Add", ["r", "ones"], ["a"]),
             helper.make_node("Unsqueeze", ["a", "ax"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax"], ["y"])]
    inits = [_tensor("pads", np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64)), _tensor("cs", np.array([1], np.int64)),
             _tensor("ax", np.array([1], np.int64))]
    assert_matches_ort(_save(tmp_path, nodes, inits, (2, 4, 4), opset=13, out_rank=3), (2, 4, 4))


def test_old_pad_attributes_and_opset11_squeeze(tmp_path):
    nodes = [helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 0, 0, 0, 0, 2], mode="constant", value=0.5),
             helper.make_node("Unsqueeze", ["p"], ["u"], axes=[0]),
             helper.make_node("Squeeze", ["u"], ["y"], axes=[0])]
    assert_matches_ort(_save(tmp_path, nodes, [], (2, 3, 3), opset=9), (2, 3, 3))


def test_unsupported_operator_is_one_line(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Resize", ["c", "", "scales"], ["y"], name="upsample_1")]
    path = _save(tmp_path, nodes, [_tensor("w", _w(2, 3, 1, 1)), _tensor("scales", np.float32([1, 1, 2, 2]))],
                 (3, 4, 4), opset=13)
    with pytest.raises(SieveError) as err:
        import_onnx(path)
    message = str(err.value)
    assert "\n" not in message
    assert "'upsample_1'" in message and "Resize" in message and "opset 13" in message


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(SieveError, match="does not exist"):
        import_onnx(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(SieveError, match="cannot read|not a valid"):
        import_onnx(tmp_path / "junk.onnx")
    # a graph that fails onnx.checker (node reads an undefined tensor)
    graph = helper.make_graph([helper.make_node("Relu", ["nope"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "bad.onnx"))
    with pytest.raises(SieveError, match="not a valid ONNX model"):
        import_onnx(tmp_path / "bad.onnx")


def test_external_data_outside_the_folder_is_refused(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    path = _save(tmp_path, nodes, [_tensor("w", _w(64, 3, 3, 3))], (3, 5, 5), opset=13)
    model = onnx.load(str(path))
    inner = tmp_path / "model"
    inner.mkdir()
    onnx.save_model(model, str(inner / "ok.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ok.data", size_threshold=0)
    assert_matches_ort(inner / "ok.onnx", (3, 5, 5))
    (tmp_path / "secret.data").write_bytes((inner / "ok.data").read_bytes())
    evil = onnx.load(str(inner / "ok.onnx"), load_external_data=False)
    for t in evil.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../secret.data"
    onnx.save(evil, str(inner / "evil.onnx"))
    with pytest.raises(SieveError, match="outside the model's folder"):
        import_onnx(inner / "evil.onnx")


def test_unknown_image_size_needs_an_input_shape(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("GlobalAveragePool", ["c"], ["y"])]
    path = _save(tmp_path, nodes, [_tensor("w", _w(2, 3, 3, 3))], None, opset=13, in_dims=["N", 3, "H", "W"])
    with pytest.raises(SieveError, match="--input-shape"):
        import_onnx(path)
    assert import_onnx(path, input_shape=(3, 10, 12)).input_shape == (3, 10, 12)
    with pytest.raises(SieveError, match="does not fit"):
        import_onnx(path, input_shape=(1, 10, 12))


def test_layer_names_for_caffe2_and_folded_exports(tmp_path):
    """Caffe2-style weights (``conv1_w``) name the layer ``conv1``; a folded export's anonymous
    weight (``onnx::Conv_7``) falls back to the node's scope path; names never collide; two nodes
    with the same weight and attributes are one layer called twice."""
    nodes = [helper.make_node("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "onnx::Conv_7"], ["c2"], name="/layer1/layer1.0/conv1/Conv"),
             helper.make_node("Conv", ["c2", "w3"], ["c3"], name="conv1"),
             helper.make_node("Conv", ["c3", "conv1_w", "conv1_b"], ["y"], pads=[1, 1, 1, 1])]   # the same layer again
    inits = [_tensor("conv1_w", _w(3, 3, 3, 3)), _tensor("conv1_b", _w(3)), _tensor("onnx::Conv_7", _w(3, 3, 1, 1)),
             _tensor("w3", _w(3, 3, 1, 1, seed=7))]
    imported = assert_matches_ort(_save(tmp_path, nodes, inits, (3, 6, 6), opset=11), (3, 6, 6))
    convs = [n for n, m in imported.module.named_modules() if isinstance(m, nn.Conv2d)]
    assert sorted(convs) == ["conv1", "conv1_2", "layer1.0.conv1"]     # the 4th node reuses conv1's layer
    assert imported.tensor_map["layer1.0.conv1.weight"]["initializer"] == "onnx::Conv_7"
