"""Reading data pickles (the CIFAR-10 ``cifar-10-batches-py`` files) without running code.

Unpickling calls whatever function the pickle names, so a ``test_batch`` handed to ``--data``
could run any command the moment it is read.  :class:`RestrictedUnpickler` resolves only the
globals such data files are made of — numpy's array and dtype reconstructors (and the two
helpers other pickle protocols use to spell bytes and arrays) plus a few builtin types — from a
fixed table, without importing anything; every other global is refused before it exists.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
import pickletools
from pathlib import Path

import numpy as np

from .errors import SieveError


def _numpy_core(module: str, name: str):
    """``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core.<module>.<name>`` (numpy 1)."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except ImportError:
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 uses it to write bytes into protocol-2 pickles (latin-1 only)."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r} (only latin1 spells bytes)")
    return codecs.encode(text, "latin1")


_RECONSTRUCT = _numpy_core("multiarray", "_reconstruct")
_FROMBUFFER = _numpy_core("numeric", "_frombuffer")

# (module, name) as written in the pickle -> the object it stands for.  Both numpy spellings
# are listed because files written under numpy 1 name ``numpy.core`` and under numpy 2 ``numpy._core``.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,      # pickle protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,                   # bytes in protocol-2 pickles from Python 3
    **{(module, t.__name__): t for module in ("builtins", "__builtin__") for t in (dict, list, bytes, str, int)},
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`; ``.name`` says which."""

    def __init__(self, name: str):
        super().__init__(f"refused global {name}")
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, bytes, strings, numbers and numpy arrays."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"{module}.{name}") from None


def read_data_pickle(path: str | Path, what: str) -> object:
    """The object in the data pickle ``path`` (Python 2 strings come back as bytes), or a
    SieveError naming the file and, when that is the problem, the global it was refused."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, encoding="bytes").load()
    except RefusedGlobal as exc:
        raise SieveError(f"{what} {path} names {exc.name}, which a data file never holds; refused to unpickle it "
                         "(only dicts, lists, bytes, str, int and numpy arrays are read from a pickle)") from None
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is the same user problem
        raise SieveError(f"cannot read {what} {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None


def pickle_globals(path: str | Path, pickles: int = 5) -> list[str]:
    """The globals (``module.name``) named by the first ``pickles`` pickles in ``path``, read
    statically with :mod:`pickletools` (nothing is built or called), in order of appearance.

    For saying *what* a refused file held when the reader that refused it does not say (torch's
    ``weights_only`` unpickler stops at protocol-4 framing before reaching any global).
    ``STACK_GLOBAL`` takes its names from the two strings pushed last, which is how picklers
    write them (a memoised name fetched back with ``BINGET`` is missed).
    """
    found: list[str] = []
    with open(path, "rb") as handle:
        for _ in range(pickles):
            strings: list[str] = []
            try:
                for op, arg, _pos in pickletools.genops(handle):
                    if op.name == "GLOBAL" or op.name == "INST":
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
            except Exception:  # noqa: BLE001 - past the last pickle (raw tensor bytes, end of file)
                break
    return list(dict.fromkeys(found))
