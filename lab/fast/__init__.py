"""Opt-in speed, each piece checked against the plain path it replaces.

- ``decoder``: :func:`lab.generator.decode`'s tokens with a preallocated cache and a ready mask;
- ``folding``: the active LoRA adapter folded into the weights while decoding;
- ``prepack``: bf16 linears with weights prepacked once for oneDNN (CPU);
- ``attention``: the attention kernel for passes with gradients;
- ``compat``: transformers' version-specific names (the cache keyword, cache layers);
- ``check``: the self-check at a model's first use, and the fallback to the plain path.

Every private or version-specific API of torch or transformers lives here, behind feature
detection: where one is missing, the plain path runs.
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
