"""SIEVE hardware: Amaranth constant calculator, compressor/decompressor engines, N-lane unit.

``sieve_hw.generate`` is the entry point (``python -m sieve_hw.generate --out build/rtl``)
and the API the synthesis flow calls (``DESIGNS``, ``elaborate``, ``write_verilog``,
``write_rtlil``).  The hardware imports nothing of SIEVE but ``sieve.cfloat`` (and
``sieve.io_utils`` for atomic file writes).
"""
