"""How a run executes, not what it computes: several processes (data parallel: ``distributed``),
guards against non-finite updates and signals (``guards``), quantized backbones (``quantization``),
the Hub and its cache (``hub``), the global random streams (``rng``), a step's records
(``history``) and experiment tracking (``tracking``).
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
