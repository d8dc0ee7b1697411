"""Gate-level check: the sky130-mapped netlist of an engine, simulated with Icarus and the cells'
Verilog models, against the emulator (``sieve.encode`` / ``sieve.decode``).

Why: the silicon figures are only worth something if the mapped netlist is still the engine.
Yosys, ABC's restructuring and the cell library could each change behaviour; here the very
netlist OpenSTA timed runs the format sweep of the RTL tests (``sim.golden``: corners, random
fp32 values, every code of formats up to 12 bits) for every format of the engine's family.

A plain Verilog testbench (as ``sim/test_constcalc.py``: ~50x faster than cocotb for this many
vectors) reads ``{k, input}`` words from a hex file, holds ``i_valid`` and ``o_ready`` high and
writes every ``o_valid`` output; a pipelined engine is clocked, a combinational one sampled
1 ns after each input.  Each word carries its ``i_valid`` bit: a pipelined engine gets ``latency``
empty cycles after each format's values, so the record changes only when the pipeline is
drained (as the lane unit guarantees).  Outputs are compared in order, so nothing may be lost or reordered.
The cells are simulated zero-delay (``FUNCTIONAL``) from ``../shared/pdk/sky130/``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

import sieve
from sieve.errors import SieveError

from .asic_map import CELLS_V_GZ, PRIMITIVES_V_GZ, netlist_ports, unpack

TB = """`timescale 1ns/1ps
module tb;
  localparam KW = {kw};
  localparam N = {n};
  reg clk = 0, rst = 1;
  reg [KW+32:0] mem [0:N-1];
  reg v = 0;
  reg [31:0] x = 0;
  reg [KW-1:0] k = 0;
  wire [31:0] y;
  wire ov, ir, busy;
  {top} dut({ports});
  integer i, fd, c;
  initial begin
    $readmemh("vectors.hex", mem);
    fd = $fopen("out.txt", "w");
    {body}
    $fclose(fd);
    $finish;
  end
endmodule
"""

COMB_BODY = """for (i = 0; i < N; i = i + 1) begin
      {v, k, x} = mem[i];
      #1 if (ov) $fwrite(fd, "%h\\n", y);
    end"""

CLOCKED_BODY = """#1 clk = 1; #1 clk = 0; #1 clk = 1; #1 clk = 0; rst = 0;
    for (i = 0; i < N + {lat}; i = i + 1) begin
      if (i < N) {v, k, x} = mem[i]; else v = 0;
      #1 clk = 1;
      #1 if (ov) $fwrite(fd, "%h\\n", y);
      clk = 0;
    end"""


def testbench(top: str, ports: set[str], n: int, k_width: int, latency: int) -> str:
    """The testbench text for ``top`` with ``n`` words of ``{valid, k (k_width bits), input}``."""
    conn = {"i_valid": "v", "o_ready": "1'b1", "i_data": "x", "o_data": "y", "o_valid": "ov", "i_ready": "ir",
            "busy": "busy", "k": "k", "clk": "clk", "rst": "rst"}
    unknown = sorted(ports - set(conn))
    if unknown:
        raise SieveError(f"{top}: the gate-level testbench does not know the ports {unknown}")
    port_text = ", ".join(f".{p}({conn[p]})" for p in sorted(ports))
    body = COMB_BODY if latency == 0 else CLOCKED_BODY.replace("{lat}", str(latency))
    return TB.format(kw=k_width, n=n, top=top, ports=port_text, body=body)


def vectors(engine: str, fmt: sieve.Format, rng: np.random.Generator, n_random: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, expected outputs) as uint64 words for one format: the RTL tests' corner set."""
    from sim.golden import corner_values, decode_codes, expected_decode, expected_encode, random_values

    if engine == "compressor":
        values = np.concatenate([corner_values(fmt, rng), random_values(fmt, rng, n_random)]).astype(np.float32)
        return values.view(np.uint32).astype(np.uint64), np.asarray(expected_encode(values, fmt), np.uint64)
    codes = decode_codes(fmt, rng, limit_bits=12, sample=512)
    return codes.astype(np.uint64), np.asarray(expected_decode(codes, fmt), np.uint64)


def check(netlist: Path, top: str, engine: str, formats: list[sieve.Format], workdir: Path,
          latency: int, configurable: bool, seed: int = 0) -> dict:
    """Simulate ``netlist`` on every format's vectors; ``{"formats", "vectors", "mismatches", "first"}``."""
    from sieve_hw.constants import CONST_LAYOUT

    from .asic_data import constants_words

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cells = unpack(CELLS_V_GZ, workdir)
    prims = unpack(PRIMITIVES_V_GZ, workdir)
    rng = np.random.default_rng(seed)
    kw = CONST_LAYOUT.size if configurable else 1  # a fixed engine has no record: one unused bit
    lines, expected = [], []
    ks = constants_words(formats) if configurable else [0] * len(formats)
    for fmt, k in zip(formats, ks):
        ins, exp = vectors(engine, fmt, rng)
        digits = (kw + 33 + 3) // 4
        lines += [f"{(1 << (kw + 32)) | (k << 32) | int(v):0{digits}x}" for v in ins]
        lines += [f"{k << 32:0{digits}x}"] * latency  # drain before the record changes
        expected.append(exp)
    exp = np.concatenate(expected)
    (workdir / "vectors.hex").write_text("\n".join(lines) + "\n")
    ports = netlist_ports(netlist)
    (workdir / "tb.v").write_text(testbench(top, ports, len(lines), kw, latency))
    cmd = ["iverilog", "-g2012", "-DFUNCTIONAL", "-o", "tb.vvp", "tb.v", str(Path(netlist).resolve()),
           str(cells.resolve()), str(prims.resolve())]
    try:
        subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, text=True, timeout=600)
        subprocess.run(["vvp", "-n", "tb.vvp"], cwd=workdir, check=True, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError as exc:
        raise SieveError(f"gate-level simulation needs Icarus Verilog ({exc.filename}); run `make setup`") from exc
    except subprocess.CalledProcessError as exc:
        raise SieveError(f"gate-level simulation of {top} failed: {(exc.stderr or exc.stdout).strip()[-300:]}") from exc
    got_text = (workdir / "out.txt").read_text().split()
    if any("x" in g.lower() or "z" in g.lower() for g in got_text):
        bad = sum("x" in g.lower() or "z" in g.lower() for g in got_text)
        return {"formats": len(formats), "vectors": len(exp), "outputs": len(got_text), "mismatches": bad,
                "first": "outputs with x/z bits"}
    got = np.array([int(g, 16) for g in got_text], np.uint64)
    n = min(len(got), len(exp))
    wrong = np.nonzero(got[:n] != exp[:n])[0]
    mism = int(len(wrong) + abs(len(got) - len(exp)))
    first = None
    if len(wrong):
        i = int(wrong[0])
        first = f"vector {i}: got {int(got[i]):#x}, expected {int(exp[i]):#x}"
    elif len(got) != len(exp):
        first = f"{len(got)} outputs for {len(exp)} inputs"
    return {"formats": len(formats), "vectors": int(len(exp)), "outputs": int(len(got)), "mismatches": mism, "first": first}


def family_formats(contract: str | None, fixed: str | None) -> list[sieve.Format]:
    """The sweep formats an engine serves: its fixed format, or the RTL sweep's formats in its contract's family."""
    from sim.golden import sweep_formats
    from sieve_hw.contracts import contract as get_contract

    if fixed is not None:
        return [sieve.Format.parse(fixed)]
    family = get_contract(contract or "full")
    return [f for f in sweep_formats("ci") if family.admits(f)]
