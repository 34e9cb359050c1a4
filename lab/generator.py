"""The generator (policy): batched sampling, response log-probs, completion-only SFT loss.

One frozen backbone wrapped as a peft ``PeftModel`` carries a LoRA adapter per role;
the generator is the adapter ``"generator"``. Everything here works on whatever adapter
is active, so the same functions score the reference model inside
``with model.disable_adapter():``.

Sampling is a plain decode loop (:func:`decode`, top-p by :func:`nucleus`); :func:`sample` runs
:mod:`lab.fast.decoder` instead where, at the model's first use, its greedy tokens equal
:func:`decode`'s (:mod:`lab.fast.check`). The losses these log-probs feed: :mod:`lab.losses`.

Shapes: ``B`` prompts, ``k`` samples each, ``N = B * k`` rows, ``P`` prompt tokens (left
padded), ``T`` new tokens, ``L = P + T``, ``V`` vocabulary size.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lab.core.tensors import (
    encode, eval_mode, group_prompts, kept_positions, left_pad, model_device, position_ids, right_pad,
    until_first_eos,
)
from lab.fast import check, decoder
from lab.fast.compat import cache_keyword, output_cache
from lab.losses import mean_nll
from lab.models import adapter_parameters

IGNORE = -100  # label of tokens that the SFT loss skips (prompt and padding)
MAX_ANSWER_TOKENS = 256  # reference answers are cut here for SFT (a cut answer loses its EOS)
SCORE_LOGITS = 2 ** 26  # logits one scoring pass holds at most: 256 MiB in fp32


@dataclass
class Samples:
    """``k`` sampled responses for each of ``B`` prompts, row ``b * k + j`` (prompt-major)."""

    prompts: list[str]  # N = B * k, each prompt repeated k times consecutively
    completions: list[str]  # N response texts: special tokens skipped, stripped
    input_ids: torch.Tensor  # (N, P + T) left-padded prompt + response as generated
    attention_mask: torch.Tensor  # (N, P + T) 0 on left padding and after the first EOS
    response_mask: torch.Tensor  # (N, P + T) 1 on response tokens up to the first EOS included
    prompt_len: int  # P
    lengths: torch.Tensor  # (N,) response tokens per row
    k: int = 1  # samples per prompt

    @property
    def num_prompts(self) -> int:
        """B, the number of distinct prompts."""
        return len(self.prompts) // self.k

    def prompt_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The B prompts exactly as the sampler saw them: ids and mask, (B, P) each, left padded."""
        return self.input_ids[::self.k, :self.prompt_len], self.attention_mask[::self.k, :self.prompt_len]

    def responses(self) -> list[list[int]]:
        """The N sampled token lists up to their first EOS, included (at least one token)."""
        response = self.input_ids[:, self.prompt_len:].tolist()  # (N, T)
        return [tokens[:max(n, 1)] for tokens, n in zip(response, self.lengths.tolist())]


class LogProbs(NamedTuple):
    """What :func:`response_logprobs` returns."""

    tokens: torch.Tensor  # (N, L-1) log p(token t+1 | tokens <= t); 0 off the response
    sums: torch.Tensor  # (N,) log pi(response | prompt)
    entropy: torch.Tensor | None  # (N, L-1) policy entropy at response positions, or None


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], k: int = 1, max_new_tokens: int = 32,
           temperature: float = 0.7, top_p: float = 0.9, max_prompt_tokens: int = 256,
           do_sample: bool = True, sampler: str = "nucleus", num_beams: int = 4) -> Samples:
    """Sample ``k`` responses for each prompt in one batched decode (:func:`decode`; where it
    checked out at the model's first use, the same tokens from :func:`lab.fast.decoder.decode`).

    Uses the active adapter. ``do_sample=False`` decodes greedily (the ``k`` rows of a
    prompt are then equal). ``sampler="beam"``: the ``k`` best of ``num_beams`` beams
    (:func:`beam_decode`): distinct, but not draws from the policy. Prompts longer than
    ``max_prompt_tokens`` keep their end.
    """
    prompt_ids, prompt_mask = encode(tokenizer, prompts, max_prompt_tokens, model_device(model))  # (B, P)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    with eval_mode(model):  # no LoRA dropout while sampling: the samples come from the policy itself
        if sampler == "beam":
            response = beam_decode(model, prompt_ids, prompt_mask, k, num_beams, max_new_tokens, eos, pad)  # (N, T)
        else:
            fast = functools.partial(decoder.decode, next_token=next_token)  # the same rule, the same draws
            decoding = check.pick(model, "decoder", fast, decode,
                                  lambda: check.same_greedy_tokens(model, fast, decode, eos, pad))
            response = decoding(model, prompt_ids, prompt_mask, k, max_new_tokens, eos, pad,
                                temperature, top_p, do_sample)  # (N, T)
    return assemble(tokenizer, prompts, prompt_ids, prompt_mask, response, k)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (nucleus); the
    others get ``-inf``. The most likely token is always kept. ``logits``: (N, V).

    >>> top_p_filter(torch.tensor([[0.5, 0.3, 0.2]]).log(), 0.7).exp()
    tensor([[0.5000, 0.3000, 0.0000]])
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (N, V)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)  # (N, V)
    drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # (N, V) mass before it already >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (N, V) back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def nucleus(logits: torch.Tensor, top_p: float, candidates: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p distribution as ``(probs, token_ids)``, each (N, K): :func:`top_p_filter` then a
    softmax (zero outside the nucleus, not renormalised), but cheaper: where the ``candidates`` most
    likely tokens hold ``top_p`` of the mass in every row (the usual case at temperatures below 1)
    the vocabulary is not sorted; else K = V. ``logits``: (N, V)."""
    probs = logits.softmax(-1)  # (N, V)
    top, ids = probs.topk(min(candidates, probs.shape[-1]), dim=-1)  # (N, K), most likely first
    if top_p < 1.0 and bool((top.sum(-1) >= top_p).all()):
        before = top.cumsum(-1) - top  # (N, K) mass of the more likely tokens
        return top.masked_fill(before >= top_p, 0.0), ids
    everything = torch.arange(probs.shape[-1], device=probs.device).expand_as(probs)  # (N, V)
    return top_p_filter(logits, top_p).softmax(-1), everything


def next_token(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
               do_sample: bool = True) -> torch.Tensor:
    """The next token of each row (N,) from the last position's logits (N, V): a draw from the
    top-p nucleus of ``softmax(logits / temperature)``, or the most likely token (``do_sample=False``)."""
    if not do_sample:
        return logits.argmax(-1)  # (N,)
    probs, ids = nucleus(logits / temperature, top_p)  # (N, K) each
    return ids.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)  # (N,)


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, max_new_tokens: int,
           eos_id: int, pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
           do_sample: bool = True) -> torch.Tensor:
    """Sample ``k`` continuations of each left-padded prompt (B, P): (B * k, T) new tokens,
    prompt-major (row ``b * k + j``), ``pad_id`` after a row's EOS, ``T <= max_new_tokens``.
    Each prompt is prefilled once and its KV cache repeated for its ``k`` samples; then each step
    feeds the ``N`` new tokens alone, the cache holding every earlier position."""
    positions = position_ids(attention_mask)  # (B, P) 0 on the first real token
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                logits_to_keep=kept_positions(input_ids.shape[1], 1, input_ids.device))  # logits: (B, 1, V)
    cache, cache_arg = output_cache(out), cache_keyword(model)  # keys and values of every layer, (B, ...)
    cache.batch_repeat_interleave(k)  # (B, ...) -> (N, ...): each prompt's cache for its k samples
    logits = out.logits[:, -1].float().repeat_interleave(k, dim=0)  # (N, V)
    mask = attention_mask.repeat_interleave(k, dim=0)  # (N, P)
    position = positions[:, -1:].repeat_interleave(k, dim=0)  # (N, 1)
    done = torch.zeros(len(mask), dtype=torch.bool, device=mask.device)  # (N,) rows past their EOS
    tokens = []
    for _ in range(max_new_tokens):
        token = next_token(logits, temperature, top_p, do_sample).masked_fill(done, pad_id)  # (N,)
        tokens.append(token)
        done |= token == eos_id
        if done.all() or len(tokens) == max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)  # (N, P + t + 1) the new token is seen
        position = position + 1  # (N, 1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True,
                    **{cache_arg: cache})  # one new token a row; the cache holds the rest
        logits = out.logits[:, -1].float()  # (N, V)
    return torch.stack(tokens, dim=1)  # (N, T)


@torch.no_grad()
def beam_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int, num_beams: int,
                max_new_tokens: int, eos_id: int, pad_id: int) -> torch.Tensor:
    """The ``k`` best of ``num_beams`` beams for each left-padded prompt, (B * k, T), prompt-major,
    ``pad_id`` after EOS; transformers' beam search (``generate``), as the sketch suggests.
    Beams are distinct but not draws from the policy: a REINFORCE (or PPO) update on them is
    off-policy, its gradient biased towards the policy's modes."""
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         num_beams=max(num_beams, k), num_return_sequences=k, max_new_tokens=max_new_tokens,
                         eos_token_id=eos_id, pad_token_id=pad_id, early_stopping=True)  # (B * k, P + T)
    return out[:, input_ids.shape[1]:].clone()  # (N, T)


def assemble(tokenizer, prompts: list[str], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
             response: torch.Tensor, k: int) -> Samples:
    """:class:`Samples` from ``B`` left-padded prompts (B, P) and their ``k`` responses each
    (B * k, T), prompt-major; a response ends at its first EOS."""
    ids = prompt_ids.repeat_interleave(k, dim=0)  # (N, P)
    mask = prompt_mask.repeat_interleave(k, dim=0)  # (N, P)
    in_response = until_first_eos(response, tokenizer.eos_token_id)  # (N, T)
    lengths = in_response.sum(-1)  # (N,)
    completions = [tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                   for row, n in zip(response.tolist(), lengths.tolist())]
    return Samples(prompts=[p for p in prompts for _ in range(k)], completions=completions,
                   input_ids=torch.cat([ids, response], dim=1),  # (N, P + T)
                   attention_mask=torch.cat([mask, in_response], dim=1),  # (N, P + T)
                   response_mask=torch.cat([torch.zeros_like(mask), in_response], dim=1),  # (N, P + T)
                   prompt_len=ids.shape[1], lengths=lengths, k=k)


def with_references(samples: Samples, tokenizer, references: list[str], max_tokens: int) -> Samples:
    """LUFFY's group: each prompt's ``k`` samples followed by its reference answer as one more
    (off-policy) member, ``k + 1`` rows per prompt. ``references``: one per prompt, cut to the
    samples' token budget ``max_tokens`` like a sample of that length would be."""
    k, n_prompts = samples.k, samples.num_prompts
    answers = answer_tokens(tokenizer, references, max_tokens)
    ref_ids, _ = right_pad(answers, tokenizer.pad_token_id)  # (B, T')
    response = samples.input_ids[:, samples.prompt_len:]  # (N, T)
    width = max(response.shape[1], ref_ids.shape[1])
    pad = tokenizer.pad_token_id
    grouped = torch.cat([F.pad(response, (0, width - response.shape[1]), value=pad).view(n_prompts, k, width),
                         F.pad(ref_ids, (0, width - ref_ids.shape[1]), value=pad).to(response)[:, None]],
                        dim=1)  # (B, k + 1, T)
    prompt_ids, prompt_mask = samples.prompt_tensors()  # (B, P) each
    return assemble(tokenizer, samples.prompts[::k], prompt_ids, prompt_mask, grouped.reshape(-1, width), k + 1)


def response_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      response_mask: torch.Tensor, with_entropy: bool = False,
                      entropy_grad: bool = True, temperature: float | torch.Tensor = 1.0) -> LogProbs:
    """Log-probabilities of the response tokens under ``model``, from ONE forward pass.

    ``log pi(y | x) = sum_t log p(y_t | x, y_<t)``: the logits at position ``t`` predict the
    token at ``t + 1``, so log-probs are read from the shifted logits. Only the logits of
    positions from the first response token on are computed (``logits_to_keep``).
    ``with_entropy``: also ``H_t = -sum_v p_v log p_v`` of the policy at response positions
    (``entropy_grad=False``: detached, for logging only, no backward through it).
    ``temperature``: divide the logits first, a float or one value per row (N,), so samples
    drawn at temperature ``T`` are scored under the distribution they came from.
    """
    n, length = input_ids.shape
    targets = response_mask[:, 1:].bool()  # (N, L-1) position t predicts response token t+1
    start = int(targets.any(0).long().argmax())  # first position that predicts a response token
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids(attention_mask),
                   logits_to_keep=kept_positions(length, length - start, input_ids.device),
                   use_cache=False).logits[:, :-1]  # (N, L-1-start, V)
    picked = score_logits(logits, input_ids[:, start + 1:], targets[:, start:], temperature,
                    with_entropy, entropy_grad)
    tokens = F.pad(picked.tokens, (start, 0))  # (N, L-1)
    entropy = None if picked.entropy is None else F.pad(picked.entropy, (start, 0))  # (N, L-1)
    return LogProbs(tokens=tokens, sums=tokens.sum(-1), entropy=entropy)  # sums: (N,)


def forward_after_prompts(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          prompt_index: torch.Tensor, input_ids: torch.Tensor, input_mask: torch.Tensor,
                          **prefill_kwargs):
    """Run rows that continue shared prompts, each prompt computed ONCE: a forward over the ``U``
    prompts fills a KV cache, every row gets its prompt's cache, and one forward over the rows' own
    tokens reads it; gradients flow through the shared prompt pass. ``prompt_ids``, ``prompt_mask``:
    (U, P), left-padded. ``input_ids``, ``input_mask``: (N, T), right-padded; row ``i`` continues
    prompt ``prompt_index[i]`` ((N,) long). ``prefill_kwargs`` go to the prompt pass only. Returns
    ``(prompt pass output, rows' output)``; the second is ``None`` when ``T == 0``."""
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


def continuation_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                          continuations: torch.Tensor, continuation_mask: torch.Tensor,
                          prompt_index: torch.Tensor, with_entropy: bool = False, entropy_grad: bool = True,
                          temperature: float | torch.Tensor = 1.0) -> LogProbs:
    """:func:`response_logprobs` for continuations of shared prompts, each prompt computed
    once (:func:`forward_after_prompts`). The result (and its gradient) equals scoring every
    ``prompt + continuation`` row on its own, at a fraction of the cost when prompts are long.

    ``prompt_ids``, ``prompt_mask``: (U, P), left-padded. ``continuations``: (N, T), right-
    padded; row ``i`` continues prompt ``prompt_index[i]`` ((N,) long). ``continuation_mask``
    (N, T) is 1 on the tokens to score (a row stops being attended where it turns 0).
    Returns ``tokens`` and ``entropy`` of shape (N, T), aligned with ``continuations``.
    """
    logits = continuation_logits(model, prompt_ids, prompt_mask, continuations, continuation_mask, prompt_index)
    out = score_logits(logits, continuations, continuation_mask.bool(), temperature, with_entropy, entropy_grad)
    return LogProbs(tokens=out.tokens, sums=out.tokens.sum(-1), entropy=out.entropy)


def continuation_logits(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, continuations: torch.Tensor,
                        continuation_mask: torch.Tensor, prompt_index: torch.Tensor) -> torch.Tensor:
    """The logits (N, T, V) that predict each continuation token (the arguments of
    :func:`continuation_logprobs`), each prompt computed once."""
    prompt_index = prompt_index.to(prompt_ids.device)
    first, rest = forward_after_prompts(model, prompt_ids, prompt_mask, prompt_index, continuations[:, :-1],
                                        continuation_mask[:, :-1],
                                        logits_to_keep=kept_positions(prompt_ids.shape[1], 1, prompt_ids.device))
    logits = first.logits[prompt_index]  # (N, 1, V): the prompt's last position predicts token 0
    if rest is not None:
        logits = torch.cat([logits, rest.logits], dim=1)  # (N, T, V)
    return logits


def score_logits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                 temperature: float | torch.Tensor = 1.0, with_entropy: bool = False,
                 entropy_grad: bool = True) -> LogProbs:
    """Log-prob of each target token (and the entropy) where ``mask`` is set; 0 elsewhere.
    ``logits``: (N, T, V) predicting ``targets`` (N, T); ``temperature``: float or (N,)."""
    if not isinstance(temperature, torch.Tensor):
        temperature = torch.tensor(float(temperature))
    scale = temperature.to(logits.device, torch.float32).reshape(-1, 1, 1)  # (N or 1, 1, 1)
    logp = F.log_softmax(logits.float() / scale, dim=-1)  # (N, T, V)
    on = mask.to(logp.dtype)  # (N, T)
    tokens = logp.gather(-1, targets[..., None]).squeeze(-1) * on  # (N, T)
    entropy = None
    if with_entropy:
        source = logp if entropy_grad else logp.detach()  # (N, T, V)
        entropy = -(source.exp() * source).sum(-1) * on  # (N, T)
    return LogProbs(tokens=tokens, sums=tokens.sum(-1), entropy=entropy)


def context_tokens(tokenizer, prompts: list[str], max_prompt_tokens: int = 256) -> list[list[int]]:
    """What a given continuation of each prompt is scored after (:func:`score_continuations`): the
    prompt's last ``max_prompt_tokens`` tokens, no special tokens added; BOS (or EOS) if it is empty."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    return [row[-max_prompt_tokens:] or [start] for row in ids]


@torch.no_grad()
def score_continuations(model, contexts: list[list[int]], continuations: list[list[int]], pad_id: int,
                        temperatures: tuple[float, ...] = (1.0,), base: bool = False) -> list[torch.Tensor]:
    """``log p(continuations[i][t] | contexts[i], continuations[i][:t])`` of given token lists: one
    (N, T) tensor per temperature (0 past a row's end), from ONE pass in eval mode without gradient,
    each distinct context computed once (:func:`continuation_logprobs`' two halves). ``base``: under
    the frozen base (a ``PeftModel``'s adapters disabled), else the active adapter. The one scorer
    of fixed text: the perplexity reward and the step's base pass (:class:`lab.rewards.Perplexity`,
    :func:`lab.rewards.base_pass`), multiple choice (:func:`lab.eval.factual.choice_logprobs`).
    Many rows go in chunks of at most ``SCORE_LOGITS`` logits (rows x tokens x vocab)."""
    width, vocab = max(map(len, continuations), default=1), model.get_output_embeddings().weight.shape[0]  # T, V
    rows = max(1, SCORE_LOGITS // (width * vocab))  # 432 answers x 60 tokens x 49k vocab: 10 GB of logits at once
    if len(continuations) > rows:  # per chunk one (n, T_i) tensor per temperature, padded to (N, T)
        parts = [score_continuations(model, contexts[i:i + rows], continuations[i:i + rows], pad_id, temperatures, base)
                 for i in range(0, len(continuations), rows)]
        return [torch.cat([F.pad(p[j], (0, width - p[j].shape[1])) for p in parts]) for j in range(len(temperatures))]
    distinct, index = group_prompts(contexts)  # each context once; (N,) row -> context
    prompt_ids, prompt_mask = left_pad(distinct, pad_id, model_device(model))  # (U, P)
    conts, mask = right_pad(continuations, pad_id, prompt_ids.device)  # (N, T)
    adapters_off = getattr(model, "disable_adapter", None) if base else None
    with eval_mode(model), adapters_off() if adapters_off else nullcontext():
        logits = continuation_logits(model, prompt_ids, prompt_mask, conts, mask, index)  # (N, T, V)
    scored = {t: score_logits(logits, conts, mask.bool(), t).tokens for t in dict.fromkeys(temperatures)}
    return [scored[t] for t in temperatures]  # (N, T) each


def answer_tokens(tokenizer, completions: list[str], max_tokens: int = MAX_ANSWER_TOKENS) -> list[list[int]]:
    """The SFT targets: each reference answer's tokens + EOS, cut at ``max_tokens`` (a cut
    answer loses its EOS). The one rule used by :func:`sft_loss` and the trainer."""
    eos = [tokenizer.eos_token_id]
    return [(ids + eos)[:max_tokens] for ids in tokenizer(list(completions), add_special_tokens=False)["input_ids"]]


def sft_batch(tokenizer, prompts: list[str], completions: list[str], max_prompt_tokens: int = 256,
              device=None) -> dict[str, torch.Tensor]:
    """The plain per-row layout of an SFT batch: left-padded ``prompt + answer + EOS`` with
    labels ``-100`` on prompt and padding (what ``transformers`` models take as ``labels``).

    Prompts keep their last ``max_prompt_tokens`` tokens and answers follow
    :func:`answer_tokens`, the same rules as :func:`sft_loss`.
    """
    prompt_ids = [ids[-max_prompt_tokens:] for ids in tokenizer(list(prompts))["input_ids"]]
    answers = answer_tokens(tokenizer, completions)
    rows = [p + a for p, a in zip(prompt_ids, answers)]
    labels = [[IGNORE] * len(p) + a for p, a in zip(prompt_ids, answers)]
    input_ids, attention_mask = left_pad(rows, tokenizer.pad_token_id, device)  # (N, L)
    label_ids, _ = left_pad(labels, IGNORE, device)  # (N, L) -100 on prompt and padding
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


def sft_loss(model, tokenizer, prompts: list[str], completions: list[str],
             max_prompt_tokens: int = 256) -> torch.Tensor:
    """Mean cross-entropy of the completion tokens (and EOS) given the prompt.

    ``-1/|y| sum_t log p(y_t | x, y_<t)`` over all completion tokens of the batch
    (:func:`lab.losses.mean_nll`); the prompt is context only, never a target (the sketch's defect 3
    trained on the prompt too). Each prompt is computed once (:func:`continuation_logprobs`);
    the result equals scoring the per-row layout of :func:`sft_batch` with
    :func:`response_logprobs`. The trainer computes its SFT term with the same two pieces.
    """
    device = model_device(model)
    prompt_ids, prompt_mask = encode(tokenizer, prompts, max_prompt_tokens, device)  # (B, P)
    answers, answer_mask = right_pad(answer_tokens(tokenizer, completions), tokenizer.pad_token_id, device)  # (B, T)
    index = torch.arange(len(prompts), device=device)  # (B,) row b continues prompt b
    out = continuation_logprobs(model, prompt_ids, prompt_mask, answers, answer_mask, index)
    return mean_nll(out.tokens, answer_mask)


def generator_parameters(model, adapter: str = "generator") -> list[torch.nn.Parameter]:
    """The generator adapter's LoRA parameters: what the generator's optimizer updates."""
    return adapter_parameters(model, adapter)

