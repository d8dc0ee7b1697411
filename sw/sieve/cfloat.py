"""The custom floating-point format: one specification for every part of SIEVE.

A :class:`Format` fixes the bit layout of a code (``[sign][exponent][mantissa]``, MSB
first) and the policy for every corner case.  The emulator, the RTL engines, the ONNX
decode graph and the search all read their behaviour from here, so that they agree bit for
bit.  This module imports nothing else of SIEVE on purpose: it is the narrow door every
other room goes through.

Semantics (the contract; ``docs/format.md`` spells out every corner with examples):

* Exponent field 0 is zero, or a subnormal ``2^(1-bias) * m/2^M`` when ``subnormals``.
* Exponent fields ``1 .. 2^E-1`` are normals ``2^(e-bias) * (1 + m/2^M)``, except the codes
  the ``specials`` convention reserves:

  ``none``  every code is a finite number (the SIEVE default; the best use of few bits).
  ``ieee``  exponent all-ones is reserved: mantissa 0 is ±Inf, anything else NaN.
  ``fn``    only the all-ones exponent *and* mantissa code is NaN (both signs); no Inf.
  ``fnuz``  the code ``1000…0`` (negative zero) is the only NaN; there is no −0 and no Inf.

* Rounding is round-to-nearest-even or truncation (toward zero), applied with an unbounded
  exponent first; a finite input whose rounded magnitude exceeds ``Max`` then *overflows*
  according to ``overflow``: ``saturate`` (±Max), ``inf`` (±Inf, needs ``ieee``) or ``nan``
  (NaN, needs a NaN code).
* With subnormals off, magnitudes below ``Min/2`` flush to zero and magnitudes in
  ``[Min/2, Min)`` round up to ``Min`` under nearest rounding (the dissertation's engines
  compare against the Min/2 constant); truncation flushes everything below ``Min``.
* ±Inf input: ±Inf where the format has it, else treated as overflow.
* NaN input: the format's NaN code with the input's sign (``fnuz``: its single NaN code);
  a format without NaN codes gives zero with the *opposite* sign bit, which is exactly what
  ml_dtypes does for its ``*fn`` types without NaN.
* Unsigned formats (no sign bit) clamp every negative input, −0 and −Inf to code 0.
* Every representable value must be an exact float32 (checked by :meth:`Format.validate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property
from typing import ClassVar

import numpy as np

__all__ = [
    "Format",
    "FormatError",
    "EngineConstants",
    "engine_constants",
    "PRESETS",
    "ROUNDINGS",
    "OVERFLOWS",
    "SPECIALS",
    "code_dtype",
]

ROUNDINGS = ("nearest_even", "truncate")
OVERFLOWS = ("saturate", "inf", "nan")
SPECIALS = ("none", "ieee", "fn", "fnuz")

FP32_EXP_BIAS = 127
FP32_MAN_BITS = 23


class FormatError(ValueError):
    """An illegal Format: the message says which field is wrong and what is allowed."""


def _fp32_bits(value: float) -> int:
    """Bit pattern of a float that is known to be an exact float32."""
    return int(np.array(value, dtype=np.float32).view(np.uint32))


def code_dtype(width: int) -> np.dtype:
    """Smallest unsigned NumPy dtype that holds a ``width``-bit code."""
    if width <= 8:
        return np.dtype(np.uint8)
    if width <= 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


@dataclass(frozen=True)
class EngineConstants:
    """The per-format constants that configure the compressor/decompressor engines.

    These are the values the dissertation's constant calculator produces (§4.4.2); the RTL
    constant calculator computes the same numbers from the same Format fields and a test
    compares them for every legal Format.  ``*_bits`` are float32 bit patterns.
    """

    min_bits: int        # smallest positive representable magnitude (subnormal if enabled)
    half_min_bits: int   # Min/2 (the flush-to-zero threshold with subnormals off)
    max_bits: int        # largest finite magnitude
    sign_shift: int      # right shift taking fp32 bit 31 to the code's sign bit (0 if unsigned)
    adjusted_bias: int   # 127 - bias: fp32 exponent field minus code exponent field
    exp_mask: int        # 2^exp_bits - 1
    exp_shift: int       # position of the exponent field in the code (= man_bits)
    man_shift: int       # 23 - man_bits: fp32 mantissa bits dropped by the compressor


@dataclass(frozen=True)
class Format:
    """A custom floating-point format plus its corner-case policies.

    Construct directly, with :meth:`parse` from the text form, or from :data:`PRESETS`.
    Instances are immutable, hashable and validated on construction.

    Text form (``str(fmt)`` is canonical and :meth:`parse` round-trips it)::

        [s|u]e<E>m<M>[b<bias>][+policy...]

    ``s`` signed (default) or ``u`` unsigned; ``b`` defaults to ``2^(E-1)-1``; policies:
    ``sub`` (subnormals on), ``rtz`` (truncation), ``ieee``/``fn``/``fnuz`` (special codes),
    ``ovinf``/``ovnan`` (overflow to Inf/NaN; saturation is the default).  Examples:
    ``se4m3b7``, ``ue3m2b-2+rtz``, ``se4m3b7+sub+fn+ovnan`` (= ml_dtypes float8_e4m3fn).
    A preset name such as ``float8_e5m2`` is accepted too.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    signed: bool = True
    rounding: str = "nearest_even"
    subnormals: bool = False
    overflow: str = "saturate"
    specials: str = "none"

    _TEXT: ClassVar[re.Pattern[str]] = re.compile(
        r"^(?P<sign>[su]?)e(?P<e>\d+)m(?P<m>\d+)(?:b(?P<b>-?\d+))?(?P<pol>(?:\+[a-z]+)*)$"
    )

    def __post_init__(self) -> None:
        for name in ("exp_bits", "man_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise FormatError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (max(self.exp_bits, 1) - 1)) - 1)
        elif isinstance(self.bias, bool) or not isinstance(self.bias, (int, np.integer)):
            raise FormatError(f"bias must be an integer, got {self.bias!r}")
        else:
            object.__setattr__(self, "bias", int(self.bias))
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "subnormals", bool(self.subnormals))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`FormatError` with one clear sentence for an illegal combination.

        Every format a message advises (after ``try``) is itself legal, and a bias it advises
        lies in the range that fits float32: following the advice never leads to a second,
        contradicting refusal (``tests/test_cfloat.py`` checks this over every E, M and policy).
        """
        problem = self._problem(advise=True)
        if problem is not None:
            raise FormatError(problem)

    def _problem(self, advise: bool) -> str | None:
        """What is illegal about this format (None: nothing); with ``advise``, legal alternatives."""
        if not 1 <= self.exp_bits <= 8:
            return f"exp_bits must be 1..8, got {self.exp_bits}"
        if not 0 <= self.man_bits <= 23:
            return f"man_bits must be 0..23, got {self.man_bits}"
        if self.rounding not in ROUNDINGS:
            return f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}"
        if self.overflow not in OVERFLOWS:
            return f"overflow must be one of {OVERFLOWS}, got {self.overflow!r}"
        if self.specials not in SPECIALS:
            return f"specials must be one of {SPECIALS}, got {self.specials!r}"
        try_ = self._try if advise else (lambda *changes: "")
        if self.specials == "ieee" and self.exp_bits < 2:
            return ("specials='ieee' reserves the all-ones exponent and needs exp_bits >= 2"
                    + try_(dict(exp_bits=2), dict(specials="fn")))
        if self.specials == "ieee" and self.man_bits < 1:
            return ("specials='ieee' needs man_bits >= 1 to tell NaN from Inf"
                    + try_(dict(man_bits=1), dict(specials="fn")))
        if self.specials == "fn" and self.exp_bits + self.man_bits < 2:
            return ("specials='fn' needs at least two exponent+mantissa bits"
                    + try_(dict(man_bits=1), dict(specials="fnuz")))
        if self.specials == "fnuz" and not self.signed:
            return ("specials='fnuz' uses the negative-zero code as NaN and needs a signed format"
                    + try_(dict(signed=True), dict(specials="fn")))
        if self.overflow == "inf" and self.specials != "ieee":
            return ("overflow='inf' needs specials='ieee' (the only convention with Inf codes)"
                    + try_(dict(specials="ieee"), dict(overflow="saturate")))
        if self.overflow == "nan" and self.specials == "none":
            return ("overflow='nan' needs a NaN code (specials 'ieee', 'fn' or 'fnuz')"
                    + try_(dict(specials="fn"), dict(specials="fnuz"), dict(specials="ieee"),
                           dict(overflow="saturate")))
        if self.max_exponent < self.min_exponent:
            return f"{self} has no finite normal exponent left after its reserved codes"
        low, high = _bias_range(self.exp_bits, self.man_bits, self.specials)
        if low > high:
            return (
                f"{self.exp_bits} exponent and {self.man_bits} mantissa bits span more binades than"
                f" float32 holds whatever the bias (Max needs bias >= {low}, the smallest step"
                f" bias <= {high})"
                + try_(dict(specials="ieee"), dict(man_bits=self.man_bits - (low - high)),
                       dict(exp_bits=self.exp_bits - 1))
            )
        if self.max_exponent > 127:
            return (
                f"bias {self.bias} puts Max at 2^{self.max_exponent}, beyond float32 (exponent <= 127);"
                f" use bias >= {low} (at most {high})"
            )
        if self.min_exponent - self.man_bits < -149:
            return (
                f"bias {self.bias} puts the smallest step at 2^{self.min_exponent - self.man_bits},"
                f" finer than float32's 2^-149; use bias <= {high} (at least {low})"
            )
        return None

    def _alternative(self, **changes) -> "Format | None":
        """This format with ``changes`` and its bias moved into the range that fits float32,
        if that format is legal (checked without advice, so that advice never recurses)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields.update(changes)
        try:
            low, high = _bias_range(fields["exp_bits"], fields["man_bits"], fields["specials"])
        except ValueError:
            return None
        if low > high:
            return None
        if "exp_bits" in changes and "bias" not in changes:
            fields["bias"] = (1 << (fields["exp_bits"] - 1)) - 1  # a new width: its default bias
        fields["bias"] = min(max(fields["bias"], low), high)
        candidate = object.__new__(type(self))
        for name, value in fields.items():
            object.__setattr__(candidate, name, value)
        return None if candidate._problem(advise=False) else candidate

    def _try(self, *changes: dict) -> str:
        """``; try X or Y``: the legal ones among this format with each set of ``changes``."""
        alternatives = (self._alternative(**change) for change in changes)
        texts = list(dict.fromkeys(str(a) for a in alternatives if a is not None))
        return f"; try {' or '.join(texts)}" if texts else ""

    # ------------------------------------------------------------------ text form
    @classmethod
    def parse(cls, text: str) -> "Format":
        """Parse the text form (or a preset name) into a Format; see the class docstring."""
        if not isinstance(text, str):
            raise FormatError(f"a format is given as text such as 'e4m3' or 'float8_e4m3fn', got {text!r}")
        s = text.strip().lower()
        if s in PRESETS:
            return PRESETS[s]
        m = cls._TEXT.match(s)
        if not m:
            raise FormatError(
                f"cannot read format {text!r}: expected [s|u]e<E>m<M>[b<bias>][+sub][+rtz][+ieee|+fn|+fnuz]"
                f"[+ovinf|+ovnan], e.g. 'e4m3', 'ue5m2b20+sub', or a preset ({', '.join(PRESETS)})"
            )
        kwargs: dict = dict(
            exp_bits=int(m["e"]),
            man_bits=int(m["m"]),
            bias=int(m["b"]) if m["b"] is not None else None,
            signed=m["sign"] != "u",
        )
        seen: dict[str, str] = {}  # policy group -> the token that set it
        for token in filter(None, m["pol"].split("+")):
            group = _POLICY_GROUPS.get(token)
            if group in seen:
                first = seen[group]
                raise FormatError(
                    f"'+{token}' given twice in {text!r}; give it once" if first == token else
                    f"'+{first}' and '+{token}' contradict each other in {text!r}: a format has one"
                    f" {group} ({' or '.join('+' + t for t, g in _POLICY_GROUPS.items() if g == group)}); keep one"
                )
            if group is not None:
                seen[group] = token
            if token == "sub":
                kwargs["subnormals"] = True
            elif token == "rtz":
                kwargs["rounding"] = "truncate"
            elif token in ("ieee", "fn", "fnuz"):
                kwargs["specials"] = token
            elif token in ("ovinf", "ovnan"):
                kwargs["overflow"] = token[2:]
            else:
                raise FormatError(
                    f"unknown policy '+{token}' in {text!r}; known: +sub +rtz +ieee +fn +fnuz +ovinf +ovnan"
                )
        return cls(**kwargs)

    def __str__(self) -> str:
        text = f"{'s' if self.signed else 'u'}e{self.exp_bits}m{self.man_bits}b{self.bias}"
        if self.subnormals:
            text += "+sub"
        if self.rounding == "truncate":
            text += "+rtz"
        if self.specials != "none":
            text += f"+{self.specials}"
        if self.overflow != "saturate":
            text += f"+ov{self.overflow}"
        return text

    def with_(self, **changes) -> "Format":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ derived
    @property
    def width(self) -> int:
        """Bits per code: sign + exponent + mantissa."""
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def code_dtype(self) -> np.dtype:
        return code_dtype(self.width)

    @property
    def min_exponent(self) -> int:
        """Unbiased exponent of the smallest normal (exponent field 1)."""
        return 1 - self.bias

    @property
    def max_exponent(self) -> int:
        """Unbiased exponent of the largest finite value."""
        return _top_field(self.exp_bits, self.man_bits, self.specials) - self.bias

    @property
    def max_magnitude_code(self) -> int:
        """The code (sign bit clear) of Max."""
        top = self.max_exponent + self.bias
        man_all = (1 << self.man_bits) - 1
        if self.specials == "fn" and self.man_bits > 0:
            man_all -= 1
        return (top << self.man_bits) | man_all

    @property
    def max_value(self) -> float:
        """Largest finite value, Max."""
        man = self.max_magnitude_code & ((1 << self.man_bits) - 1)
        return float(np.ldexp(1.0 + man / (1 << self.man_bits), self.max_exponent))

    @property
    def min_normal(self) -> float:
        """Smallest positive normal, ``2^(1-bias)``."""
        return float(np.ldexp(1.0, self.min_exponent))

    @property
    def min_subnormal(self) -> float:
        """Smallest positive subnormal ``2^(1-bias-M)`` (only representable when subnormals are on)."""
        return float(np.ldexp(1.0, self.min_exponent - self.man_bits))

    @property
    def min_value(self) -> float:
        """Min: the smallest positive representable value (subnormal if enabled)."""
        if self.subnormals and self.man_bits > 0:
            return self.min_subnormal
        return self.min_normal

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials in ("ieee", "fn", "fnuz")

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.specials != "fnuz"

    @property
    def inf_magnitude_code(self) -> int | None:
        """Code of +Inf (sign clear), or None."""
        if not self.has_inf:
            return None
        return ((1 << self.exp_bits) - 1) << self.man_bits

    def nan_code(self, negative: bool = False) -> int | None:
        """The canonical NaN code for a NaN input of the given sign, or None if there is none."""
        sign = (1 << (self.width - 1)) if (negative and self.signed) else 0
        if self.specials == "ieee":
            return sign | (((1 << self.exp_bits) - 1) << self.man_bits) | (1 << (self.man_bits - 1))
        if self.specials == "fn":
            return sign | ((1 << (self.exp_bits + self.man_bits)) - 1)
        if self.specials == "fnuz":
            return 1 << (self.width - 1)
        return None

    @cached_property
    def constants(self) -> EngineConstants:
        return engine_constants(self)

    def describe(self) -> dict:
        """Everything a person or program wants to know about the format, JSON-ready."""
        c = self.constants
        return {
            "format": str(self),
            "width": self.width,
            "signed": self.signed,
            "exp_bits": self.exp_bits,
            "man_bits": self.man_bits,
            "bias": self.bias,
            "rounding": self.rounding,
            "subnormals": self.subnormals,
            "overflow": self.overflow,
            "specials": self.specials,
            "max": self.max_value,
            "min_normal": self.min_normal,
            "min": self.min_value,
            "min_subnormal": self.min_subnormal if self.subnormals else None,
            "constants": {k: getattr(c, k) for k in c.__dataclass_fields__},
        }


def engine_constants(fmt: Format) -> EngineConstants:
    """The one function that derives the engine constants of a Format (see EngineConstants)."""
    min_value = fmt.min_value
    return EngineConstants(
        min_bits=_fp32_bits(min_value),
        half_min_bits=_fp32_bits(min_value / 2),
        max_bits=_fp32_bits(fmt.max_value),
        sign_shift=(32 - fmt.width) if fmt.signed else 0,
        adjusted_bias=FP32_EXP_BIAS - fmt.bias,
        exp_mask=(1 << fmt.exp_bits) - 1,
        exp_shift=fmt.man_bits,
        man_shift=FP32_MAN_BITS - fmt.man_bits,
    )


#: Text-form policies by the one field each sets: the grammar admits one policy per group.
_POLICY_GROUPS = {
    "sub": "subnormal policy",
    "rtz": "rounding policy",
    "ieee": "special-code convention", "fn": "special-code convention", "fnuz": "special-code convention",
    "ovinf": "overflow policy", "ovnan": "overflow policy",
}


def _top_field(exp_bits: int, man_bits: int, specials: str) -> int:
    """The exponent field of Max: all ones, less the binade the specials reserve."""
    top_field = (1 << exp_bits) - 1
    if specials == "ieee":
        top_field -= 1
    if specials == "fn" and man_bits == 0:
        top_field -= 1  # the only code of the top binade is NaN
    return top_field


def _bias_range(exp_bits: int, man_bits: int, specials: str) -> tuple[int, int]:
    """The biases (low..high, empty when low > high) that keep every value an exact float32:
    Max at most 2^127 (``top_field - bias <= 127``) and the smallest step at least 2^-149
    (``1 - bias - man_bits >= -149``)."""
    if not (1 <= exp_bits <= 8 and 0 <= man_bits <= 23):
        raise ValueError(f"no float32 bias range for e{exp_bits}m{man_bits}")
    return _top_field(exp_bits, man_bits, specials) - FP32_EXP_BIAS, FP32_EXP_BIAS + 23 - man_bits


def _ml(exp_bits: int, man_bits: int, bias: int, specials: str, overflow: str) -> Format:
    return Format(exp_bits, man_bits, bias, signed=True, subnormals=True, specials=specials, overflow=overflow)


#: Formats that reproduce ml_dtypes' named types bit for bit (codes, values, NaN, overflow).
PRESETS: dict[str, Format] = {
    "float8_e4m3fn": _ml(4, 3, 7, "fn", "nan"),
    "float8_e4m3": _ml(4, 3, 7, "ieee", "inf"),
    "float8_e5m2": _ml(5, 2, 15, "ieee", "inf"),
    "float8_e3m4": _ml(3, 4, 3, "ieee", "inf"),
    "float8_e4m3fnuz": _ml(4, 3, 8, "fnuz", "nan"),
    "float8_e5m2fnuz": _ml(5, 2, 16, "fnuz", "nan"),
    "float8_e4m3b11fnuz": _ml(4, 3, 11, "fnuz", "nan"),
    "float6_e3m2fn": _ml(3, 2, 3, "none", "saturate"),
    "float6_e2m3fn": _ml(2, 3, 1, "none", "saturate"),
    "float4_e2m1fn": _ml(2, 1, 1, "none", "saturate"),
    "bfloat16": _ml(8, 7, 127, "ieee", "inf"),
}
