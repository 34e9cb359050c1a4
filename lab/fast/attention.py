"""Attention kernels for passes with gradients.

On a CPU with bf16 weights the flash attention kernel's backward is slow; the math kernel
computes the same attention up to float rounding, faster. ``torch.nn.attention.sdpa_kernel``
(torch >= 2.3) picks it; an older torch keeps its default kernel.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3: the default kernel
    SDPBackend = sdpa_kernel = None


@contextmanager
def training_attention(model):
    """For a pass with gradients: on a CPU with bf16 weights, attention through the math kernel
    instead of the flash kernel (the same attention up to float rounding; README, section
    Benchmark, has the timings). Elsewhere (fp32, CUDA) the default choice stays."""
    bf16_cpu = any(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in model.parameters())
    if sdpa_kernel is None or not bf16_cpu:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield
