"""The generator's losses, as the notebooks write them: plain tensor functions of log-probs.

- :func:`mean_nll`: SFT, the mean negative log-likelihood of the answer tokens (notebook 02);
- :func:`reinforce_loss`: REINFORCE, ``-(R - b) log pi(y | x)`` (notebook 04);
- :func:`clipped_policy_loss`: PPO's clipped surrogate (notebook 08);
- :func:`kl_to_base`: the k3 estimate of ``KL(pi || base)`` on the sampled tokens.

They take log-probs already computed (:func:`lab.generator.response_logprobs`,
:func:`lab.generator.continuation_logprobs`); :mod:`lab.objective` combines them.

Shapes: ``N`` rows (responses), ``T`` tokens a row.
"""

from __future__ import annotations

import torch


def mean_nll(token_logprobs: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The SFT loss from per-token log-probs: ``-sum_t w_t log p(y_t | ...) / #tokens`` over the
    tokens where ``mask`` is 1, pooled over the whole batch (a long answer weighs more).
    ``token_logprobs``, ``mask``: (N, T). ``weights`` (N, T), detached, default 1 (e.g. CHORD's
    :func:`lab.variants.mixing.phi_weights`).

    >>> mean_nll(torch.tensor([[-1.0, -3.0], [-2.0, 0.0]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    """
    mask = mask.to(token_logprobs.dtype)  # (N, T)
    weighted = token_logprobs if weights is None else token_logprobs * weights.detach()  # (N, T)
    return -(weighted * mask).sum() / mask.sum().clamp(min=1)


def reinforce_loss(logprob_sums: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """REINFORCE: ``-mean_i (R_i - b_i) * log pi(y_i | x_i)``.

    Its gradient is the policy-gradient estimate ``E[(R - b) grad log pi(y | x)]``: responses
    that beat the baseline become more likely. ``logprob_sums`` (N,) must be the log-prob
    of the *sampled response* given the prompt; the sketch used the prompt's own log-prob
    (defect 1), whose gradient does not depend on what was sampled. ``advantages`` (N,)
    are detached: the reward and the baseline are constants here.

    >>> reinforce_loss(torch.tensor([-1.0, -2.0]), torch.tensor([1.0, -1.0]))
    tensor(-0.5000)
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


def kl_to_base(logprobs: torch.Tensor, base_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(pi || base) on the sampled tokens, the non-negative k3 estimator ``exp(r) - r - 1``
    with ``r = log p_base - log pi`` (Schulman, 2020), averaged over response tokens: an
    unbiased estimate of the KL whose every term is >= 0 (``log_ratio`` alone is unbiased too,
    but each term can be negative).

    ``logprobs`` (the policy's, with gradient), ``base_logprobs`` (the base's, the same backbone
    with its adapters disabled, no gradient), ``mask``: (N, T).

    >>> kl_to_base(torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.0, -2.0]]), torch.tensor([[1, 1]]))
    tensor(0.)
    """
    on = mask.to(logprobs.dtype)  # (N, T)
    log_ratio = (base_logprobs - logprobs) * on  # (N, T)
    return ((log_ratio.exp() - log_ratio - 1) * on).sum() / on.sum().clamp(min=1)
