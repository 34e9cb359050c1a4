"""Reading the outside world: dataset sources and their layouts, config values typed as
text (CLI flags, YAML/JSON files).
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
