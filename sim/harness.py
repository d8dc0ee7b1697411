"""Build the generated Verilog with Icarus (cocotb runner) and run testbench jobs.

Build directories live under ``build/sim/`` (one per design and pytest-xdist worker, so
parallel workers never share a compiled model).  A *job* is a dict of NumPy arrays written
to ``job.npz``; the testbench writes ``out.npz``; :func:`run_job` returns it as a dict.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIM_BUILD = ROOT / "build" / "sim"


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _sources_digest() -> str:
    """SHA-256 of the hardware sources (and the Format spec they read): a compiled model is
    reused only while none of them has changed."""
    import hashlib

    import sieve.cfloat
    import sieve_hw

    digest = hashlib.sha256()
    files = sorted(Path(sieve_hw.__file__).parent.glob("*.py")) + [Path(sieve.cfloat.__file__)]
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build(design: str, fixed_format=None, contract: str = "full") -> tuple[str, Path]:
    """Generate and compile ``design`` (for ``contract``); return (top module, build dir).  Cached per worker."""
    from cocotb_tools.runner import get_runner

    from sieve_hw.generate import top_name, write_verilog

    top = top_name(design, fixed_format, contract)
    bdir = SIM_BUILD / f"{top}-{_worker()}"
    stamp = bdir / ".built"
    key = _sources_digest()
    if not stamp.exists() or stamp.read_text().strip() != key:
        if bdir.exists():
            shutil.rmtree(bdir)
        bdir.mkdir(parents=True)
        vfile = write_verilog(design, bdir, fixed_format, contract)
        runner = get_runner("icarus")
        runner.build(sources=[vfile], hdl_toplevel=top, build_dir=bdir, always=True,
                     timescale=("1ns", "1ps"), log_file=bdir / "build.log")
        stamp.write_text(key + "\n")
    return top, bdir


def run_job(design: str, job: dict, name: str, testbench: str = "sim.tb_lanes", contract: str = "full") -> dict:
    """Run one job through the compiled ``design`` (for ``contract``); return the testbench's result arrays."""
    from cocotb_tools.runner import get_runner

    top, bdir = build(design, contract=contract)
    tdir = bdir / name
    if tdir.exists():
        shutil.rmtree(tdir)
    tdir.mkdir(parents=True)
    np.savez(tdir / "job.npz", **job)
    out = tdir / "out.npz"
    env = {
        "SIEVE_SIM_JOB": str(tdir / "job.npz"),
        "SIEVE_SIM_OUT": str(out),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sw"), str(ROOT / "hw"),
                                       os.environ.get("PYTHONPATH", "")]),
    }
    results = get_runner("icarus").test(test_module=testbench, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                                        build_dir=bdir,
                                        test_dir=tdir, extra_env=env, results_xml=str(tdir / "results.xml"),
                                        log_file=tdir / "sim.log")
    failures = _failures(Path(results))
    if failures or not out.exists():
        log = (tdir / "sim.log").read_text(errors="replace")[-4000:] if (tdir / "sim.log").exists() else ""
        raise AssertionError(f"cocotb testbench failed ({failures} failures); log tail:\n{log}")
    with np.load(out, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _failures(results_xml: Path) -> int:
    import xml.etree.ElementTree as ET

    if not results_xml.exists():
        return 1
    root = ET.parse(results_xml).getroot()
    return sum(1 for case in root.iter("testcase") for child in case if child.tag in ("failure", "error"))
