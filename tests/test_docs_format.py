"""docs/format.md cannot drift: every row of its corner and constants tables is checked."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sieve import Format, encode

DOC = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()


def table_rows(heading: str) -> list[list[str]]:
    section = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


CORNERS = table_rows("## Corner table")


def test_corner_table_is_not_empty():
    assert len(CORNERS) >= 25


@pytest.mark.parametrize("fmt_text, x_text, code_text", CORNERS)
def test_corner_row(fmt_text, x_text, code_text):
    literal = x_text.split(" ")[0]
    x = np.float32(float(literal))
    if literal.startswith("-") and np.isnan(x):  # make the sign explicit: 0xFFC00000
        x = np.array([0xFFC00000], np.uint32).view(np.float32)[0]
    got = int(encode(np.array([x], dtype=np.float32), Format.parse(fmt_text))[0])
    assert got == int(code_text, 16), f"{fmt_text}({x_text}) = {got:#04x}, doc says {code_text}"


def test_constants_table_matches_e4m3():
    c = Format.parse("e4m3").constants
    for name, _definition, value in table_rows("## Engine constants"):
        name = name.strip("`")
        assert getattr(c, name) == int(value, 0), name


def test_packing_example():
    from sieve import pack

    example = re.search(r"codes \[1, 2, 5\] → bytes `0x51 0x01`", DOC)
    assert example
    assert pack(np.array([1, 2, 5]), Format(1, 2, bias=0, signed=False)) == bytes([0x51, 0x01])
