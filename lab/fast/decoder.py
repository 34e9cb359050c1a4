"""A lean batched decoder: one prefill per prompt, shared by its ``k`` samples.

``generate`` repeats each prompt ``k`` times before the prefill and runs its logits
processors and stopping criteria every token; on a CPU both cost as much as the model.
Here the ``B`` prompts are prefilled once, the KV cache is repeated ``k`` times, and each
step is one forward of ``N = B * k`` new tokens plus temperature / top-p sampling.
"""

from __future__ import annotations

import torch

from lab.fast.folding import prepacked
from lab.core.tensors import attention_kind, cache_keyword, kept_positions, output_cache, position_ids, preallocate


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (nucleus); the
    others get ``-inf``. The most likely token is always kept. ``logits``: (N, V)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (N, V)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)  # (N, V)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # (N, V) mass before it already >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (N, V) back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def nucleus(logits: torch.Tensor, top_p: float, candidates: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p distribution as ``(probs, token_ids)``, each (N, K): probabilities (zero
    outside the nucleus, not renormalised) and the tokens they belong to.

    Exactly :func:`top_p_filter` followed by a softmax, but cheaper: when the ``candidates``
    most likely tokens already hold ``top_p`` of the mass in every row (the usual case at
    temperatures below 1), the nucleus lies among them and no full sort of the vocabulary
    is needed; otherwise K is the whole vocabulary. ``logits``: (N, V).
    """
    probs = logits.softmax(-1)  # (N, V)
    top, ids = probs.topk(min(candidates, probs.shape[-1]), dim=-1)  # (N, K), most likely first
    if top_p < 1.0 and bool((top.sum(-1) >= top_p).all()):
        before = top.cumsum(-1) - top  # (N, K) mass of the more likely tokens
        return top.masked_fill(before >= top_p, 0.0), ids
    everything = torch.arange(probs.shape[-1], device=probs.device).expand_as(probs)  # (N, V)
    return top_p_filter(logits, top_p).softmax(-1), everything


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, max_new_tokens: int,
           eos_id: int, pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
           do_sample: bool = True) -> torch.Tensor:
    """Sample ``k`` continuations of each left-padded prompt; returns (B * k, T) new tokens,
    prompt-major (row ``b * k + j``), ``pad_id`` after a row's EOS, ``T <= max_new_tokens``."""
    with torch.inference_mode():  # cheaper than no_grad: no autograd bookkeeping at all
        tokens = _decode(model, input_ids, attention_mask, k, max_new_tokens, eos_id, pad_id,
                         temperature, top_p, do_sample)  # (N, T)
    return tokens.clone()  # a normal tensor again, usable as input of later passes with gradients


def beam_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, num_beams: int,
                max_new_tokens: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """The ``k`` best of ``num_beams`` beams for each left-padded prompt, (B * k, T), prompt-major,
    ``pad_id`` after EOS; transformers' beam search (``generate``), as the sketch suggests.

    The beams of a prompt are distinct, but they are not draws from the policy: a REINFORCE
    update on them is off-policy and its gradient estimate biased (it over-weights the
    policy's modes). PPO's ratio cannot correct it either, as beams have no sampling
    probability of their own.
    """
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         num_beams=max(num_beams, k), num_return_sequences=k, max_new_tokens=max_new_tokens,
                         eos_token_id=eos_id, pad_token_id=pad_id, early_stopping=True)  # (B * k, P + T)
    return out[:, input_ids.shape[1]:].clone()  # (N, T)


def _decode(model, input_ids, attention_mask, k, max_new_tokens, eos_id, pad_id, temperature, top_p,
            do_sample) -> torch.Tensor:
    """The loop of :func:`decode`, run under ``torch.inference_mode``."""
    positions = position_ids(attention_mask)  # (B, P)
    width = input_ids.shape[1]  # P
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                use_cache=True, logits_to_keep=kept_positions(width, 1, input_ids.device))
    cache = output_cache(out)
    cache_arg = cache_keyword(model)
    cache.batch_repeat_interleave(k)  # (B, ...) -> (N, ...): the prefill is shared
    # keys and values written into buffers, and one boolean mask for the whole decode
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
            if do_sample:
                probs, ids = nucleus(logits / temperature, top_p)  # (N, K) each
                token = ids.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)  # (N,)
            else:
                token = logits.argmax(-1)  # (N,)
            token = token.masked_fill(done, pad_id)  # (N,)
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
