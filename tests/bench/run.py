"""``make bench``: run every benchmark module ``tests/bench/bench_*.py`` and collect JSON.

Each module defines ``run(out_dir: Path, quick: bool) -> dict`` which measures its figures
*side by side with a named peer in the same run*, writes ``out_dir/<name>.json`` (and a
Markdown summary if it likes) and returns the dict.  ``--only NAME`` runs one of them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run")
    parser.add_argument("--out", default="build/bench", help="output directory (default build/bench)")
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable), e.g. emulator")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # search first: the export benchmark exports the plans the search benchmark just found
    names = sorted((p.stem[len("bench_"):] for p in HERE.glob("bench_*.py")), key=lambda n: (n != "search", n))
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f"error: unknown benchmark(s) {unknown}; known: {names}", file=sys.stderr)
            return 2
        names = [n for n in names if n in args.only]
    summary = {}
    for name in names:
        print(f"== bench {name}", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"tests.bench.bench_{name}")
        summary[name] = module.run(out, quick=args.quick)
        print(f"== bench {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}/summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
