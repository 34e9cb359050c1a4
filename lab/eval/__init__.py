"""Measuring runs: multiple-choice truthfulness and BERTScore/METEOR, statistics over seeds
and paired differences, run diagnostics (stability, collapse, reward hacking).
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
