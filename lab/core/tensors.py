"""Tensor plumbing shared by the generator, the discriminator and the rewards.

Padding, prompt grouping, position ids, the KV-cache calling convention, the shared-prompt
forward (each prompt computed once, its cache handed to every row that continues it) and
:func:`eval_mode`. Nothing here knows about policies, rewards or critics.

Shapes: ``U`` distinct prompts, ``N`` rows, ``P`` prompt tokens (left padded), ``T``
continuation tokens (right padded).
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager

import torch


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


@contextmanager
def eval_mode(*modules):
    """Put ``modules`` in eval mode (no dropout) for the block, then restore each one's mode.

    >>> layer = torch.nn.Dropout(0.5)
    >>> with eval_mode(layer):
    ...     layer.training
    False
    >>> layer.training
    True
    """
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def left_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> left-padded ``(input_ids, attention_mask)``, each (N, max length).

    >>> left_pad([[5, 6], [7]], 0)
    (tensor([[5, 6],
            [0, 7]]), tensor([[1, 1],
            [0, 1]]))
    """
    return _pad(rows, pad_id, device, left=True)


def right_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> right-padded ``(input_ids, mask)``, each (N, max length).

    >>> right_pad([[5, 6], [7]], 0)[0]
    tensor([[5, 6],
            [7, 0]])
    """
    return _pad(rows, pad_id, device, left=False)


def _pad(rows: list[list[int]], pad_id: int, device, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, W)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, W)
    for i, row in enumerate(rows):
        if row:
            cols = slice(width - len(row), width) if left else slice(0, len(row))
            input_ids[i, cols] = torch.tensor(row, dtype=torch.long)
            mask[i, cols] = 1
    return input_ids.to(device), mask.to(device)


def encode(tokenizer, texts: list[str], max_length: int, device=None,
           add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize, keep each text's last ``max_length`` tokens, left-pad: ``(input_ids, attention_mask)``."""
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    return left_pad([row[-max_length:] for row in ids], tokenizer.pad_token_id, device)


def group_prompts(prompts: list[list[int]], device=None) -> tuple[list[list[int]], torch.Tensor]:
    """Each distinct token list once, in first-seen order, and the (N,) index of every row's
    one: what :func:`forward_after_prompts` takes to compute a shared prompt once.

    >>> group_prompts([[1, 2], [3], [1, 2]])
    ([[1, 2], [3]], tensor([0, 1, 0]))
    """
    first: dict[tuple, int] = {}
    index = [first.setdefault(tuple(p), len(first)) for p in prompts]
    return [list(p) for p in first], torch.tensor(index, device=device)


def until_first_eos(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on tokens up to and including the first ``eos_id`` of each row, 0 after it.

    >>> until_first_eos(torch.tensor([[4, 2, 5, 2]]), eos_id=2)
    tensor([[1, 1, 0, 0]])
    """
    is_eos = (tokens == eos_id).long()  # (N, T)
    eos_before = is_eos.cumsum(-1) - is_eos  # (N, T) EOS tokens strictly before t
    return (eos_before == 0).long()  # (N, T)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on the first real token: ``cumsum - 1`` clamped at 0.

    With left padding the first real token then sits at position 0 in every row, as in
    ``generate``, so log-probs computed later match the ones the sampler used.

    >>> position_ids(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    tensor([[0, 0, 1],
            [0, 1, 2]])
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, L)


def kept_positions(length: int, count: int, device=None) -> torch.Tensor:
    """``logits_to_keep`` for the last ``count`` of ``length`` positions, as an index tensor (count,).

    An int ``logits_to_keep`` makes transformers slice a strided view of the hidden states, which
    ``torch.matmul`` cannot fold into one matrix product with a frozen LM head: it multiplies a
    batch of expanded copies of the head's weight instead (~0.35 s a prefill of SmolLM2 on a CPU,
    a (B, 576, 49152) copy). Gathered rows give the same logits from one product.

    >>> kept_positions(5, 2)
    tensor([3, 4])
    """
    return torch.arange(length - count, length, device=device)


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
            raise NotImplementedError("a preallocated decode cache only grows (lab.fast.decoder's decoder)")

        crop = batch_select_indices = batch_repeat_interleave = reorder_cache = reset = _unsupported

    return DynamicLayer, PreallocatedLayer


def attention_kind(model) -> str | None:
    """The attention implementation transformers picked for ``model`` (``sdpa``, ``eager`` ...)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def preallocate(cache, capacity: int) -> bool:
    """Give every layer of a filled ``DynamicCache`` buffers of ``capacity`` positions, so that
    decoding writes into them instead of concatenating. True when every layer is a plain
    full-attention ``DynamicLayer`` and was converted; False, with nothing changed, for other
    caches (sliding windows, transformers without cache layers)."""
    kinds, layers = _preallocated_layer(), getattr(cache, "layers", None)
    if kinds is None or not layers or any(type(layer) is not kinds[0] or not layer.is_initialized
                                          for layer in layers):
        return False
    cache.layers = [kinds[1](layer, capacity) for layer in layers]
    return True


@contextmanager
def training_attention(model):
    """For a pass with gradients: on a CPU with bf16 weights, attention through the math kernel
    instead of the flash kernel, whose bf16 backward is slow there (the generator update of the
    benchmark's step, forward + backward: 1.45 -> 1.31 s at 32 new tokens, 4.1 -> 3.8 s at 128);
    the same attention up to float rounding. Elsewhere (fp32, CUDA) the default choice stays."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: the default kernel
        sdpa_kernel = None
    bf16_cpu = any(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in model.parameters())
    if sdpa_kernel is None or not bf16_cpu:
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


def output_cache(output):
    """The KV cache of a model output: ``cache`` in recent transformers, ``past_key_values`` before."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def cache_keyword(model) -> str:
    """``cache`` in recent transformers, ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def forward_after_prompts(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          prompt_index: torch.Tensor, input_ids: torch.Tensor, input_mask: torch.Tensor,
                          **prefill_kwargs):
    """Run rows that continue shared prompts, each prompt computed ONCE: a forward over the
    ``U`` prompts fills a KV cache, every row gets its prompt's cache, and one forward over
    the rows' own tokens reads it. Gradients flow through the shared prompt pass.

    ``prompt_ids``, ``prompt_mask``: (U, P), left-padded. ``input_ids``, ``input_mask``: (N, T),
    right-padded; row ``i`` continues prompt ``prompt_index[i]`` ((N,) long). ``prefill_kwargs``
    go to the prompt pass only (e.g. ``logits_to_keep=1``). Returns ``(prompt pass output, rows'
    output)``; the second is ``None`` when ``T == 0``.
    """
    prefill = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids(prompt_mask),
                    use_cache=True, **prefill_kwargs)
    if input_ids.shape[1] == 0:
        return prefill, None
    cache = output_cache(prefill)
    cache.batch_select_indices(prompt_index)  # (U, ...) -> (N, ...), still in the graph
    mask = torch.cat([prompt_mask[prompt_index], input_mask], 1)  # (N, P + T)
    start = prompt_mask.sum(-1, keepdim=True)[prompt_index]  # (N, 1) real prompt tokens
    positions = start + torch.arange(input_ids.shape[1], device=start.device)  # (N, T)
    return prefill, model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{cache_keyword(model): cache})
