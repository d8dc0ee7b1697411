"""Compressed ONNX export: packed custom-float weights and in-graph activation rounding.

``sieve.export.exporter.export_onnx`` writes the file, ``sieve.export.inspect.inspect_onnx``
lists what it stores; ``weight_decode`` and ``rounding`` build the decode and rounding subgraphs
on the shared ``onnx_graph.GraphBuilder``.
"""
