"""The generator's losses, as the notebooks write them: plain tensor functions of log-probs.

- :func:`mean_nll`: SFT, the mean negative log-likelihood of the answer tokens (notebook 02);
- :func:`reinforce_loss`: REINFORCE, ``-(R - b) log pi(y | x)`` (notebook 04);
- :func:`clipped_policy_loss`: PPO's clipped surrogate (notebook 08), and :func:`policy_loss`, TRL's
  family of clipped losses (grpo, dr_grpo, dapo, bnpo; GSPO's sequence ratio) that differ in how
  they weigh tokens, which :func:`token_weights` reads off the gradient;
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
    loss, stats = policy_loss(logprobs, old_logprobs, advantages, mask, "ppo", clip_range, clip_range)
    return loss, stats["clip_frac"], stats["approx_kl"]


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                loss_type: str = "grpo", epsilon_low: float = 0.2, epsilon_high: float = 0.2,
                level: str = "token", max_tokens: int | None = None,
                normalizer: float | torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped policy losses of TRL's ``GRPOConfig.loss_type``, ``(loss, stats)``.

    Every type takes the same per-token term ``l_it = -min(r_it A_i, clip(r_it, 1 - eps_low,
    1 + eps_high) A_i)`` and differs only in how it sums the tokens (``|y_i|``: response ``i``'s
    length, ``N`` responses):

    - ``ppo`` (the kit's): ``(1/N) sum_i sum_t l_it``, REINFORCE's weighting (a long answer weighs more);
    - ``grpo``: ``(1/N) sum_i (1/|y_i|) sum_t l_it``, each response's mean (a short answer's tokens weigh more);
    - ``dr_grpo`` (Dr. GRPO): ``sum_it l_it / (N * max_tokens)``, a constant, no length bias;
    - ``bnpo``: ``sum_it l_it / sum_i |y_i|``, every token of the batch alike;
    - ``dapo``: ``sum_it l_it / normalizer``, the token count of the whole step (all minibatches
      and processes; default: this batch's, as ``bnpo``), with DAPO's clip-higher ``eps_high > eps_low``.

    ``level="sequence"`` (GSPO) replaces the token ratio by the response's length-normalised
    likelihood ratio ``exp(mean_t log r_it)``, one ratio per response. ``logprobs``,
    ``old_logprobs``, ``mask``: (N, T); ``advantages`` (N,), detached. ``stats``: ``clip_frac``
    (share of tokens whose clipped branch won, so they get no gradient), ``approx_kl``, and the
    per-token ``ratio`` and ``clipped`` (N, T) tensors the token view draws.

    >>> lp, A, m = torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.tensor([[1, 1, 1], [1, 0, 0]])
    >>> float(policy_loss(lp, lp, A, m, "grpo")[0]), float(policy_loss(lp, lp, A, m, "bnpo")[0])
    (0.0, -0.5)
    """
    on = mask.to(logprobs.dtype)  # (N, T)
    log_ratio = (logprobs - old_logprobs.detach()) * on  # (N, T)
    if level == "sequence":  # GSPO: one ratio per response, broadcast over its tokens
        log_ratio = (log_ratio.sum(-1, keepdim=True) / on.sum(-1, keepdim=True).clamp(min=1)).expand_as(on)  # (N, T)
    elif level != "token":
        raise ValueError(f"importance_sampling_level must be 'token' or 'sequence', not {level!r}")
    ratio = log_ratio.exp()  # (N, T)
    adv = advantages.detach().to(logprobs)[:, None]  # (N, 1)
    unclipped, clipped = ratio * adv, ratio.clamp(1 - epsilon_low, 1 + epsilon_high) * adv  # (N, T)
    per_token = -torch.min(unclipped, clipped) * on  # (N, T)
    lengths, count = on.sum(-1).clamp(min=1), on.sum().clamp(min=1)  # (N,), the batch's response tokens
    if loss_type == "ppo":
        loss = per_token.sum(-1).mean()
    elif loss_type == "grpo":
        loss = (per_token.sum(-1) / lengths).mean()
    elif loss_type == "dr_grpo":
        if not max_tokens:
            raise ValueError("loss_type='dr_grpo' divides by N * max_tokens: pass max_tokens (max_new_tokens)")
        loss = per_token.sum() / (len(on) * max_tokens)
    elif loss_type in ("bnpo", "dapo"):
        loss = per_token.sum() / (count if loss_type == "bnpo" or normalizer is None else normalizer)
    else:
        raise ValueError(f"Unknown clipped loss_type {loss_type!r}; choose ppo, grpo, dr_grpo, bnpo or dapo")
    with torch.no_grad():
        is_clipped = (clipped < unclipped) & on.bool()  # (N, T) the clipped branch won: no gradient
        stats = {"clip_frac": float(is_clipped.sum() / count),
                 "approx_kl": float((((ratio - 1) - log_ratio) * on).sum() / count),
                 "ratio": ratio.detach(), "clipped": is_clipped}
    return loss, stats


def token_weights(loss: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """``-d loss / d log pi(y_it)`` (N, T): the weight the update gives each sampled token's
    log-prob (positive: made more likely). REINFORCE gives every token of response ``i``
    ``A_i / N``; the other loss types rescale that per response or per token, or zero it where
    the ratio was clipped. ``logprobs`` must be what ``loss`` was computed from, with gradient."""
    (grad,) = torch.autograd.grad(loss, logprobs, retain_graph=True)
    return -grad  # (N, T)


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
