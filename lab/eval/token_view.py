"""One update, token by token: what each policy loss does with the same rollouts (notebook 08).

:func:`rollouts` samples one batch with a trainer's generator, scores it, takes the group
advantages (GRPO's), and moves the policy by one REINFORCE step, so that the ratios
``pi / pi_old`` leave 1 as they do on a second pass. :func:`token_view` replays those rollouts
under one ``loss_type`` and returns, per response token: the advantage, the ratio, whether the
clip removed its gradient, the policy's entropy there, and the weight the loss gives its log-prob
(``-d loss / d log pi``, :func:`lab.losses.token_weights`). :data:`VIEWS` names the loss types
side by side; :func:`lab.ui.plots.token_heatmap` draws them.

Shapes: ``N`` responses (``B`` prompts x ``k``), ``T`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from lab import generator, losses, objective
from lab.advantages import advantages as baseline_advantages
from lab.core.tensors import right_pad

VIEWS = {"reinforce": ("reinforce", "token", 0.2), "grpo": ("grpo", "token", 0.2),
         "dr_grpo": ("dr_grpo", "token", 0.2), "bnpo": ("bnpo", "token", 0.2), "dapo": ("dapo", "token", 0.28),
         "gspo": ("grpo", "sequence", 0.2)}  # name -> (loss_type, importance_sampling_level, epsilon_high)


@dataclass
class Rollouts:
    """One batch of responses, their advantages, and their log-probs before and after an update."""

    tokens: list[list[str]]  # N responses, each token's text
    old: torch.Tensor  # (N, T) log-probs under the policy that sampled
    new: torch.Tensor  # (N, T) under the policy one update later
    entropy: torch.Tensor  # (N, T) the sampling policy's entropy at each position
    advantages: torch.Tensor  # (N,) group advantages: reward minus the prompt's mean
    rewards: torch.Tensor  # (N,)
    mask: torch.Tensor  # (N, T) 1 on response tokens
    completions: list[str]  # N response texts
    max_tokens: int  # max_new_tokens, dr_grpo's constant


class TokenView(NamedTuple):
    """Per-token arrays (N, T), NaN off the responses, and the loss's value."""

    loss: float
    weight: np.ndarray  # -d loss / d log pi(y_t): > 0 made more likely
    ratio: np.ndarray
    clipped: np.ndarray  # 1 where the clipped branch won: no gradient
    advantage: np.ndarray
    entropy: np.ndarray


def rollouts(trainer, step: int = 1, lr: float | None = None) -> Rollouts:
    """Sample the batch of ``step`` with ``trainer``'s generator (``k >= 2`` per prompt), score it
    with its reward, take the group advantages and one REINFORCE update (at ``lr``, default the
    trainer's): the trainer's generator, its optimizer's moments and the random streams move."""
    cfg, tok = trainer.config, trainer.tokenizer
    batch = trainer.batch(step)
    samples = generator.sample(trainer.model, tok, [e.prompt for e in batch], k=cfg.samples_per_prompt,
                               max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    references = [e.completion for e in batch for _ in range(samples.k)]  # (N,)
    rewards = torch.tensor(trainer.reward(samples.prompts, samples.completions, references=references).total)
    advantage, _ = baseline_advantages(rewards.float(), "group", samples.k)  # (N,)
    prompt_ids, prompt_mask = samples.prompt_tensors()
    gen = objective.GeneratorBatch(prompt_ids, prompt_mask, None, samples.responses(), advantage, k=samples.k)
    before = objective.sampling_logprobs(trainer.model, gen, cfg.temperature, tok.pad_token_id, with_entropy=True)
    for group in trainer.opt_gen.param_groups:
        group["lr"] = lr or cfg.lr
    objective.update(trainer.model, trainer.opt_gen, trainer.gen_params, gen, cfg.replace(
        loss_type="reinforce", importance_sampling_level="token", kl_coef=0.0, entropy_coef=0.0, sft_schedule="none",
        mode="rl"), 1.0, tok.pad_token_id)
    for group in trainer.opt_gen.param_groups:
        group["lr"] = cfg.lr
    after = objective.sampling_logprobs(trainer.model, gen, cfg.temperature, tok.pad_token_id)
    mask = right_pad(gen.responses, tok.pad_token_id)[1].float()  # (N, T)
    return Rollouts([tok.convert_ids_to_tokens(r) for r in gen.responses], before.tokens, after.tokens,
                    before.entropy, advantage, rewards, mask, samples.completions, cfg.max_new_tokens)


def token_view(r: Rollouts, loss_type: str = "grpo", level: str = "token", clip_range: float = 0.2,
               epsilon_high: float | None = None, advantages: torch.Tensor | None = None) -> TokenView:
    """``r`` replayed under ``loss_type`` (``reinforce`` or a clipped type of
    :func:`lab.losses.policy_loss`) at importance ``level``: the per-token view at the updated
    policy. ``advantages`` (N,): others than ``r``'s (e.g. all zero, to see why a loss is 0)."""
    adv = r.advantages if advantages is None else advantages  # (N,)
    logprobs = r.new.detach().clone().requires_grad_()  # (N, T)
    if loss_type == "reinforce":
        loss = losses.reinforce_loss((logprobs * r.mask).sum(-1), adv)
        stats = {"ratio": (r.new - r.old).exp(), "clipped": torch.zeros_like(r.mask, dtype=torch.bool)}
    else:
        loss, stats = losses.policy_loss(logprobs, r.old, adv, r.mask, loss_type, clip_range,
                                         epsilon_high or clip_range, level, max_tokens=r.max_tokens)
    off = ~r.mask.bool()

    def show(x: torch.Tensor) -> np.ndarray:
        return x.detach().float().masked_fill(off, float("nan")).numpy()

    return TokenView(loss.item(), show(losses.token_weights(loss, logprobs)), show(stats["ratio"]),
                     show(stats["clipped"].float()), show(adv[:, None].expand_as(r.mask).float()), show(r.entropy))


def views(r: Rollouts, names=tuple(VIEWS), advantages: torch.Tensor | None = None) -> dict[str, TokenView]:
    """:func:`token_view` of ``r`` under each of ``names`` (keys of :data:`VIEWS`)."""
    return {name: token_view(r, VIEWS[name][0], VIEWS[name][1], epsilon_high=VIEWS[name][2], advantages=advantages)
            for name in names}
