"""Building blocks that know nothing of the kit's models or runs: tensor padding and grouping,
seeding, n-gram text statistics, value checks with messages that say how to fix them.
Imports no other ``lab`` module.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
