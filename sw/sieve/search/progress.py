"""What a search shows while it runs: one labelled tqdm bar with a total per phase, and log
lines written so that they never land on a bar's text.

Why a class: the driver, the fp32 passes of :class:`~sieve.search.context.SearchContext` and
the strategies all report progress; one object carries whether bars are shown and where log
lines go, and writes each line with the bars cleared first (``tqdm.external_write_mode``, what
``tqdm.write`` uses), so a caller's plain ``print`` cannot glue a line onto a bar either when
stdout and stderr are redirected to one file.
"""

from __future__ import annotations

import sys
from typing import Callable

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """Labelled bars (``enabled``) and log lines (``log``, or nothing when it is None)."""

    def __init__(self, enabled: bool = False, log: Callable[[str], None] | None = None):
        self.enabled = enabled
        self.log = log

    def bar(self, desc: str, total: int | None, unit: str) -> tqdm:
        """A bar for one phase (use it as a context manager so it closes on errors too)."""
        return tqdm(desc=desc, total=total, unit=unit, disable=not self.enabled, leave=False,
                    dynamic_ncols=True)

    def say(self, line: str) -> None:
        """One log line, written with every bar cleared first and redrawn after it."""
        if self.log is None:
            return
        with tqdm.external_write_mode():
            self.log(line)
            if sys.stdout is not None:  # (a print still in stdout's buffer would land after the redrawn bar)
                sys.stdout.flush()
