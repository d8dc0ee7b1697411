"""Multi-dsNN (dissertation ch. 3): a monolithic network replaced by a cheap selector and an
array of *data-specialised* networks (dsNNs), only one of which runs per input.

The pieces, one job each:

* :mod:`.partition`  per-input error (1 - max softmax) and the main/tail partition by threshold;
* :mod:`.selector`   the decision-tree selector (scikit-learn) and its misclassification rate;
* :mod:`.dsnn`       dsNN topologies and their deterministic, cached training;
* :mod:`.benchmarks` the monoliths, their shared preprocessor and the data splits;
* :mod:`.cost`       MACs, parameter bytes, energy per input, measured CPU latency;
* the paired held-out comparison with the monolith (exact McNemar) is :mod:`sieve.stats`;
* :mod:`.explore`    design-space exploration, Pareto frontier and the chosen point;
* :mod:`.report`     JSON, Markdown and PNG.
"""
