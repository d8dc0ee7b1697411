"""Steady-state throughput of the engines, measured in Amaranth's simulator on a lane unit.

Why here: the issue's first figure is "one value per cycle per engine, no bubbles in steady
state", measured in the same run as the area and Fmax.  A 1-lane unit (configurable: the
format is loaded through its ``cfg`` port, exactly as software would) gets ``n`` values on
both the compressor and the decompressor side with ``valid`` and ``ready`` held high; we
count the clock cycles between the first and the last output.  No bubbles means the span
is exactly ``n`` cycles.  Every output is also compared with the emulator, so the figure
counts correct values only.

The port names are those of :class:`sieve_hw.lanes.Lanes` (``cfg``/``cfg_valid``/
``cfg_ready``/``cfg_error``, ``c_*`` compressor side, ``d_*`` decompressor side).
"""

from __future__ import annotations

import numpy as np

from sieve.cfloat import Format
from sieve.emulator import decode, encode
from sieve.errors import SieveError


def measure(fmt: Format, n: int = 1000, seed: int = 0) -> dict:
    """Stream ``n`` values through each engine of a configurable 1-lane unit; count cycles."""
    from amaranth.sim import Simulator

    from sieve_hw import generate
    from sieve_hw.config import pack_format

    if n < 1:
        raise SieveError(f"throughput needs at least one value, got n={n}")
    rng = np.random.default_rng(seed)
    xs = (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)).astype(np.float32)
    x_bits = xs.view(np.uint32)
    want_codes = encode(xs, fmt).astype(np.uint64)
    codes = rng.integers(0, 1 << fmt.width, n, dtype=np.uint64)
    want_bits = decode(codes, fmt).astype(np.float32).view(np.uint32)

    dut = generate.elaborate("lanes1")
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    result: dict = {}

    async def bench(ctx):
        async def until_cfg_ready(stuck: str) -> None:
            """Tick until ``cfg_ready`` is high in the current cycle (at most 64 cycles)."""
            for _ in range(64):
                if ctx.get(dut.cfg_ready):
                    return
                await ctx.tick()
            raise SieveError(stuck)

        ctx.set(dut.cfg.as_value(), pack_format(fmt))
        ctx.set(dut.cfg_valid, 1)
        await until_cfg_ready("lanes1 never raised cfg_ready after reset; the configuration handshake is stuck")
        await ctx.tick()  # the record is taken at this edge
        ctx.set(dut.cfg_valid, 0)
        # the constant calculator takes a few cycles (cfg_ready low meanwhile)
        await until_cfg_ready("lanes1 never finished loading the format (cfg_ready stayed low)")
        if ctx.get(dut.cfg_error):
            raise SieveError(f"lanes1 flags cfg_error for the legal format {fmt}")
        ctx.set(dut.c_o_ready, 1)
        ctx.set(dut.d_o_ready, 1)
        sent = {"c": 0, "d": 0}
        got: dict[str, list[tuple[int, int]]] = {"c": [], "d": []}
        feed = {"c": x_bits, "d": codes}
        cycle = 0
        limit = 4 * n + 200
        while (len(got["c"]) < n or len(got["d"]) < n) and cycle < limit:
            accept = {}
            for side in ("c", "d"):
                more = sent[side] < n
                ctx.set(getattr(dut, f"{side}_i_valid"), int(more))
                if more:
                    ctx.set(getattr(dut, f"{side}_i_data"), int(feed[side][sent[side]]))
            for side in ("c", "d"):
                accept[side] = sent[side] < n and ctx.get(getattr(dut, f"{side}_i_ready"))
                if ctx.get(getattr(dut, f"{side}_o_valid")):
                    got[side].append((cycle, ctx.get(getattr(dut, f"{side}_o_data"))))
            await ctx.tick()
            cycle += 1
            for side in ("c", "d"):
                sent[side] += int(bool(accept[side]))
        result.update(got=got, cycles=cycle)

    sim.add_testbench(bench)
    sim.run()
    got = result["got"]
    out = {"format": str(fmt), "values": n}
    for side, name, want in (("c", "compressor", want_codes), ("d", "decompressor", want_bits)):
        outs = got[side]
        if len(outs) < n:
            raise SieveError(f"{name}: only {len(outs)} of {n} values came out in {result['cycles']} cycles")
        first, last = outs[0][0], outs[n - 1][0]
        span = last - first + 1
        data = np.array([v for _, v in outs[:n]], dtype=np.uint64)
        mismatches = int(np.count_nonzero(data != np.asarray(want, dtype=np.uint64)))
        out[name] = {
            "first_output_cycle": first,
            "span_cycles": span,
            "bubbles": span - n,
            "values_per_cycle": round(n / span, 4),
            "mismatches_vs_emulator": mismatches,
        }
    return out
