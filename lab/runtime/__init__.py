"""How a run executes, not what it computes: several processes (data parallel), guards against
non-finite updates and signals, quantized backbones, the Hub and its cache.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
