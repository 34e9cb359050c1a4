"""Experiments over many runs: ablation arms, the ablation runner, and its report.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
