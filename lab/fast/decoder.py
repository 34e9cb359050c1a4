"""The fast decoder: :func:`lab.generator.decode`'s tokens, with less work per step.

The plain loop (:func:`lab.generator.decode`) prefills each prompt once, repeats its KV cache
for its ``k`` samples, and then runs one forward of ``N = B * k`` new tokens a step, growing
the cache and the 2D attention mask by concatenation. Here, for the same tokens:

- the active LoRA adapter is folded into the weights (:func:`lab.fast.folding.folded`);
- every layer's keys and values are written into buffers preallocated for the whole decode
  (:func:`lab.fast.compat.preallocate`) instead of copying the whole cache every step;
- where attention is SDPA, one boolean mask for the whole decode is filled a column a step and
  passed as a ready 4D view (transformers then builds none);
- bf16 linears on a CPU multiply with weights prepacked once (:func:`lab.fast.prepack.prepacked`);
- the loop runs under ``torch.inference_mode``.

The next token is chosen by the caller's rule (``next_token``: :func:`lab.generator.next_token`),
so both decoders draw from the same distributions with the same random numbers.
:mod:`lab.fast.check` uses this decoder only where its greedy tokens equal the plain loop's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from lab.core.tensors import kept_positions, position_ids
from lab.fast.compat import attention_kind, cache_keyword, output_cache, preallocate
from lab.fast.folding import folded
from lab.fast.prepack import prepacked


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, max_new_tokens: int,
           eos_id: int, pad_id: int, temperature: float = 1.0, top_p: float = 1.0, do_sample: bool = True, *,
           next_token: Callable[..., torch.Tensor]) -> torch.Tensor:
    """``k`` continuations of each left-padded prompt (B, P): (B * k, T) new tokens, prompt-major
    (row ``b * k + j``), ``pad_id`` after a row's EOS, ``T <= max_new_tokens``, as
    :func:`lab.generator.decode` returns them. ``next_token(logits, temperature, top_p, do_sample)``
    maps the last position's logits (N, V) to the next tokens (N,)."""
    choose = functools.partial(next_token, temperature=temperature, top_p=top_p, do_sample=do_sample)
    with folded(model), torch.inference_mode():  # inference mode: no autograd bookkeeping at all
        tokens = _decode(model, input_ids, attention_mask, k, max_new_tokens, eos_id, pad_id, choose)  # (N, T)
    return tokens.clone()  # a normal tensor again, usable as input of later passes with gradients


def _decode(model, input_ids, attention_mask, k, max_new_tokens, eos_id, pad_id, choose) -> torch.Tensor:
    """The loop of :func:`decode`, run under ``torch.inference_mode``."""
    positions = position_ids(attention_mask)  # (B, P)
    width = input_ids.shape[1]  # P
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                use_cache=True, logits_to_keep=kept_positions(width, 1, input_ids.device))
    cache = output_cache(out)
    cache_arg = cache_keyword(model)
    cache.batch_repeat_interleave(k)  # (B, ...) -> (N, ...): the prefill is shared
    # (N, P + max_new_tokens) filled a column a step: each step passes its ready (N, 1, 1, P + t + 1)
    # view, so neither the cache nor the mask is copied a step (plain full-attention caches; the 4D
    # boolean mask only where attention is SDPA, which reads it as "attend": eager adds masks to scores)
    ready = preallocate(cache, width + max_new_tokens) and attention_kind(model) == "sdpa"
    logits = out.logits[:, -1].float().repeat_interleave(k, dim=0)  # (N, V)
    mask = attention_mask.new_zeros((attention_mask.shape[0] * k, width + max_new_tokens), dtype=torch.bool)
    mask[:, :width] = attention_mask.bool().repeat_interleave(k, dim=0)  # (N, P + max_new_tokens)
    position = positions[:, -1:].repeat_interleave(k, dim=0)  # (N, 1)
    done = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)  # (N,)
    tokens = []
    with prepacked(model, rows=mask.shape[0]):
        for _ in range(max_new_tokens):
            token = choose(logits).masked_fill(done, pad_id)  # (N,)
            tokens.append(token)
            done |= token == eos_id
            if done.all() or len(tokens) == max_new_tokens:
                break
            seen = width + len(tokens)  # P + t + 1 positions after this step
            mask[:, seen - 1] = True  # finished rows' pads are never read
            position = position + 1  # (N, 1)
            step_mask = mask[:, None, None, :seen] if ready else mask[:, :seen].long()  # 4D: used as given
            out = model(input_ids=token[:, None], attention_mask=step_mask, position_ids=position,
                        use_cache=True, **{cache_arg: cache})
            logits = out.logits[:, -1].float()  # (N, V)
    return torch.stack(tokens, dim=1)  # (N, T)
