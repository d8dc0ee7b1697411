"""Speculative inference runtime: a cheap model answers, a trustworthy one recovers doubts.

Modules, one job each: :mod:`probes` (confidence of an output), :mod:`detector`
(misspeculation thresholds), :mod:`pairing` (Dynamic Duo pair selection), :mod:`ensemble`
(flexible ensembles), :mod:`cascade` (batched executor and offered-load latency),
:mod:`selector` (SIEVE's device/cloud selector), :mod:`sources` (model logits cache and
measured latencies), :mod:`report` (JSON, Markdown and plots).  The algorithms work on logits
arrays so that they are cheap to test; only :mod:`sources` and the executor touch models.
"""
