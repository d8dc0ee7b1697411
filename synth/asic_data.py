"""Real data for the silicon flow: a resnet20 layer's weights and activations, their switching
activity on the engines' input ports, and the constant record the calculator gives a format.

Why real data: dynamic power is switched capacitance × toggles, and fp32 tensors toggle their
bits very unevenly (sign and exponent bits rarely, low mantissa bits half the time), so a
uniform default activity would misstate it.  The stream is the input of resnet20's
``layer2.0.conv1`` in memory order (its weights, and its activations on real CIFAR-10 images
from ``../shared``) — what an SM's load/store units would move through the engines.
"""

from __future__ import annotations

import numpy as np

import sieve
from sieve.errors import SieveError

#: The format of the power run: in every contract's family (nearest-even, saturate, no specials,
#: no subnormals, bias 7), the SIEVE default 8-bit layout.
POWER_FORMAT = "se4m3b7"
#: The layer whose weights and input activations are streamed.
LAYER = "layer2.0.conv1"
#: Values per stream (enough for stable toggle rates, small enough to stay fast).
VALUES = 4096


def resnet20_streams(values: int = VALUES, images: int = 8) -> dict[str, np.ndarray]:
    """``{"weights": ..., "activations": ...}``: fp32 streams from resnet20's ``LAYER``.

    Raises SieveError when the model or its data are not available (``../shared`` absent)."""
    import torch

    from sieve import zoo

    torch.set_num_threads(1)
    try:
        model, ds = zoo.load("resnet20", val=images, test=images)
    except (SieveError, OSError, FileNotFoundError) as exc:
        raise SieveError(f"resnet20 is not available for the power run ({exc}); put ../shared beside the repository")
    layer = dict(model.named_modules())[LAYER]
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        model(ds.val.images)
    handle.remove()
    weights = layer.weight.detach().numpy().astype(np.float32).ravel()
    acts = seen[0].numpy().astype(np.float32).ravel()
    return {"weights": np.resize(weights, values), "activations": acts[:values]}


def bit_activity(words: np.ndarray, width: int = 32) -> list[tuple[float, float]]:
    """Per bit (LSB first): (toggles per cycle, fraction of cycles at 1) of a word stream, one word
    per cycle."""
    w = np.asarray(words, dtype=np.uint64)
    if w.size < 2:
        raise ValueError("a stream needs at least two words to have an activity")
    out = []
    for i in range(width):
        b = (w >> np.uint64(i)) & np.uint64(1)
        out.append((float(np.mean(b[1:] != b[:-1])), float(np.mean(b))))
    return out


def fp32_words(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)


def codes(values: np.ndarray, fmt: sieve.Format) -> np.ndarray:
    """The codes the compressor gives ``values`` (the decompressor's input stream)."""
    return np.asarray(sieve.encode(np.asarray(values, np.float32), fmt), dtype=np.uint64)


def constants_word(fmt: sieve.Format) -> int:
    """The calculator's constant record ``k`` for ``fmt`` as one integer (see :func:`constants_words`)."""
    return constants_words([fmt])[0]


def constants_words(fmts: list[sieve.Format]) -> list[int]:
    """The constant record ``k`` of each format as one integer: the RTL's combinational calculator
    (:func:`~sieve_hw.constants.calc_constants`, the logic ``ConstCalc`` computes) fed each record in
    one run of Amaranth's simulator."""
    from amaranth import Module, Signal
    from amaranth.sim import Simulator

    from sieve_hw.config import FORMAT_LAYOUT, pack_format
    from sieve_hw.constants import CONST_LAYOUT, calc_constants

    m = Module()
    record = Signal(FORMAT_LAYOUT)
    k = Signal(CONST_LAYOUT)
    k_new, _ = calc_constants(m, record)
    m.d.comb += k.eq(k_new)
    out: list[int] = []

    async def bench(ctx):
        for fmt in fmts:
            ctx.set(record.as_value(), pack_format(fmt))
            await ctx.delay(1e-9)
            out.append(int(ctx.get(k.as_value())))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return out


def port_activities(stream: np.ndarray, k_word: int | None, k_width: int, data_width: int = 32) -> dict:
    """OpenSTA input-port activities for one engine: ``i_data`` from ``stream`` (words, one per
    cycle), the handshake held (valid and ready high, reset low), the record ``k`` static at its
    value (activity 0, duty = the bit)."""
    acts = {f"i_data[{i}]": a for i, a in enumerate(bit_activity(stream, data_width))}
    acts.update({"i_valid": (0.0, 1.0), "o_ready": (0.0, 1.0), "rst": (0.0, 0.0)})
    if k_word is not None:
        acts.update({f"k[{i}]": (0.0, float((k_word >> i) & 1)) for i in range(k_width)})
    return acts
