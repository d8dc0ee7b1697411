"""SIEVE: custom floating-point formats for CNN weights and activations, end to end.

The top level exposes the format and its golden-model emulator; everything else lives in
sub-modules (``sieve.search``, ``sieve.export``, ``sieve.runtime`` ...) and is imported on
demand so that ``import sieve`` stays light.
"""

from .cfloat import PRESETS, EngineConstants, Format, FormatError, engine_constants
from .codec import decode, encode, quantize
from .emulator import decode_table, pack, unpack

__version__ = "0.1.0"

__all__ = [
    "Format",
    "FormatError",
    "EngineConstants",
    "engine_constants",
    "PRESETS",
    "encode",
    "decode",
    "decode_table",
    "quantize",
    "pack",
    "unpack",
]
