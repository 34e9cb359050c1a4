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

from lab.sampling import cache_keyword, decode, output_cache, position_ids  # noqa: F401 (re-exported)

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


class LogProbs(NamedTuple):
    """What :func:`response_logprobs` returns."""

    tokens: torch.Tensor  # (N, L-1) log p(token t+1 | tokens <= t); 0 off the response
    sums: torch.Tensor  # (N,) log pi(response | prompt)
    entropy: torch.Tensor | None  # (N, L-1) policy entropy at response positions, or None


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def encode(tokenizer, texts: list[str], max_length: int, device=None,
           add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize, keep each text's last ``max_length`` tokens, left-pad: ``(input_ids, attention_mask)``."""
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    return left_pad([row[-max_length:] for row in ids], tokenizer.pad_token_id, device)


def left_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> left-padded ``(input_ids, attention_mask)``, each (N, max length)."""
    return _pad(rows, pad_id, device, left=True)


def right_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> right-padded ``(input_ids, mask)``, each (N, max length)."""
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


def group_prompts(prompts: list[list[int]], device=None) -> tuple[list[list[int]], torch.Tensor]:
    """Each distinct token list once, in first-seen order, and the (N,) index of every row's
    one: what :func:`forward_after_prompts` takes to compute a shared prompt once."""
    first: dict[tuple, int] = {}
    index = [first.setdefault(tuple(p), len(first)) for p in prompts]
    return [list(p) for p in first], torch.tensor(index, device=device)


def until_first_eos(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on tokens up to and including the first ``eos_id`` of each row, 0 after it."""
    is_eos = (tokens == eos_id).long()  # (N, T)
    eos_before = is_eos.cumsum(-1) - is_eos  # (N, T) EOS tokens strictly before t
    return (eos_before == 0).long()  # (N, T)


@torch.no_grad()
def sample(model, tokenizer, prompts: list[str], k: int = 1, max_new_tokens: int = 32,
           temperature: float = 0.7, top_p: float = 0.9, max_prompt_tokens: int = 256,
           do_sample: bool = True) -> Samples:
    """Sample ``k`` responses for each prompt in one batched decode (:func:`lab.sampling.decode`:
    one prefill per prompt, shared by its ``k`` samples).

    Uses the active adapter. ``do_sample=False`` decodes greedily (the ``k`` rows of a
    prompt are then equal). Prompts longer than ``max_prompt_tokens`` keep their end.
    """
    repeated = [p for p in prompts for _ in range(k)]  # prompt-major: row b * k + j
    prompt_ids, prompt_mask = encode(tokenizer, prompts, max_prompt_tokens, model_device(model))  # (B, P)
    was_training = model.training
    model.eval()  # no LoRA dropout while sampling: the samples come from the policy itself
    try:
        response = decode(model, prompt_ids, prompt_mask, k, max_new_tokens, tokenizer.eos_token_id,
                          tokenizer.pad_token_id, temperature, top_p, do_sample)  # (N, T)
    finally:
        model.train(was_training)
    ids = prompt_ids.repeat_interleave(k, dim=0)  # (N, P)
    mask = prompt_mask.repeat_interleave(k, dim=0)  # (N, P)
    out = torch.cat([ids, response], dim=1)  # (N, P + T)
    prompt_len = ids.shape[1]
    in_response = until_first_eos(response, tokenizer.eos_token_id)  # (N, T)
    response_mask = torch.cat([torch.zeros_like(mask), in_response], dim=1)  # (N, P + T)
    lengths = in_response.sum(-1)  # (N,)
    completions = [tokenizer.decode(row[:n], skip_special_tokens=True).strip()
                   for row, n in zip(response.tolist(), lengths.tolist())]
    return Samples(prompts=repeated, completions=completions, input_ids=out,
                   attention_mask=torch.cat([mask, in_response], dim=1),  # (N, P + T)
                   response_mask=response_mask, prompt_len=prompt_len, lengths=lengths, k=k)


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
                   position_ids=position_ids(attention_mask), logits_to_keep=length - start,
                   use_cache=False).logits[:, :-1]  # (N, L-1-start, V)
    picked = _score(logits, input_ids[:, start + 1:], targets[:, start:], temperature,
                    with_entropy, entropy_grad)
    tokens = F.pad(picked.tokens, (start, 0))  # (N, L-1)
    entropy = None if picked.entropy is None else F.pad(picked.entropy, (start, 0))  # (N, L-1)
    return LogProbs(tokens=tokens, sums=tokens.sum(-1), entropy=entropy)  # sums: (N,)


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
    prompt_index = prompt_index.to(prompt_ids.device)
    first, rest = forward_after_prompts(model, prompt_ids, prompt_mask, prompt_index, continuations[:, :-1],
                                        continuation_mask[:, :-1], logits_to_keep=1)
    logits = first.logits[prompt_index]  # (N, 1, V): the prompt's last position predicts token 0
    if rest is not None:
        logits = torch.cat([logits, rest.logits], dim=1)  # (N, T, V)
    out = _score(logits, continuations, continuation_mask.bool(), temperature, with_entropy, entropy_grad)
    return LogProbs(tokens=out.tokens, sums=out.tokens.sum(-1), entropy=out.entropy)


def _score(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
           temperature: float | torch.Tensor, with_entropy: bool, entropy_grad: bool) -> LogProbs:
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


def sft_batch(tokenizer, prompts: list[str], completions: list[str], max_length: int = 256,
              device=None) -> dict[str, torch.Tensor]:
    """Left-padded prompt + completion + EOS with labels ``-100`` on prompt and padding.

    The prompt keeps at most its last ``max_length // 2`` tokens; the sequence is then cut
    at ``max_length`` tokens (a cut answer loses its EOS).
    """
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    answer_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id]
    rows, labels = [], []
    for p, a in zip(prompt_ids, answer_ids):
        p = p[-(max_length // 2):]
        rows.append((p + a + eos)[:max_length])
        labels.append(([IGNORE] * len(p) + a + eos)[:max_length])
    input_ids, attention_mask = left_pad(rows, tokenizer.pad_token_id, device)  # (N, L)
    label_ids, _ = left_pad(labels, IGNORE, device)  # (N, L) -100 on prompt and padding
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": label_ids}


def sft_loss(model, tokenizer, prompts: list[str], completions: list[str],
             max_length: int = 256) -> torch.Tensor:
    """Mean cross-entropy of the completion tokens (and EOS) given the prompt.

    ``-1/|y| sum_t log p(y_t | x, y_<t)`` over all completion tokens of the batch; prompt
    tokens and padding carry label ``-100`` and are not trained on (the sketch's defect 3
    trained on the prompt too).
    """
    batch = sft_batch(tokenizer, prompts, completions, max_length, model_device(model))
    response_mask = batch["labels"] != IGNORE  # (N, L)
    logprobs = response_logprobs(model, batch["input_ids"], batch["attention_mask"], response_mask)
    return -logprobs.tokens.sum() / response_mask[:, 1:].sum().clamp(min=1)


def reinforce_loss(logprob_sums: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE: ``-mean_i (R_i - b_i) * log pi(y_i | x_i)``.

    Its gradient is the policy-gradient estimate ``E[(R - b) grad log pi(y | x)]``: responses
    that beat the baseline become more likely. ``logprob_sums`` (N,) must be the log-prob
    of the *sampled response* given the prompt; the sketch used the prompt's own log-prob
    (defect 1), whose gradient does not depend on what was sampled. ``advantages`` (N,)
    are detached: the reward and the baseline are constants here.
    """
    return -(advantages.detach() * logprob_sums).mean()


def adapter_parameters(model, adapter: str) -> list[torch.nn.Parameter]:
    """The LoRA parameters of one adapter, marked trainable (peft's ``set_adapter`` may freeze them)."""
    params = [p for name, p in model.named_parameters() if "lora_" in name and f".{adapter}." in name]
    if not params:
        raise ValueError(f"The model has no LoRA adapter named {adapter!r}; "
                         f"add it with model.add_adapter({adapter!r}, lab.models.lora_config(...)).")
    for p in params:
        p.requires_grad_(True)
    return params


def generator_parameters(model, adapter: str = "generator") -> list[torch.nn.Parameter]:
    """The generator adapter's LoRA parameters: what the generator's optimizer updates."""
    return adapter_parameters(model, adapter)


def activate(model, adapter: str) -> str:
    """Make ``adapter`` the active one and trainable; return the adapter active before."""
    previous = model.active_adapter
    model.set_adapter(adapter)
    adapter_parameters(model, adapter)
    return previous
