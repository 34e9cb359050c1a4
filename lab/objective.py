"""The generator's objective on one batch of prompts, from ONE forward pass:

``loss = SFT + lambda * (policy loss + beta * KL - eta * entropy)``

- SFT: :func:`lab.generator.mean_nll` on the reference answers (the targets of
  :func:`lab.generator.sft_loss`);
- policy loss: :func:`lab.generator.reinforce_loss`, or with ``policy_loss="ppo"``
  :func:`lab.generator.clipped_policy_loss` against the sampling policy's log-probs;
- KL: :func:`kl_to_base`, the k3 estimate against the backbone with adapters off;
- entropy: the policy's mean entropy on the sampled tokens.

Each prompt is computed once and shared by its reference answer and its ``k`` samples
(:func:`lab.generator.continuation_logprobs`). The trainer calls :func:`generator_loss` for
the whole batch, or per minibatch of prompts in PPO epochs (:meth:`GeneratorBatch.select`).

Under several processes (:mod:`lab.runtime.distributed`) each computes its shard of the prompts; the
per-token means (SFT, entropy, KL) are rescaled by :func:`lab.runtime.distributed.pooled` so that their
mean over processes, and the averaged gradient, equal one process's on the whole batch.

Shapes: ``B`` prompts, ``k`` samples each, ``N = B * k``, ``T`` continuation tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lab import generator
from lab.runtime import distributed
from lab.variants import mixing
from lab.runtime.guards import finite_update
from lab.core.tensors import eval_mode, right_pad, training_attention


@dataclass
class GeneratorBatch:
    """What one generator update reads, for ``B`` prompts."""

    prompt_ids: torch.Tensor  # (B, P) left padded, exactly as the sampler saw them
    prompt_mask: torch.Tensor  # (B, P)
    references: list[list[int]] | None  # B SFT targets (answer tokens + EOS); None: no SFT term
    responses: list[list[int]] | None  # N sampled token lists up to the first EOS; None: no RL term
    advantages: torch.Tensor | None  # (N,) detached
    old_logprobs: torch.Tensor | None = None  # (N, T) the sampling policy's; None: REINFORCE
    k: int = 1  # samples per prompt
    sft_mask: torch.Tensor | None = None  # (B,) bool, HPT: True = SFT for this prompt, False = RL
    ref_logprobs: torch.Tensor | None = None  # (N, T') the base's, from the step's BasePass; None: KL computes them

    def select(self, prompts: list[int]) -> "GeneratorBatch":
        """The same batch restricted to the prompts ``prompts`` (indices) and their samples."""
        rows = [b * self.k + j for b in prompts for j in range(self.k)]
        pick = (lambda x: None if x is None else [x[i] for i in prompts])
        old = None if self.old_logprobs is None else self.old_logprobs[rows]
        return GeneratorBatch(self.prompt_ids[prompts], self.prompt_mask[prompts], pick(self.references),
                              None if self.responses is None else [self.responses[i] for i in rows],
                              None if self.advantages is None else self.advantages[rows], old, self.k,
                              None if self.sft_mask is None else self.sft_mask[prompts],
                              None if self.ref_logprobs is None else self.ref_logprobs[rows])


def generator_loss(model, batch: GeneratorBatch, cfg, lam: float, pad_id: int,
                   mu: float | None = None) -> tuple[torch.Tensor, dict]:
    """``(loss, logs)`` for ``batch`` under config ``cfg`` (a :class:`lab.config.HybridConfig`):
    ``SFT + lam * RL``, or with an ``sft_schedule`` ``mu * SFT + (1 - mu) * RL`` (``mu`` given,
    or for ``srft`` computed here from the samples' entropy, :func:`lab.variants.mixing.mu_at`).
    ``RL`` = policy loss + beta * KL - eta * entropy. ``logs`` holds each term's value
    (``loss_sft``, ``loss_rl``, ``kl``, ``entropy``, ``mu``, and ``clip_frac``, ``approx_kl``
    with PPO)."""
    use_sft, use_rl = batch.references is not None, batch.responses is not None and lam > 0
    logs: dict[str, float] = {}
    if not (use_sft or use_rl):
        return torch.zeros((), device=batch.prompt_ids.device, requires_grad=True), logs
    n_prompts, k = len(batch.prompt_ids), batch.k if use_rl else 0
    groups = [[] for _ in range(n_prompts)]  # per prompt: [reference] + its k samples, as (tokens, temperature)
    if use_sft:  # scored at temperature 1
        for group, answer in zip(groups, batch.references):
            group.append((answer, 1.0))
    if use_rl:  # at their sampling temperature
        for i, tokens in enumerate(batch.responses):
            groups[i // k].append((tokens, cfg.temperature))
    r = len(groups[0])  # rows per prompt
    conts, cont_mask = right_pad([t for g in groups for t, _ in g], pad_id, batch.prompt_ids.device)  # (B*r, T)
    temps = torch.tensor([t for g in groups for _, t in g])  # (B*r,)
    index = torch.arange(n_prompts).repeat_interleave(r)  # (B*r,) row -> its prompt
    out = generator.continuation_logprobs(model, batch.prompt_ids, batch.prompt_mask, conts, cont_mask, index,
                                          with_entropy=use_rl, entropy_grad=cfg.entropy_coef > 0,
                                          temperature=temps)
    sft = rl_terms = torch.zeros((), device=conts.device)
    if use_sft:
        per_prompt = out.tokens.view(n_prompts, r, -1)[:, 0]  # (B, T)
        on = cont_mask.view(n_prompts, r, -1)[:, 0]  # (B, T)
        if batch.sft_mask is not None:  # HPT: only the prompts the policy fails are imitated
            on = on * batch.sft_mask[:, None].to(on)  # (B, T)
        sft = distributed.pooled(generator.mean_nll(per_prompt, on), on.sum())  # = sft_loss (HPT: imitated prompts)
        imitated = distributed.any_true(bool(on.any()))  # HPT step imitating nothing: no SFT loss
        logs["loss_sft"] = sft.item() if imitated else float("nan")
        if cfg.sft_token_weight == "phi":  # CHORD-phi trains on the weighted loss; loss_sft stays comparable
            sft = distributed.pooled(generator.mean_nll(per_prompt, on, mixing.phi_weights(per_prompt)), on.sum())
            logs["loss_sft_phi"] = sft.item()
    if use_rl:
        def sample_rows(x: torch.Tensor) -> torch.Tensor:  # (B * r, T) -> (N, T), row b * k + j
            return x.view(n_prompts, r, -1)[:, int(use_sft):].reshape(n_prompts * k, -1)

        tokens, on = sample_rows(out.tokens), sample_rows(cont_mask)  # (N, T) each
        n_tokens = on.sum().clamp(min=1)
        advantages = batch.advantages.to(tokens)  # (N,)
        if batch.sft_mask is not None:  # HPT: the prompts being imitated take no RL step
            advantages = advantages * (~batch.sft_mask).repeat_interleave(k).to(advantages)  # (N,)
        if cfg.policy_loss == "ppo":
            old = tokens.detach() if batch.old_logprobs is None else _fit(batch.old_logprobs, tokens.shape[1])
            rl, logs["clip_frac"], logs["approx_kl"] = generator.clipped_policy_loss(
                tokens, old.to(tokens), advantages, on, cfg.clip_range)
        else:
            rl = generator.reinforce_loss(tokens.sum(-1), advantages)
        entropy = distributed.pooled(sample_rows(out.entropy).sum() / n_tokens, on.sum())
        kl = torch.zeros((), device=conts.device)
        if cfg.kl_coef > 0:
            kl = distributed.pooled(kl_to_base(model, batch.prompt_ids, batch.prompt_mask, sample_rows(conts), on,
                                               tokens, cfg.temperature, batch.ref_logprobs), on.sum())
        rl_terms = rl + cfg.kl_coef * kl - cfg.entropy_coef * entropy
        logs.update(loss_rl=rl.item(), entropy=entropy.item(), kl=kl.item())
    if cfg.sft_schedule == "none":
        return sft + lam * rl_terms, logs
    if cfg.sft_schedule == "srft":  # several processes: the whole batch's entropy, so all use one mu
        mu = mixing.mu_at(0, "srft", cfg.mu, entropy=distributed.mean_value(logs.get("entropy", 0.0)))
    logs["mu"] = mu
    return mu * sft + (1 - mu) * rl_terms, logs


def _fit(x: torch.Tensor, width: int) -> torch.Tensor:
    """Cut or zero-pad the columns of (N, T') to ``width``: batches pad to their own longest row."""
    return x[:, :width] if x.shape[1] >= width else torch.nn.functional.pad(x, (0, width - x.shape[1]))


def kl_to_base(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, responses: torch.Tensor,
               mask: torch.Tensor, logprobs: torch.Tensor, temperature: float,
               reference: torch.Tensor | None = None) -> torch.Tensor:
    """KL(pi || base) on the sampled tokens, the non-negative k3 estimator ``exp(r) - r - 1``
    with ``r = log p_base - log pi`` (Schulman, 2020), averaged over response tokens. The base
    is the same backbone with its adapters disabled.

    ``responses``, ``mask``, ``logprobs`` (the policy's, with gradient): (N, T), ``N / B`` rows per prompt.
    ``reference``: the base's log-probs (N, T') of these tokens at ``temperature`` when already
    computed (:class:`BasePass`); else one pass here.
    """
    if reference is not None:
        ref = _fit(reference.to(logprobs), logprobs.shape[1])  # (N, T)
    else:
        k = len(responses) // len(prompt_ids)
        index = torch.arange(len(prompt_ids)).repeat_interleave(k)  # (N,) row -> prompt
        with torch.no_grad(), model.disable_adapter():
            ref = generator.continuation_logprobs(model, prompt_ids, prompt_mask, responses, mask, index,
                                                  temperature=temperature).tokens  # (N, T)
    on = mask.to(logprobs.dtype)  # (N, T)
    log_ratio = (ref - logprobs) * on  # (N, T)
    return ((log_ratio.exp() - log_ratio - 1) * on).sum() / on.sum().clamp(min=1)


@dataclass
class BasePass:
    """The frozen base's log-probs of a step's sampled responses, from ONE pass, read by both
    frozen-base consumers: the KL penalty (at the sampling temperature, :func:`kl_to_base`) and
    the perplexity reward (at temperature 1, :class:`lab.rewards.Perplexity`, for each response
    whose decoded text re-tokenizes to the sampled tokens; the others it scores itself)."""

    at_temperature: torch.Tensor  # (N, T) log p_base of each response token (EOS included), at the temperature
    at_one: torch.Tensor  # (N, T) the same at temperature 1
    rows: dict  # (prompt token ids, response token ids before EOS) -> row

    def nll(self, context: list[int], answer: list[int]) -> float | None:
        """Mean NLL of ``answer`` given ``context`` under the base, when this pass scored them; else None."""
        row = self.rows.get((tuple(context), tuple(answer)))
        return None if row is None or not answer else float(-self.at_one[row, :len(answer)].sum() / len(answer))


@torch.no_grad()
def base_pass(model, samples, temperature: float, tokenizer) -> BasePass:
    """One pass of the base (adapters off) over the sampled responses of ``samples`` (a
    :class:`lab.generator.Samples`: ``B`` prompts as the sampler saw them, ``N = B * k`` token
    lists, EOS included where sampled)."""
    prompt_ids, prompt_mask = samples.prompt_tensors()  # (B, P) each
    responses, k, eos_id = samples.responses(), samples.k, tokenizer.eos_token_id
    conts, mask = right_pad(responses, tokenizer.pad_token_id, prompt_ids.device)  # (N, T)
    index = torch.arange(len(prompt_ids)).repeat_interleave(k)  # (N,) row -> prompt
    with eval_mode(model), model.disable_adapter():
        logits = generator.continuation_logits(model, prompt_ids, prompt_mask, conts, mask, index)  # (N, T, V)
    at_temperature = generator.score_logits(logits, conts, mask.bool(), temperature).tokens  # (N, T)
    at_one = at_temperature if temperature == 1 else generator.score_logits(logits, conts, mask.bool()).tokens
    at_one = at_one.float().cpu()  # (N, T) read row by row by the reward: one copy, not a sync a row
    prompts = [tuple(ids[on.bool()].tolist()) for ids, on in zip(prompt_ids, prompt_mask)]
    rows = {(prompts[i // k], tuple(r[:-1] if r and r[-1] == eos_id else r)): i for i, r in enumerate(responses)}
    return BasePass(at_temperature, at_one, rows)


@torch.no_grad()
def sampling_logprobs(model, batch: GeneratorBatch, temperature: float, pad_id: int) -> torch.Tensor:
    """Per-token log-probs (N, T) of ``batch.responses`` under the current policy, no gradient:
    the ``old_logprobs`` of PPO epochs, taken before the first update of a step."""
    conts, mask = right_pad(batch.responses, pad_id, batch.prompt_ids.device)  # (N, T)
    index = torch.arange(len(batch.prompt_ids)).repeat_interleave(batch.k)  # (N,)
    return generator.continuation_logprobs(model, batch.prompt_ids, batch.prompt_mask, conts, mask, index,
                                           temperature=temperature).tokens  # (N, T)


def update(model, optimizer, params, batch: GeneratorBatch, cfg, lam: float, pad_id: int,
           mu: float | None = None) -> dict:
    """Optimizer step(s) of the generator on ``batch``: one pass, or with ``policy_loss="ppo"``
    ``ppo_epochs`` passes over ``ppo_minibatches`` minibatches of prompts (a prompt's samples
    stay together) against the sampling policy's log-probs. Each pass is
    :func:`generator_loss`, then :func:`lab.runtime.guards.finite_update` (clip, step, or skip when
    not finite). Returns the history entries: each term averaged over the first epoch's
    minibatches (what the step computed at the sampling policy), ``clip_frac`` and
    ``approx_kl`` over every pass, and ``skipped_updates``."""
    ppo = batch.responses is not None and lam > 0 and cfg.policy_loss == "ppo"
    epochs, parts = (cfg.ppo_epochs, cfg.ppo_minibatches) if ppo else (1, 1)
    if ppo and (epochs > 1 or parts > 1):  # later passes compare with the policy that sampled
        batch.old_logprobs = sampling_logprobs(model, batch, cfg.temperature, pad_id)  # (N, T)
    passes = []
    for epoch in range(epochs):
        for prompts in torch.arange(len(batch.prompt_ids)).tensor_split(parts):
            part = batch if parts == 1 else batch.select(prompts.tolist())
            with training_attention(model):  # the kernel picked in the forward also runs the backward
                loss, logs = generator_loss(model, part, cfg, lam, pad_id, mu)
            stepped, logs["grad_norm"] = finite_update(optimizer, params, loss, cfg.max_grad_norm)
            passes.append(dict(logs, loss=loss.item(), epoch=epoch, skipped=not stepped))
    first = [p for p in passes if p["epoch"] == 0]
    out = {key: sum(p[key] for p in first) / len(first) for key in first[0] if key not in ("epoch", "skipped")}
    out["skipped_updates"] = sum(p["skipped"] for p in passes)
    for key in ("clip_frac", "approx_kl"):
        if key in first[0]:
            out[key] = sum(p[key] for p in passes) / len(passes)
    return out
