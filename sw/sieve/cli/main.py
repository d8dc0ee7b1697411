"""Entry point of the ``sieve`` console script.

Sub-command modules are listed in :data:`COMMANDS`; each defines ``register(subparsers)``
which adds its parser and sets ``func`` (called with the parsed namespace, returns an exit
code).  User-facing problems raise :class:`~sieve.errors.SieveError` (or FormatError /
TypeError / ValueError from the format layer) and become one ``error:`` line with exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..cfloat import FormatError
from ..errors import SieveError

COMMANDS = [
    "sieve.cli.format_cmd",
    "sieve.cli.quantize_cmd",
    "sieve.cli.models_cmd",
    "sieve.cli.runtime_cmd",
    "sieve.cli.search_cmd",
    "sieve.cli.export_cmd",
    "sieve.cli.multidsnn_cmd",
    "sieve.cli.prune_cmd",
    "sieve.cli.mmnet_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sieve",
        description="Custom floating-point formats for CNNs: search, emulate, export, speculate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except BrokenPipeError:
        # the reader (`| head`) went away: stop quietly, as the Python docs advise for
        # SIGPIPE — point stdout at devnull so the interpreter's final flush cannot fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (SieveError, FormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
