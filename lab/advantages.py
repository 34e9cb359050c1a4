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


def group_baseline(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Group baseline (GRPO): each sample's baseline is the mean reward of its prompt's ``k``
    samples, itself included. ``rewards``: prompt-major, (B * k,).

    >>> group_baseline(torch.tensor([1.0, 3.0, 10.0, 20.0]), k=2).tolist()
    [2.0, 2.0, 15.0, 15.0]
    """
    return rewards.view(-1, k).mean(dim=1, keepdim=True).expand(-1, k).reshape(-1)  # (B * k,)


def group_scale(rewards: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """Each sample's group standard deviation (population form, ``+ eps``): dividing the
    group advantages by it gives every prompt unit spread, as GRPO's ``scale_rewards``. (B * k,)

    >>> group_scale(torch.tensor([1.0, 3.0, 5.0, 5.0]), k=2, eps=0.0).tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    return (rewards.view(-1, k).std(dim=1, unbiased=False, keepdim=True) + eps).expand(-1, k).reshape(-1)


def advantages(rewards: torch.Tensor, kind: str, k: int, ema: float | None = None,
               critic: torch.Tensor | None = None, scale: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, baselines)``, both ``(N,)``, for baseline ``kind``:

    - ``ema``: the running mean of past rewards (``ema``; the batch mean on the first step);
    - ``loo``: :func:`loo_baseline`, the mean of the prompt's *other* samples;
    - ``group``: :func:`group_baseline`, the mean of all the prompt's samples (GRPO);
    - ``critic``: the critic's mean prediction over the prompt's *other* samples,
      :func:`loo_baseline` of ``critic``: it does not read ``y_i``, so the estimate stays
      unbiased;
    - ``discriminator_biased``: the critic's prediction for the sample itself, ``D(x, y_i)``.
      It reads the sampled response, so the gradient estimate is biased, and as the critic
      learns the reward the advantage shrinks to its error. Kept as a teaching arm.

    ``scale``: divide by the group's reward spread (:func:`group_scale`, GRPO's
    ``scale_rewards``); needs ``k >= 2``.
    """
    if kind in ("critic", "discriminator_biased") and critic is None:
        raise ValueError(f"baseline={kind!r} needs the critic's predictions")
    if kind == "ema":
        base = torch.full_like(rewards, float(rewards.mean()) if ema is None else ema)  # (N,)
    elif kind == "loo":
        base = loo_baseline(rewards, k)  # (N,)
    elif kind == "group":
        base = group_baseline(rewards, k)  # (N,)
    elif kind == "critic":
        base = loo_baseline(critic.detach().to(rewards), k)  # (N,) other samples' scores only
    elif kind == "discriminator_biased":
        base = critic.detach().to(rewards)  # (N,)
    else:
        raise ValueError(f"unknown baseline {kind!r}; choose ema, loo, group, critic or discriminator_biased")
    advantage = rewards - base  # (N,)
    if scale:
        advantage = advantage / group_scale(rewards, k)  # (N,)
    return advantage, base


def pairwise_accuracy(predicted: torch.Tensor, target: torch.Tensor, k: int = 1) -> float:
    """How often the critic orders two samples like the true reward: 1 per agreeing pair,
    1/2 per tie in the prediction, 0 per disagreeing pair; pairs whose true rewards tie are
    skipped. With ``k > 1`` only pairs within a prompt count (the ``k`` samples of one prompt
    are consecutive), so the critic is judged on the responses, not on which prompt is easier.
    NaN when no pair counts. A critic that predicts a constant scores 0.5, chance level.

    >>> pairwise_accuracy(torch.tensor([0.1, 0.5, 0.9]), torch.tensor([1.0, 2.0, 3.0]))
    1.0
    >>> pairwise_accuracy(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([1.0, 2.0, 3.0, 4.0]), k=2)
    0.5
    """
    diff_pred = predicted[:, None] - predicted[None, :]  # (N, N)
    diff_true = target[:, None] - target[None, :]  # (N, N)
    group = torch.arange(len(target)) // k  # (N,)
    counted = (diff_true.abs() > 1e-9) & (group[:, None] == group[None, :] if k > 1 else True)  # (N, N)
    if not counted.any():
        return float("nan")
    agree = torch.sign(diff_pred) * torch.sign(diff_true)  # (N, N) 1, 0 (tie) or -1
    return float(((agree + 1) / 2)[counted].mean())


def lambda_at(step: int, schedule: str, lambda_rl: float, warmup_steps: int,
              critic_accuracy: float | None = None) -> float:
    """The RL weight at ``step`` (1-based).

    - ``constant``: ``lambda_rl``;
    - ``linear``: a curriculum from SFT-heavy to more RL, ``lambda_rl * min(1, step / warmup)``;
    - ``adaptive``: ``lambda_rl`` scaled by how far the critic's recent pairwise accuracy
      (:func:`pairwise_accuracy`) exceeds chance, ``lambda_rl * clip(2 * (acc - 0.5), 0, 1)``
      (0 until it is known).

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
