"""Baselines, advantages and the lambda schedule: small pure functions the trainer composes.

REINFORCE follows ``(R - b) * grad log pi(y | x)``; a good baseline ``b`` keeps the estimate
unbiased (it does not depend on the sampled ``y``) and lowers its variance.
"""

from __future__ import annotations

import torch


def loo_baseline(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out baseline: each sample's baseline is the mean reward of the *other*
    ``k - 1`` samples of the same prompt, ``b_i = (sum_j R_j - R_i) / (k - 1)``.

    ``rewards`` is prompt-major, shape ``(B * k,)``.

    >>> loo_baseline(torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0]), k=3).tolist()
    [2.5, 2.0, 1.5, 25.0, 20.0, 15.0]
    """
    if k < 2:
        raise ValueError("the leave-one-out baseline needs k >= 2 samples per prompt")
    grouped = rewards.view(-1, k)  # (B, k)
    totals = grouped.sum(dim=1, keepdim=True)  # (B, 1)
    return ((totals - grouped) / (k - 1)).reshape(-1)  # (B * k,)


def ema_update(baseline: float | None, rewards: torch.Tensor, decay: float) -> float:
    """``b <- decay * b + (1 - decay) * mean(R)``; the first step starts at ``mean(R)``.

    >>> ema_update(None, torch.tensor([1.0, 3.0]), 0.9)
    2.0
    >>> round(ema_update(2.0, torch.tensor([4.0]), 0.9), 6)
    2.2
    """
    mean = float(rewards.mean())
    return mean if baseline is None else decay * baseline + (1 - decay) * mean


def advantages(rewards: torch.Tensor, kind: str, k: int, ema: float | None = None,
               critic: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, baselines)``, both ``(N,)``, for baseline ``kind``:

    - ``ema``: the running mean of past rewards (``ema``; the batch mean on the first step);
    - ``discriminator``: the critic's prediction for each sample (``critic``, detached);
    - ``loo``: :func:`loo_baseline` over the ``k`` samples of each prompt.
    """
    if kind == "ema":
        base = torch.full_like(rewards, float(rewards.mean()) if ema is None else ema)  # (N,)
    elif kind == "discriminator":
        if critic is None:
            raise ValueError("baseline='discriminator' needs the critic's predictions")
        base = critic.detach().to(rewards)  # (N,)
    elif kind == "loo":
        base = loo_baseline(rewards, k)  # (N,)
    else:
        raise ValueError(f"unknown baseline {kind!r}; choose ema, discriminator or loo")
    return rewards - base, base


def pairwise_accuracy(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of sample pairs the critic orders like the true reward (ties skipped).

    >>> pairwise_accuracy(torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1.0, 2.0, 3.0]))
    1.0
    """
    diff_pred = predicted[:, None] - predicted[None, :]  # (N, N)
    diff_true = target[:, None] - target[None, :]  # (N, N)
    mask = diff_true.abs() > 1e-9
    if not mask.any():
        return float("nan")
    return float(((diff_pred * diff_true) > 0)[mask].float().mean())


def lambda_at(step: int, schedule: str, lambda_rl: float, warmup_steps: int,
              critic_accuracy: float | None = None) -> float:
    """The RL weight at ``step`` (1-based).

    - ``constant``: ``lambda_rl``;
    - ``linear``: a curriculum from SFT-heavy to more RL, ``lambda_rl * min(1, step / warmup)``;
    - ``adaptive``: ``lambda_rl`` scaled by how far the critic's recent pairwise accuracy
      exceeds chance, ``lambda_rl * clip(2 * (acc - 0.5), 0, 1)`` (0 until it is known).

    >>> lambda_at(5, "linear", 1.0, 10)
    0.5
    >>> lambda_at(5, "adaptive", 1.0, 10, critic_accuracy=0.75)
    0.5
    """
    if schedule == "constant":
        return lambda_rl
    if schedule == "linear":
        return lambda_rl * min(1.0, step / warmup_steps)
    if schedule == "adaptive":
        if critic_accuracy is None or critic_accuracy != critic_accuracy:
            return 0.0
        return lambda_rl * min(1.0, max(0.0, 2.0 * (critic_accuracy - 0.5)))
    raise ValueError(f"unknown lambda schedule {schedule!r}; choose constant, linear or adaptive")
