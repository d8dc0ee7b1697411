"""Double-shot pruning (dissertation ch. 7) and its single-shot baselines.

* :mod:`.networks` – the benchmark nets for 28×28 inputs and SNIP's variance-scaling init;
* :mod:`.snip` – connection sensitivity ``|g ⊙ w|`` on one minibatch → per-layer keep counts;
* :mod:`.metrics` – the five importance metrics of the trained dense network's weights;
* :mod:`.masks` – masks as fixed zeros through ``torch.nn.utils.prune``;
* :mod:`.pipeline` – one configuration (dense, SNIP, local random, double-shot), cached;
* :mod:`.study` – the comparison over nets, seeds and metrics, with paired verdicts;
* :mod:`.report` – JSON, Markdown and plots;
* what a pruned tensor costs in memory (values + index) is :mod:`sieve.sparse_storage`, which the search uses.
"""

METHODS = ("snip", "random", "doubleshot")
