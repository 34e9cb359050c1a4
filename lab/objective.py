"""The generator's objective on one batch of prompts, from ONE forward pass:

``loss = SFT + lambda * (policy loss + beta * KL - eta * entropy)``

- SFT: :func:`lab.losses.mean_nll` on the reference answers (the targets of
  :func:`lab.generator.sft_loss`);
- policy loss: :func:`lab.losses.reinforce_loss`, or a clipped ``loss_type`` (ppo, grpo, dr_grpo,
  bnpo, dapo; :func:`lab.losses.policy_loss`) against the sampling policy's log-probs;
- KL: :func:`lab.losses.kl_to_base`, the k3 estimate against the backbone with adapters off;
- entropy: the policy's mean entropy on the sampled tokens.

Each prompt is computed once and shared by its reference answer and its ``k`` samples
(:func:`lab.generator.continuation_logprobs`). The trainer calls :func:`generator_loss` for
the whole batch, or per minibatch of prompts in PPO epochs (:meth:`GeneratorBatch.select`).

The collectives go through ``processes`` (:class:`lab.runtime.distributed.OneProcess`: in one
process each returns its input). Under several processes each computes its shard of the prompts;
the per-token means (SFT, entropy, KL) are rescaled (``pooled_mean``) so that their mean over
processes, and the averaged gradient, equal one process's on the whole batch.

Shapes: ``B`` prompts, ``k`` samples each, ``N = B * k``, ``T`` continuation tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lab import generator, losses
from lab.advantages import lambda_at
from lab.runtime import distributed
from lab.variants import distill, mixing
from lab.runtime.guards import finite_update
from lab.core.tensors import right_pad
from lab.fast.attention import training_attention


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
    ref_logprobs: torch.Tensor | None = None  # (N, T') the base's (lab.rewards.BasePass); None: KL computes them
    token_normalizer: float | None = None  # 'dapo': the step's response tokens per process and minibatch
    teacher_logprobs: torch.Tensor | None = None  # (N, T, V) 'distill': the teacher's; the RL term is the reverse KL

    def select(self, prompts: list[int]) -> "GeneratorBatch":
        """The same batch restricted to the prompts ``prompts`` (indices) and their samples."""
        rows = [b * self.k + j for b in prompts for j in range(self.k)]
        pick = (lambda x: None if x is None else [x[i] for i in prompts])
        old = None if self.old_logprobs is None else self.old_logprobs[rows]
        return GeneratorBatch(self.prompt_ids[prompts], self.prompt_mask[prompts], pick(self.references),
                              None if self.responses is None else [self.responses[i] for i in rows],
                              None if self.advantages is None else self.advantages[rows], old, self.k,
                              None if self.sft_mask is None else self.sft_mask[prompts],
                              None if self.ref_logprobs is None else self.ref_logprobs[rows], self.token_normalizer,
                              None if self.teacher_logprobs is None else self.teacher_logprobs[rows])


def generator_loss(model, batch: GeneratorBatch, cfg, lam: float, pad_id: int, mu: float | None = None,
                   processes: distributed.OneProcess | None = None) -> tuple[torch.Tensor, dict]:
    """``(loss, logs)`` for ``batch`` under config ``cfg`` (a :class:`lab.config.HybridConfig`):
    ``SFT + lam * RL``, or with an ``sft_schedule`` ``mu * SFT + (1 - mu) * RL`` (``mu`` given,
    or for ``srft`` computed here from the samples' entropy, :func:`lab.variants.mixing.mu_at`).
    ``RL`` = policy loss + beta * KL - eta * entropy. ``logs`` holds each term's value
    (``loss_sft``, ``loss_rl``, ``kl``, ``entropy``, ``mu``, and ``clip_frac``, ``approx_kl``
    with a clipped loss). ``processes``: the collectives (None: this launch's, :func:`lab.runtime.distributed.hooks`)."""
    processes = distributed.hooks() if processes is None else processes
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
    logits = generator.continuation_logits(model, batch.prompt_ids, batch.prompt_mask, conts, cont_mask, index)
    out = generator.score_logits(logits, conts, cont_mask.bool(), temps, use_rl, cfg.entropy_coef > 0)  # (B*r, T)
    sft = rl_terms = torch.zeros((), device=conts.device)
    if use_sft:
        per_prompt = out.tokens.view(n_prompts, r, -1)[:, 0]  # (B, T)
        on = cont_mask.view(n_prompts, r, -1)[:, 0]  # (B, T)
        if batch.sft_mask is not None:  # HPT: only the prompts the policy fails are imitated
            on = on * batch.sft_mask[:, None].to(on)  # (B, T)
        sft = processes.pooled_mean(losses.mean_nll(per_prompt, on), on.sum())  # = sft_loss (HPT: imitated prompts)
        imitated = processes.any_true(bool(on.any()))  # HPT step imitating nothing: no SFT loss
        logs["loss_sft"] = sft.item() if imitated else float("nan")
        if cfg.sft_token_weight == "phi":  # CHORD-phi trains on the weighted loss; loss_sft stays comparable
            sft = processes.pooled_mean(losses.mean_nll(per_prompt, on, mixing.phi_weights(per_prompt)), on.sum())
            logs["loss_sft_phi"] = sft.item()
    if use_rl:
        def sample_rows(x: torch.Tensor) -> torch.Tensor:  # (B * r, T, ...) -> (N, T, ...), row b * k + j
            return x.view(n_prompts, r, *x.shape[1:])[:, int(use_sft):].reshape(n_prompts * k, *x.shape[1:])

        tokens, on = sample_rows(out.tokens), sample_rows(cont_mask)  # (N, T) each
        n_tokens = on.sum().clamp(min=1)
        advantages = batch.advantages.to(tokens)  # (N,)
        if batch.sft_mask is not None:  # HPT: the prompts being imitated take no RL step
            advantages = advantages * (~batch.sft_mask).repeat_interleave(k).to(advantages)  # (N,)
        if batch.teacher_logprobs is not None:  # on-policy distillation: the teacher's distribution, not a reward
            rl, _ = distill.reverse_kl(sample_rows(logits), _fit(batch.teacher_logprobs, tokens.shape[1]), on)
            logs["kl_teacher"] = processes.pooled_mean(rl, on.sum()).item()
        elif cfg.loss_type == "reinforce":
            rl = losses.reinforce_loss(tokens.sum(-1), advantages)
        else:  # a clipped ratio against the sampling policy (1 on the first pass over fresh samples)
            old = tokens.detach() if batch.old_logprobs is None else _fit(batch.old_logprobs, tokens.shape[1])
            rl, stats = losses.policy_loss(tokens, old.to(tokens), advantages, on, cfg.loss_type, cfg.clip_range,
                                           cfg.epsilon_high or cfg.clip_range, cfg.importance_sampling_level,
                                           max_tokens=cfg.max_new_tokens, normalizer=batch.token_normalizer)
            logs.update(clip_frac=stats["clip_frac"], approx_kl=stats["approx_kl"])
        entropy = processes.pooled_mean(sample_rows(out.entropy).sum() / n_tokens, on.sum())
        kl = torch.zeros((), device=conts.device)
        if cfg.kl_coef > 0:
            ref = batch.ref_logprobs if batch.ref_logprobs is not None else \
                _base_logprobs(model, batch.prompt_ids, batch.prompt_mask, sample_rows(conts), on, cfg.temperature)
            kl = processes.pooled_mean(losses.kl_to_base(tokens, _fit(ref.to(tokens), tokens.shape[1]), on), on.sum())
        rl_terms = rl + cfg.kl_coef * kl - cfg.entropy_coef * entropy
        logs.update(loss_rl=rl.item(), entropy=entropy.item(), kl=kl.item())
    if cfg.sft_schedule == "none":
        return sft + lam * rl_terms, logs
    if cfg.sft_schedule == "srft":  # several processes: the whole batch's entropy, so all use one mu
        mu = mixing.mu_at(0, "srft", cfg.mu, entropy=processes.mean_value(logs.get("entropy", 0.0)))
    logs["mu"] = mu
    return mu * sft + (1 - mu) * rl_terms, logs


def _fit(x: torch.Tensor, width: int) -> torch.Tensor:
    """Cut or zero-pad the columns T' of (N, T', ...) to ``width``: batches pad to their own longest row."""
    pad = [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]]  # (N, T') or (N, T', V): the T' columns only
    return x[:, :width] if x.shape[1] >= width else torch.nn.functional.pad(x, pad)


@torch.no_grad()
def _base_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, responses: torch.Tensor,
                   mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """The base's log-probs (N, T) of ``responses`` (N, T), ``N / B`` rows per prompt, at
    ``temperature``: the KL's reference when the step has no :class:`lab.rewards.BasePass`."""
    k = len(responses) // len(prompt_ids)
    index = torch.arange(len(prompt_ids)).repeat_interleave(k)  # (N,) row -> prompt
    with model.disable_adapter():
        return generator.continuation_logprobs(model, prompt_ids, prompt_mask, responses, mask, index,
                                               temperature=temperature).tokens  # (N, T)


@torch.no_grad()
def sampling_logprobs(model, batch: GeneratorBatch, temperature: float, pad_id: int,
                      with_entropy: bool = False) -> generator.LogProbs:
    """Per-token log-probs (N, T) of ``batch.responses`` under the current policy (and the entropy
    with ``with_entropy``), no gradient: the ``old_logprobs`` of PPO epochs, taken before the first
    update of a step."""
    conts, mask = right_pad(batch.responses, pad_id, batch.prompt_ids.device)  # (N, T)
    index = torch.arange(len(batch.prompt_ids)).repeat_interleave(batch.k)  # (N,)
    return generator.continuation_logprobs(model, batch.prompt_ids, batch.prompt_mask, conts, mask, index,
                                           with_entropy=with_entropy, temperature=temperature)


def update(model, optimizer, params, batch: GeneratorBatch, cfg, lam: float, pad_id: int,
           mu: float | None = None, processes: distributed.OneProcess | None = None) -> dict:
    """Optimizer step(s) of the generator on ``batch``: one pass, or with a clipped ``loss_type``
    ``ppo_epochs`` passes over ``ppo_minibatches`` minibatches of prompts (a prompt's samples
    stay together) against the sampling policy's log-probs. Each pass is
    :func:`generator_loss`, then :func:`lab.runtime.guards.finite_update` (clip, step, or skip when
    not finite). Returns the history entries: each term averaged over the first epoch's
    minibatches (what the step computed at the sampling policy), ``clip_frac`` and
    ``approx_kl`` over every pass, and ``skipped_updates``. ``processes``: as in :func:`generator_loss`."""
    processes = distributed.hooks() if processes is None else processes
    clipped = batch.responses is not None and lam > 0 and cfg.loss_type != "reinforce"
    epochs, parts = (cfg.ppo_epochs, cfg.ppo_minibatches) if clipped else (1, 1)
    if clipped and (epochs > 1 or parts > 1):  # later passes compare with the policy that sampled
        batch.old_logprobs = sampling_logprobs(model, batch, cfg.temperature, pad_id).tokens  # (N, T)
    if clipped and cfg.loss_type == "dapo":  # TRL: the generation batch's tokens / processes / minibatches
        tokens = sum(len(r) for r in batch.responses)
        batch.token_normalizer = max(1.0, processes.mean_value(float(tokens)) / parts)
    passes = []
    for epoch in range(epochs):
        for prompts in torch.arange(len(batch.prompt_ids)).tensor_split(parts):
            part = batch if parts == 1 else batch.select(prompts.tolist())
            with training_attention(model):  # the kernel picked in the forward also runs the backward
                loss, logs = generator_loss(model, part, cfg, lam, pad_id, mu, processes)
            stepped, logs["grad_norm"], overflow = finite_update(optimizer, params, loss, cfg.max_grad_norm, processes)
            passes.append(dict(logs, loss=loss.item(), epoch=epoch, skipped=not (stepped or overflow),
                               overflow=overflow))  # fp16's scaler backing off: not a failed update
    first = [p for p in passes if p["epoch"] == 0]
    out = {key: sum(p[key] for p in first) / len(first) for key in first[0]
           if key not in ("epoch", "skipped", "overflow")}
    out["skipped_updates"] = sum(p["skipped"] for p in passes)
    if overflows := sum(p["overflow"] for p in passes):
        out["scaler_overflows"] = overflows
    for key in ("clip_frac", "approx_kl"):
        if key in first[0]:
            out[key] = sum(p[key] for p in passes) / len(passes)
    return out


def rl_weight(cfg, step: int, critic_accuracy: float | None) -> float:
    """``lambda``, the RL weight at ``step``: 0 in SFT, 1 in RL, self-play and distill and under an
    ``sft_schedule`` (whose ``mu`` then sets the mix), else :func:`lab.advantages.lambda_at`."""
    if cfg.mode == "sft":
        return 0.0
    if cfg.mode in ("rl", "selfplay", "distill") or cfg.sft_schedule != "none":
        return 1.0
    return lambda_at(step, cfg.lambda_schedule, cfg.lambda_rl, cfg.lambda_warmup_steps, critic_accuracy)


def sft_weight(cfg, step: int) -> float | None:
    """``mu``, the SFT weight of an ``sft_schedule`` at ``step`` (:func:`lab.variants.mixing.mu_at`;
    ``srft``: computed in :func:`generator_loss` from the policy's entropy), else None."""
    if cfg.sft_schedule in ("none", "srft"):
        return None
    return mixing.mu_at(step, cfg.sft_schedule, cfg.mu, cfg.mu_min, cfg.mu_warmup_steps, cfg.mu_decay_steps)


def rl_target(cfg, reward: torch.Tensor, critic: torch.Tensor) -> torch.Tensor:
    """What the RL phase maximises (N,), by ``reward_source``: the reward, the discriminator's
    score, or a mix of both; plus ``naturalness_weight`` x the odds a Bradley-Terry discriminator
    gives the sample of passing for its reference, ``sigmoid(D(x, y) - D(x, ref))``.

    >>> from lab.config import HybridConfig
    >>> cfg = HybridConfig(discriminator_loss="bradley_terry", baseline="loo", naturalness_weight=0.5)
    >>> rl_target(cfg, torch.tensor([0.6]), torch.tensor([0.0]))  # 0.6 + 0.5 * sigmoid(0)
    tensor([0.8500])
    """
    if cfg.reward_source == "discriminator":
        return critic.clone()
    target = (1 - cfg.reward_mix) * reward + cfg.reward_mix * critic if cfg.reward_source == "mix" else reward
    if cfg.naturalness_weight > 0:
        target = target + cfg.naturalness_weight * torch.sigmoid(critic)  # (N,)
    return target


def check_model(model, cfg) -> None:
    """The model a trainer is given must be fresh (no LoRA adapters of an earlier trainer), and a
    prompt plus the longest continuation the objective scores (a sample of ``max_new_tokens``, or
    a reference answer of up to ``lab.generator.MAX_ANSWER_TOKENS``) must fit its positions; else
    one ``ValueError`` naming the fix, instead of an index error mid-step."""
    if hasattr(model, "peft_config"):
        raise ValueError("this model already carries LoRA adapters (it trained another HybridTrainer); "
                         "load a fresh model for each trainer, e.g. lab.models.load(name)")
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    answer = max(cfg.max_new_tokens, generator.MAX_ANSWER_TOKENS)
    if context and cfg.max_prompt_tokens + answer > context:
        raise ValueError(f"max_prompt_tokens={cfg.max_prompt_tokens} + up to {answer} answer tokens exceed the "
                         f"model's context of {context} positions; set max_prompt_tokens <= {context - answer}")
