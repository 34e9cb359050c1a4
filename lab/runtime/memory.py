"""Resident memory of this process, and a trainer callback that keeps its high-water mark.

>>> rss_mb() > 0
True
"""

from __future__ import annotations

import os


def rss_mb() -> float:
    """Resident memory (RSS) of this process now, in MiB (Linux ``/proc``; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


class PeakMemory:
    """A trainer callback: ``peak`` is the largest RSS seen after a step (MiB), from ``start`` on."""

    def __init__(self):
        self.peak = rss_mb()

    def __call__(self, trainer=None, row=None) -> None:
        self.peak = max(self.peak, rss_mb())
