"""The version-specific transformers APIs the kit touches, each behind feature detection.

A transformers release renames a keyword or reshapes its cache classes every few months; these
helpers are the one place that knows. Where a feature is missing, the caller gets "not
available" (``False``, ``None``) and takes the plain path.
"""

from __future__ import annotations

import functools
import inspect

import torch


def cache_keyword(model) -> str:
    """The keyword that hands a KV cache to ``model``'s forward: ``cache`` in recent transformers,
    ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(output):
    """The KV cache of a model output: ``cache`` in recent transformers, ``past_key_values`` before."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def attention_kind(model) -> str | None:
    """The attention implementation transformers picked for ``model`` (``sdpa``, ``eager`` ...),
    read from a private config attribute; None where there is none."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


@functools.lru_cache(maxsize=1)
def _preallocated_layer():
    """A ``DynamicLayer`` whose keys and values live in buffers of a fixed capacity: ``update``
    writes the new positions in place and returns views of the filled part, the very tensors
    ``torch.cat`` would have made, without copying every layer's whole cache every step.
    Returns ``(DynamicLayer, PreallocatedLayer)``, or None with transformers older than its
    cache layers."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class PreallocatedLayer(DynamicLayer):
        _layer_type = None  # never registered as a layer kind of transformers' own caches

        def __init__(self, layer: DynamicLayer, capacity: int):
            super().__init__()
            n, heads, length, _ = layer.keys.shape  # (N, H, P, D)
            self.key_buffer = layer.keys.new_empty((n, heads, capacity, layer.keys.shape[-1]))
            self.value_buffer = layer.values.new_empty((n, heads, capacity, layer.values.shape[-1]))
            self.key_buffer[:, :, :length], self.value_buffer[:, :, :length] = layer.keys, layer.values
            self.device, self.is_initialized, self.filled = layer.keys.device, True, length
            self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

        def update(self, key_states, value_states, *args, **kwargs):
            end = self.filled + key_states.shape[-2]
            if end > self.key_buffer.shape[2]:  # past the capacity: concatenate, as DynamicLayer does
                self.key_buffer = torch.cat([self.keys, key_states], dim=-2)
                self.value_buffer = torch.cat([self.values, value_states], dim=-2)
            else:
                self.key_buffer[:, :, self.filled:end] = key_states
                self.value_buffer[:, :, self.filled:end] = value_states
            self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
            self.filled = end
            return self.keys, self.values

        def _unsupported(self, *args, **kwargs):
            raise NotImplementedError("a preallocated decode cache only grows (lab.fast.decoder)")

        crop = batch_select_indices = batch_repeat_interleave = reorder_cache = reset = _unsupported

    return DynamicLayer, PreallocatedLayer


def preallocate(cache, capacity: int) -> bool:
    """Give every layer of a filled ``DynamicCache`` buffers of ``capacity`` positions, so that
    decoding writes into them instead of concatenating. True when every layer is a plain
    full-attention ``DynamicLayer`` and was converted; False, with nothing changed, for other
    caches (sliding windows, transformers without cache layers)."""
    kinds, layers = _preallocated_layer(), getattr(cache, "layers", None)
    if kinds is None or not layers or any(type(layer) is not kinds[0] or not _filled(layer) for layer in layers):
        return False
    cache.layers = [kinds[1](layer, capacity) for layer in layers]
    return True


def _filled(layer) -> bool:
    """Whether a cache layer holds keys: ``is_initialized`` in recent transformers; before it
    (4.5x) a layer's ``keys`` stay None until its first update."""
    initialized = getattr(layer, "is_initialized", None)
    if initialized is not None:
        return bool(initialized)
    return getattr(layer, "keys", None) is not None and layer.keys.numel() > 0
