"""Decoding with the active LoRA adapter folded into the weights, without changing them.

A LoRA layer computes ``x W^T + s (x A^T) B^T``. While decoding (a few rows, one token at a
time) the two small extra products of every adapted layer cost far more than their FLOPs:
about 10-15% of a decode step of SmolLM2-135M on a CPU. :func:`folded` swaps each adapted
layer's weight for a temporary ``W + s B A`` and switches the adapters off for the block, so
each layer is one matrix product again. The original weight tensors are put back afterwards:
subtracting ``s B A`` again would round the frozen base a little differently every step.

The folded model computes the same function up to float rounding (``W + sBA`` is rounded
once); ``tests/test_fast_paths.py`` checks the logits and that the samples are the same.

:func:`prepacked` goes one step further for bf16 weights on a CPU: ``F.linear`` reorders a
plain weight into oneDNN's blocked layout on every call; during a decode, whose weights do not
change, each ``nn.Linear`` multiplies with a copy reordered once (the same products, bit for bit).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager

import torch


def _foldable_layers(model) -> list:
    """``(layer, base, active adapters)`` for every LoRA layer with an active adapter, or ``[]``
    when some layer cannot be folded (quantized or non-float weights, already merged)."""
    from peft.tuners.lora import LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer) or module.disable_adapters:
            continue
        active = [name for name in module.active_adapters if name in module.lora_A]
        if not active:
            continue
        base = module.get_base_layer()
        weight = getattr(base, "weight", None)
        if module.merged or not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point \
                or type(weight) is not torch.nn.Parameter:  # bitsandbytes' Int8Params / Params4bit
            return []
        layers.append((module, base, active))
    return layers


@contextmanager
def folded(model):
    """Within the block, ``model`` (a ``PeftModel``) runs its active adapter as folded weights.
    Without gradients only (decoding); a model it cannot fold runs unchanged."""
    layers = _foldable_layers(model) if hasattr(model, "disable_adapter") else []
    if not layers:
        yield model
        return
    originals = []
    try:
        with torch.no_grad():
            for module, base, active in layers:
                weight = base.weight
                delta = sum(module.get_delta_weight(name).float() for name in active)  # W's layout
                originals.append((base, weight))
                base.weight = torch.nn.Parameter((weight.float() + delta).to(weight.dtype), requires_grad=False)
        with model.disable_adapter():  # every LoRA layer computes its (folded) base layer only
            yield model
    finally:
        for base, weight in originals:
            base.weight = weight


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


@functools.lru_cache(maxsize=1)
def can_prepack() -> bool:
    """True when this torch has oneDNN's linear with prepacked bf16 weights (x86 CPUs with bf16)."""
    ops = torch.ops.mkldnn
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
                and hasattr(ops, "_linear_pointwise") and bool(ops._is_mkldnn_bf16_supported()))
    except (AttributeError, RuntimeError):
        return False


@contextmanager
def prepacked(model, rows: int):
    """Within the block, every bf16 CPU ``nn.Linear`` of ``model`` multiplies with a copy of its
    weight reordered once for oneDNN for ``rows`` input rows; the products are the same. The
    weights must not change inside the block (decode, after :func:`folded`). Other layers,
    devices and dtypes, and a torch without these oneDNN ops, run unchanged."""
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
