"""bf16 linears on a CPU with their weights prepacked once for oneDNN, for a decode.

``F.linear`` reorders a plain bf16 weight into oneDNN's blocked layout on every call; during
a decode, whose weights do not change, :func:`prepacked` gives each ``nn.Linear`` a copy
reordered once (the same products, bit for bit). It calls private ``torch.ops.mkldnn`` ops,
so :func:`can_prepack` checks that this torch has them; without them nothing changes.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@functools.lru_cache(maxsize=1)
def can_prepack() -> bool:
    """True when this torch has oneDNN's linear with prepacked bf16 weights (x86 CPUs with bf16)."""
    try:
        ops = torch.ops.mkldnn
        return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                and hasattr(ops, "_linear_pointwise") and bool(ops._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):
        return False


@contextmanager
def prepacked(model, rows: int):
    """Within the block, every bf16 CPU ``nn.Linear`` of ``model`` multiplies with a copy of its
    weight reordered once for oneDNN for ``rows`` input rows; the products are the same. The
    weights must not change inside the block (a decode, after :func:`lab.fast.folding.folded`).
    Other layers, devices and dtypes, and a torch without these oneDNN ops, run unchanged."""
    patched = []
    try:
        if can_prepack():
            with torch.no_grad():
                for module in model.modules():
                    weight = getattr(module, "weight", None)
                    if type(module) is torch.nn.Linear and type(weight) is torch.nn.Parameter \
                            and weight.device.type == "cpu" and weight.dtype == torch.bfloat16 \
                            and "forward" not in vars(module):  # not quantized, no hook's forward in place
                        try:
                            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
                        except RuntimeError:  # a shape or build oneDNN does not take: the plain product
                            continue
                        bias = None if module.bias is None else module.bias.detach()
                        module.forward = functools.partial(_packed_linear, packed, bias)  # shadows Linear.forward
                        patched.append(module)
        yield model
    finally:
        for module in patched:
            del module.forward
