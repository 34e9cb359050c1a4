"""Opt-in speed, each piece checked against the plain path it replaces: the cached decoder,
LoRA folding for decoding, oneDNN prepacking, training attention kernels. Every private or
version-specific API of torch or transformers lives here, behind feature detection.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
