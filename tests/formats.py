"""Format families the tests sweep: every legal policy combination, and a hypothesis strategy."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from sieve import Format, FormatError

POLICIES = [
    dict(specials="none", overflow="saturate"),
    dict(specials="ieee", overflow="inf"),
    dict(specials="ieee", overflow="saturate"),
    dict(specials="fn", overflow="nan"),
    dict(specials="fn", overflow="saturate"),
    dict(specials="fnuz", overflow="nan"),
]


def try_format(**fields) -> Format | None:
    """The Format, or None when the combination is illegal."""
    try:
        return Format(**fields)
    except FormatError:
        return None


def small_formats(max_width: int = 16, biases=("default", "low", "high")):
    """Every legal (E, M, signed, rounding, subnormals, policy) up to ``max_width`` bits.

    Biases: the IEEE default, and a low and a high one that move the range far from 1.0.
    """
    seen = set()
    for e, m, signed, rounding, sub, pol, b in itertools.product(
        range(1, 9), range(0, 24), (True, False), ("nearest_even", "truncate"), (False, True), POLICIES, biases
    ):
        if int(signed) + e + m > max_width:
            continue
        default = (1 << (e - 1)) - 1
        bias = {"default": default, "low": default - 9, "high": default + 20}[b]
        fmt = try_format(exp_bits=e, man_bits=m, bias=bias, signed=signed, rounding=rounding, subnormals=sub, **pol)
        if fmt is not None and fmt not in seen:
            seen.add(fmt)
            yield fmt


@st.composite
def formats(draw, max_width: int = 32):
    """A random legal Format of at most ``max_width`` bits (hypothesis strategy)."""
    e = draw(st.integers(1, 8))
    m = draw(st.integers(0, min(23, max_width - 1 - e)))
    signed = draw(st.booleans())
    default = (1 << (e - 1)) - 1
    bias = draw(st.integers(default - 40, default + 40))
    fields = dict(
        exp_bits=e,
        man_bits=m,
        bias=bias,
        signed=signed,
        rounding=draw(st.sampled_from(["nearest_even", "truncate"])),
        subnormals=draw(st.booleans()),
        **draw(st.sampled_from(POLICIES)),
    )
    fmt = try_format(**fields)
    from hypothesis import assume

    assume(fmt is not None)
    return fmt
