"""The generator (policy): batched sampling, response log-probs, completion-only SFT loss.

One frozen backbone wrapped as a peft ``PeftModel`` carries a LoRA adapter per role;
the generator is the adapter ``"generator"``. Everything here works on whatever adapter
is active, so the same functions score the reference model inside
``with model.disable_adapter():``.

Shapes: ``B`` prompts, ``k`` samples each, ``N = B * k`` rows, ``P`` prompt tokens (left
padded), ``T`` new tokens, ``L = P + T``, ``V`` vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lab.fast.folding import folded
from lab.models import adapter_parameters
from lab.fast.decoder import beam_decode, decode
from lab.core.tensors import (
    encode, eval_mode, forward_after_prompts, kept_positions, left_pad, model_device, position_ids, right_pad,
    until_first_eos,
)

IGNORE = -100  # label of tokens that the SFT loss skips (prompt and padding)
MAX_ANSWER_TOKENS = 256  # reference answers are cut here for SFT (a cut answer loses its EOS)


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
    """Sample ``k`` responses for each prompt in one batched decode (:func:`lab.fast.decoder.decode`:
    one prefill per prompt, shared by its ``k`` samples).

    Uses the active adapter. ``do_sample=False`` decodes greedily (the ``k`` rows of a
    prompt are then equal). ``sampler="beam"``: the ``k`` best of ``num_beams`` beams
    (:func:`lab.fast.decoder.beam_decode`): distinct, but not draws from the policy. Prompts
    longer than ``max_prompt_tokens`` keep their end.
    """
    prompt_ids, prompt_mask = encode(tokenizer, prompts, max_prompt_tokens, model_device(model))  # (B, P)
    # no LoRA dropout while sampling: the samples come from the policy itself; the active adapter
    # folded into the weights (lab.fast.folding): the same function, one matrix product a layer
    with eval_mode(model), folded(model):
        if sampler == "beam":
            response = beam_decode(model, prompt_ids, prompt_mask, k, num_beams, max_new_tokens,
                                   tokenizer.eos_token_id, tokenizer.pad_token_id)  # (N, T)
        else:
            response = decode(model, prompt_ids, prompt_mask, k, max_new_tokens, tokenizer.eos_token_id,
                              tokenizer.pad_token_id, temperature, top_p, do_sample)  # (N, T)
    return assemble(tokenizer, prompts, prompt_ids, prompt_mask, response, k)


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
    prompt_ids = samples.input_ids[::k, :samples.prompt_len]  # (B, P)
    prompt_mask = samples.attention_mask[::k, :samples.prompt_len]  # (B, P)
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


def mean_nll(token_logprobs: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The SFT loss from per-token log-probs: ``-sum_t w_t log p(y_t | ...) / #tokens`` over the
    tokens where ``mask`` is 1, pooled over the whole batch (a long answer weighs more).
    ``weights`` (N, T), detached, default 1 (e.g. CHORD's :func:`lab.variants.mixing.phi_weights`).

    >>> mean_nll(torch.tensor([[-1.0, -3.0], [-2.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    """
    mask = mask.to(token_logprobs.dtype)  # (N, T)
    weighted = token_logprobs if weights is None else token_logprobs * weights.detach()  # (N, T)
    return -(weighted * mask).sum() / mask.sum().clamp(min=1)


def sft_loss(model, tokenizer, prompts: list[str], completions: list[str],
             max_prompt_tokens: int = 256) -> torch.Tensor:
    """Mean cross-entropy of the completion tokens (and EOS) given the prompt.

    ``-1/|y| sum_t log p(y_t | x, y_<t)`` over all completion tokens of the batch
    (:func:`mean_nll`); the prompt is context only, never a target (the sketch's defect 3
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


def reinforce_loss(logprob_sums: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE: ``-mean_i (R_i - b_i) * log pi(y_i | x_i)``.

    Its gradient is the policy-gradient estimate ``E[(R - b) grad log pi(y | x)]``: responses
    that beat the baseline become more likely. ``logprob_sums`` (N,) must be the log-prob
    of the *sampled response* given the prompt; the sketch used the prompt's own log-prob
    (defect 1), whose gradient does not depend on what was sampled. ``advantages`` (N,)
    are detached: the reward and the baseline are constants here.
    """
    return -(advantages.detach() * logprob_sums).mean()


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float = 0.2) -> tuple[torch.Tensor, float, float]:
    """The PPO-style clipped objective, ``(loss, clip_frac, approx_kl)``:

    ``-(1/N) sum_i sum_t min(r_it A_i, clip(r_it, 1 - eps, 1 + eps) A_i)`` with the importance
    ratio ``r_it = pi(y_it | ...) / pi_old(y_it | ...)`` against the policy that sampled.
    Tokens are summed per response and responses averaged, as in :func:`reinforce_loss`, so
    at ``r = 1`` (the first pass over fresh samples) the gradient is exactly REINFORCE's.
    Where the clipped branch is the smaller one, the token gets no gradient: a response
    cannot move further than ``eps`` from the sampling policy on the same batch.

    ``logprobs``, ``old_logprobs``, ``mask``: (N, T); ``advantages``: (N,), detached.
    ``clip_frac``: share of response tokens whose gradient was clipped; ``approx_kl``: the k3
    estimate of KL(old || new), ``mean (r - 1) - log r``, over response tokens.
    """
    on = mask.to(logprobs.dtype)  # (N, T)
    log_ratio = (logprobs - old_logprobs.detach()) * on  # (N, T)
    ratio = log_ratio.exp()  # (N, T)
    adv = advantages.detach().to(logprobs)[:, None]  # (N, 1)
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip_range, 1 + clip_range) * adv  # (N, T)
    loss = -(torch.min(unclipped, clipped) * on).sum(-1).mean()
    with torch.no_grad():
        count = on.sum().clamp(min=1)
        is_clipped = (clipped < unclipped).to(on.dtype) * on  # (N, T) the clipped branch won
        clip_frac = float(is_clipped.sum() / count)
        approx_kl = float((((ratio - 1) - log_ratio) * on).sum() / count)
    return loss, clip_frac, approx_kl


def generator_parameters(model, adapter: str = "generator") -> list[torch.nn.Parameter]:
    """The generator adapter's LoRA parameters: what the generator's optimizer updates."""
    return adapter_parameters(model, adapter)

