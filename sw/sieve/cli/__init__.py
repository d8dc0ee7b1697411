"""The ``sieve`` command line: a thin layer that parses arguments and prints results.

Each sub-command lives in its own module with a ``register(subparsers)`` function; the
work itself is done by the library modules they call.
"""
