"""Reward signals beyond the seed's two: retrieval-grounded truthfulness.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
