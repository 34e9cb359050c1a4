"""Decoding with the active LoRA adapter folded into the weights, without changing them.

A LoRA layer computes ``x W^T + s (x A^T) B^T``. While decoding (a few rows, one token at a
time) the two small extra products of every adapted layer cost far more than their FLOPs.
:func:`folded` swaps each adapted layer's weight for a temporary ``W + s B A`` and switches the
adapters off for the block, so each layer is one matrix product again. The original weight
tensors are put back afterwards: subtracting ``s B A`` again would round the frozen base a
little differently every step.

The folded model computes the same function up to float rounding (``W + sBA`` is rounded
once); ``tests/test_fast_paths.py`` checks the logits and that the samples are the same. It
reads peft's ``LoraLayer`` internals; a peft without them decodes unfolded.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _foldable_layers(model) -> list:
    """``(layer, base, active adapters)`` for every LoRA layer with an active adapter, or ``[]``
    when some layer cannot be folded (quantized or non-float weights, already merged)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # a peft that moved it: decode unfolded
        return []

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
