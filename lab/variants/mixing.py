"""The SFT + RL mixes of 2025-26 as small pure functions the objective composes.

- CHORD (Zhang et al., 2025): ``loss = (1 - mu) * L_RL + mu * L_SFT`` with ``mu`` warmed up then
  decayed by a cosine (:func:`mu_at`), optionally each SFT token weighted by ``phi = p (1 - p)``
  (:func:`phi_weights`);
- SRFT (Fu et al., 2025): the SFT weight gated by the policy's entropy, ``mu * exp(-H)``
  (:func:`mu_at` with ``"srft"``);
- LUFFY (Yan et al., 2025): the reference answer joins the RL group as an off-policy member
  (:func:`lab.generator.with_references` adds it; :func:`sampled_rows` tells the rows apart);
- HPT (Lv et al., 2025): per prompt, SFT when its samples fail, RL when they succeed
  (:func:`sft_prompts`).
"""

from __future__ import annotations

import math

import torch


def mu_at(step: int, schedule: str, mu: float, mu_min: float = 0.0, warmup_steps: int = 0,
          decay_steps: int = 1, entropy: float | None = None) -> float:
    """The SFT weight ``mu`` at ``step`` (1-based):

    - ``constant``: ``mu``;
    - ``chord``: linear warm-up ``mu * step / warmup`` to the peak, then a cosine from ``mu``
      down to ``mu_min`` over ``decay_steps``, then ``mu_min``;
    - ``srft``: ``mu * exp(-entropy)`` with the policy's mean token entropy on its samples
      (detached): the demonstrations weigh most when the policy is already sure of itself and
      least while it is still spread out, as SRFT gates its SFT term.

    >>> mu_at(1, "chord", 0.8, 0.0, warmup_steps=4, decay_steps=10)
    0.2
    >>> mu_at(4, "chord", 0.8, 0.0, warmup_steps=4, decay_steps=10)
    0.8
    >>> round(mu_at(9, "chord", 0.8, 0.0, warmup_steps=4, decay_steps=10), 6)
    0.4
    >>> mu_at(99, "chord", 0.8, 0.1, warmup_steps=4, decay_steps=10)
    0.1
    >>> round(mu_at(1, "srft", 0.5, entropy=math.log(2)), 6)
    0.25
    """
    if schedule == "constant":
        return mu
    if schedule == "chord":
        if step < warmup_steps:
            return mu * step / warmup_steps
        progress = min(1.0, (step - max(warmup_steps, 1)) / decay_steps)  # 0 at the peak, 1 at the end
        return mu_min + (mu - mu_min) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "srft":
        if entropy is None:
            raise ValueError("sft_schedule='srft' needs the policy's entropy on its samples")
        return mu * math.exp(-entropy)
    raise ValueError(f"unknown sft_schedule {schedule!r}; choose constant, chord or srft")


def phi_weights(token_logprobs: torch.Tensor) -> torch.Tensor:
    """CHORD's per-token SFT weight ``phi = p (1 - p)`` with ``p = exp(log p)``, detached: a
    token the policy already predicts (p ~ 1) or finds absurd (p ~ 0) pulls little; the
    ones in between pull most. Same shape as ``token_logprobs``.

    >>> [round(w, 4) for w in phi_weights(torch.log(torch.tensor([0.5, 0.9, 1.0]))).tolist()]
    [0.25, 0.09, 0.0]
    """
    p = token_logprobs.detach().exp()
    return p * (1 - p)


def sft_prompts(rewards: torch.Tensor, k: int, threshold: float) -> torch.Tensor:
    """HPT's switch, (B,) bool: True where every one of the prompt's ``k`` samples scored
    below ``threshold`` (the policy fails it: imitate the reference), False where at least
    one reached it (explore with RL). ``rewards``: prompt-major (B * k,).

    >>> sft_prompts(torch.tensor([0.1, 0.2, 0.1, 0.9]), k=2, threshold=0.5).tolist()
    [True, False]
    """
    return (rewards.view(-1, k) < threshold).all(dim=1)  # (B,)


def sampled_rows(n: int, k: int, reference_in_group: bool) -> torch.Tensor:
    """(N,) bool: True on the rows the policy sampled; with LUFFY's reference as the last of
    each group of ``k`` rows, False on those.

    >>> sampled_rows(6, 3, reference_in_group=True).tolist()
    [True, True, False, True, True, False]
    """
    if not reference_in_group:
        return torch.ones(n, dtype=torch.bool)
    return (torch.arange(n) % k) != k - 1
