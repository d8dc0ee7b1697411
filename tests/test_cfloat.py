"""Format specification: validation messages, text form, derived values, engine constants."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings

from sieve import PRESETS, Format, FormatError, engine_constants
from tests.formats import formats, small_formats


def test_defaults_are_the_sieve_defaults():
    f = Format(4, 3)
    assert (f.signed, f.bias, f.rounding, f.subnormals, f.overflow, f.specials) == (
        True, 7, "nearest_even", False, "saturate", "none")
    assert f.width == 8 and str(f) == "se4m3b7"


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("e4m3", "se4m3b7"),
        ("se4m3b7", "se4m3b7"),
        ("ue3m2b-2+rtz", "ue3m2b-2+rtz"),
        ("e5m2+sub+ieee+ovinf", "se5m2b15+sub+ieee+ovinf"),
        ("E4M3B7+FN+OVNAN+SUB", "se4m3b7+sub+fn+ovnan"),
        ("float8_e4m3fn", "se4m3b7+sub+fn+ovnan"),
        ("float6_e2m3fn", "se2m3b1+sub"),
        ("ue8m0b128", "ue8m0b128"),
    ],
)
def test_text_form_parses_to_canonical(text, canonical):
    assert str(Format.parse(text)) == canonical
    assert Format.parse(canonical) == Format.parse(text)


@settings(max_examples=300, deadline=None)
@given(formats())
def test_text_form_round_trips(fmt):
    assert Format.parse(str(fmt)) == fmt


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(exp_bits=0, man_bits=3), "exp_bits must be 1..8, got 0"),
        (dict(exp_bits=9, man_bits=3), "exp_bits must be 1..8, got 9"),
        (dict(exp_bits=4, man_bits=24), "man_bits must be 0..23, got 24"),
        (dict(exp_bits=4, man_bits=-1), "man_bits must be 0..23, got -1"),
        (dict(exp_bits=4.0, man_bits=3), "exp_bits must be an integer"),
        (dict(exp_bits=4, man_bits=3, bias=1.5), "bias must be an integer"),
        (dict(exp_bits=4, man_bits=3, rounding="up"), "rounding must be one of"),
        (dict(exp_bits=4, man_bits=3, overflow="wrap"), "overflow must be one of"),
        (dict(exp_bits=4, man_bits=3, specials="ocp"), "specials must be one of"),
        (dict(exp_bits=1, man_bits=3, specials="ieee"), "needs exp_bits >= 2"),
        (dict(exp_bits=4, man_bits=0, specials="ieee"), "needs man_bits >= 1"),
        (dict(exp_bits=1, man_bits=0, specials="fn"), "at least two exponent+mantissa bits"),
        (dict(exp_bits=4, man_bits=3, signed=False, specials="fnuz"), "needs a signed format"),
        (dict(exp_bits=4, man_bits=3, overflow="inf"), "overflow='inf' needs specials='ieee'"),
        (dict(exp_bits=4, man_bits=3, overflow="nan"), "overflow='nan' needs a NaN code"),
        (dict(exp_bits=8, man_bits=3, bias=100), "beyond float32 (exponent <= 127); use bias >= 128"),
        (dict(exp_bits=8, man_bits=22, bias=129), "finer than float32's 2^-149; use bias <= 128"),
        (dict(exp_bits=8, man_bits=23, bias=128), "whatever the bias (Max needs bias >= 128, the smallest step bias <= 127)"),
    ],
)
def test_illegal_formats_say_what_is_wrong(fields, message):
    with pytest.raises(FormatError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+").replace("^", r"\^")):
        Format(**fields)


@pytest.mark.parametrize(
    "text, message",
    [
        ("e4", "cannot read format 'e4'"),
        ("e4m3+zz", r"unknown policy '\+zz'"),
        ("float8_e9m9", "cannot read format"),
    ],
)
def test_bad_text_says_what_is_expected(text, message):
    with pytest.raises(FormatError, match=message):
        Format.parse(text)


def test_parse_rejects_non_text():
    with pytest.raises(FormatError, match="a format is given as text"):
        Format.parse(8)


def test_derived_values_e4m3():
    f = Format.parse("e4m3")
    assert f.max_value == 480.0
    assert f.min_normal == 2.0 ** -6
    assert f.min_value == 2.0 ** -6
    assert f.with_(subnormals=True).min_value == 2.0 ** -9
    assert f.max_magnitude_code == 0x7F


def test_derived_values_of_special_conventions():
    assert PRESETS["float8_e4m3fn"].max_value == 448.0
    assert PRESETS["float8_e4m3"].max_value == 240.0
    assert PRESETS["float8_e5m2"].max_value == 57344.0
    assert PRESETS["float8_e4m3fnuz"].max_value == 240.0
    assert PRESETS["float4_e2m1fn"].max_value == 6.0
    assert PRESETS["float8_e4m3fn"].nan_code(True) == 0xFF
    assert PRESETS["float8_e5m2"].nan_code(False) == 0x7E
    assert PRESETS["float8_e5m2"].inf_magnitude_code == 0x7C
    assert PRESETS["float8_e4m3fnuz"].nan_code(False) == 0x80
    assert Format.parse("e4m3").nan_code() is None


def test_engine_constants_literal_e4m3():
    c = engine_constants(Format.parse("e4m3"))
    assert (c.min_bits, c.half_min_bits, c.max_bits) == (0x3C800000, 0x3C000000, 0x43F00000)
    assert (c.sign_shift, c.adjusted_bias, c.exp_mask, c.exp_shift, c.man_shift) == (24, 120, 15, 3, 20)


def test_engine_constants_literal_unsigned_with_subnormals():
    c = Format.parse("ue5m2b20+sub").constants
    # Min = 2^(1-20-2) = 2^-21, Max = 2^(31-20) * 1.75
    assert c.min_bits == (127 - 21) << 23
    assert c.half_min_bits == (127 - 22) << 23
    assert c.max_bits == ((127 + 11) << 23) | (0b11 << 21)
    assert (c.sign_shift, c.adjusted_bias, c.exp_mask, c.exp_shift, c.man_shift) == (0, 107, 31, 2, 21)


def test_every_small_format_has_exact_fp32_range():
    import numpy as np

    count = 0
    for fmt in small_formats(max_width=12):
        for v in (fmt.max_value, fmt.min_value, fmt.min_normal):
            assert float(np.float32(v)) == v, fmt
        count += 1
    assert count > 1000


def test_formats_are_hashable_and_immutable():
    f = Format.parse("e4m3")
    assert {f: 1}[Format(4, 3, 7)] == 1
    with pytest.raises(Exception):
        f.exp_bits = 5


# ---------------------------------------------------------------- one policy per group, advice that works


@pytest.mark.parametrize(
    "text, message",
    [
        ("e4m3+ieee+fn", r"'\+ieee' and '\+fn' contradict each other .* one special-code convention"),
        ("e4m3+fnuz+sub+ieee", r"'\+fnuz' and '\+ieee' contradict"),
        ("e5m2+ieee+ovinf+ovnan", r"'\+ovinf' and '\+ovnan' contradict .* one overflow policy"),
        ("e4m3+rtz+rtz", r"'\+rtz' given twice"),
        ("e4m3+sub+fn+sub", r"'\+sub' given twice"),
        ("e4m3+fn+fn", r"'\+fn' given twice"),
    ],
)
def test_contradictory_or_repeated_policies_are_refused(text, message):
    with pytest.raises(FormatError, match=message):
        Format.parse(text)


ADVISED = re.compile(r"; try (.*)$")
ADVISED_BIAS = re.compile(r"use bias [<>]= (-?\d+)(?: \(at (?:most|least) (-?\d+)\))?")


def advised_formats(fmt_fields: dict, message: str) -> list[Format]:
    """Every format a refusal advises, built the way a user would follow the advice."""
    out = []
    tried = ADVISED.search(message)
    if tried:
        out += [Format.parse(text) for text in tried.group(1).split(" or ")]  # must parse
    bias = ADVISED_BIAS.search(message)
    if bias:
        out += [Format(**{**fmt_fields, "bias": int(b)}) for b in bias.groups() if b is not None]  # both ends
    return out


def test_e8m23_advice_leads_to_formats_that_exist():
    with pytest.raises(FormatError) as refused:
        Format.parse("e8m23b128")
    advised = {str(f) for f in advised_formats({}, str(refused.value))}
    assert advised == {"se8m23b127+ieee", "se8m22b128", "se7m23b63"}


def test_every_advice_of_the_validator_leads_to_a_legal_format():
    """Exhaustive over E, M, sign, specials, overflow and the biases around the legal range:
    every format a refusal advises parses, and a bias range it gives is legal at both ends."""
    refused = advised = 0
    for e in range(1, 9):
        for m in range(0, 24):
            top = (1 << e) - 1
            biases = {(1 << (e - 1)) - 1, top - 128, top - 127, 150 - m, 151 - m, -300, 300}
            for signed in (True, False):
                for specials in ("none", "ieee", "fn", "fnuz"):
                    for overflow in ("saturate", "inf", "nan"):
                        for bias in biases:
                            fields = dict(exp_bits=e, man_bits=m, bias=bias, signed=signed,
                                          specials=specials, overflow=overflow)
                            try:
                                Format(**fields)
                            except FormatError as exc:
                                refused += 1
                                for fmt in advised_formats(fields, str(exc)):
                                    assert Format.parse(str(fmt)) == fmt
                                    advised += 1
    assert refused > 10_000 and advised > 10_000


def test_presets_still_round_trip_under_the_one_policy_rule():
    for name, fmt in PRESETS.items():
        assert Format.parse(str(fmt)) == fmt, name
        assert Format.parse(name) == fmt
