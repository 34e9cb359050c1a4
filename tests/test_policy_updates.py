"""Experiments as switches (1 of 2): the property that defines each one.

PPO-style clipping, group baselines (GRPO), the unbiased critic baseline, adaptive lambda.
"""

import copy

import pytest
import torch

from lab import advantages, discriminator
from lab.config import HybridConfig
from lab.discriminator import Discriminator
from lab.losses import clipped_policy_loss, kl_to_base, reinforce_loss
from lab.models import add_lora
from lab.rewards import RewardOutput
from lab.trainer import HybridTrainer
from tiny import BASE, make

# --- PPO-style clipping ------------------------------------------------------------------
def test_clipped_loss_at_ratio_one_has_the_reinforce_gradient():
    torch.manual_seed(0)
    logprobs = torch.randn(4, 5, requires_grad=True)  # (N, T)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    adv = torch.tensor([0.5, -1.0, 2.0, 0.1])
    ppo, clip_frac, approx_kl = clipped_policy_loss(logprobs, logprobs.detach(), adv, mask, 0.2)
    (grad_ppo,) = torch.autograd.grad(ppo, logprobs)
    plain = reinforce_loss((logprobs * mask).sum(-1), adv)
    (grad_plain,) = torch.autograd.grad(plain, logprobs)
    torch.testing.assert_close(grad_ppo, grad_plain)
    assert clip_frac == 0 and approx_kl == pytest.approx(0.0, abs=1e-7)


def test_clipped_tokens_get_no_gradient():
    old = torch.zeros(2, 3)
    # ratios e^0.5 = 1.65 and e^-0.5 = 0.61 lie outside [0.8, 1.2]; e^0.05 lies inside
    logprobs = torch.tensor([[0.5, 0.05, -0.5], [0.5, 0.05, -0.5]], requires_grad=True)
    adv = torch.tensor([1.0, -1.0])  # row 0: rising ratio clipped; row 1: falling ratio clipped
    mask = torch.ones(2, 3)
    loss, clip_frac, approx_kl = clipped_policy_loss(logprobs, old, adv, mask, clip_range=0.2)
    (grad,) = torch.autograd.grad(loss, logprobs)
    clipped = torch.tensor([[True, False, False], [False, False, True]])
    assert (grad[clipped] == 0).all()
    assert (grad[~clipped] != 0).all()
    assert clip_frac == pytest.approx(2 / 6)
    assert approx_kl > 0


# --- the KL penalty ----------------------------------------------------------------------
def test_the_k3_kl_estimate_is_unbiased_and_never_negative():
    pi, base = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5])  # two distributions of 3 tokens
    exact = float((pi * (pi / base).log()).sum())  # KL(pi || base)
    torch.manual_seed(0)
    tokens = torch.multinomial(pi, 100_000, replacement=True)[None]  # (1, T) sampled from pi
    mask = torch.ones_like(tokens)  # (1, T)
    assert float(kl_to_base(pi.log()[tokens], base.log()[tokens], mask)) == pytest.approx(exact, rel=0.02)
    for token in range(3):  # every single-token term is >= 0, unlike the plain log-ratio's
        one = torch.tensor([[token]])
        assert float(kl_to_base(pi.log()[one], base.log()[one], torch.ones_like(one))) >= 0


def _generator_grads(trainer):
    """The gradients of the step just taken (kept until the next step zeroes them)."""
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if ".generator." in n and p.grad is not None}


def test_one_ppo_epoch_has_the_reinforce_gradient(examples):
    plain = make(examples, mode="rl", baseline="loo")
    plain.step()  # built and stepped before the other: the same seeded samples
    a = _generator_grads(plain)
    ppo = make(examples, mode="rl", baseline="loo", loss_type="ppo", ppo_epochs=1)
    row = ppo.step()
    b = _generator_grads(ppo)
    assert row["clip_frac"] == 0
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-7, rtol=1e-4)


def test_several_ppo_epochs_with_a_large_step_clip(examples):
    trainer = make(examples, mode="rl", baseline="loo", loss_type="ppo", ppo_epochs=4, ppo_minibatches=2,
                   clip_range=0.05, lr=0.3, max_grad_norm=0, max_new_tokens=8)
    rows = [trainer.step() for _ in range(2)]
    assert max(r["clip_frac"] for r in rows) > 0
    assert max(r["approx_kl"] for r in rows) > 0


# --- group and critic baselines ----------------------------------------------------------
def test_group_advantages_have_zero_mean_and_unit_std_per_prompt():
    rewards = torch.tensor([0.1, 0.5, 0.9, 0.3, 2.0, 4.0, 3.0, 1.0])  # B=2, k=4
    adv, base = advantages.advantages(rewards, "group", k=4)
    assert torch.allclose(adv.view(2, 4).mean(1), torch.zeros(2), atol=1e-6)
    scaled, _ = advantages.advantages(rewards, "group", k=4, scale=True)
    assert torch.allclose(scaled.view(2, 4).mean(1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(scaled.view(2, 4).std(1, unbiased=False), torch.ones(2), atol=1e-3)


def test_critic_baseline_does_not_read_the_sample(tiny):
    model, tok = tiny
    peft_model = add_lora(copy.deepcopy(model), "generator", r=4, alpha=8, dropout=0.0)
    disc = Discriminator(peft_model, tok, lora=dict(r=4, alpha=8, dropout=0.0), top_layers=1)
    torch.nn.init.normal_(disc.head.weight, std=0.5)
    prompts = ["### Prompt:\nName a colour.\n\n### Response:\n"] * 3 + ["### Prompt:\nSay hi.\n\n### Response:\n"] * 3
    texts = ["Blue.", "Red.", "Green.", "Hi!", "Hello there.", "Good day."]
    rewards = torch.tensor([0.2, 0.4, 0.6, 0.1, 0.3, 0.5])
    with torch.no_grad():
        before = disc(prompts, texts)
        changed = list(texts)
        changed[1] = "A completely different answer about something else."
        after = disc(prompts, changed)
    assert not torch.isclose(before[1], after[1])  # the critic sees the change ...
    _, base_before = advantages.advantages(rewards, "critic", k=3, critic=before)
    _, base_after = advantages.advantages(rewards, "critic", k=3, critic=after)
    assert float(base_before[1]) == pytest.approx(float(base_after[1]), abs=1e-5)  # ... its own baseline does not
    _, biased_before = advantages.advantages(rewards, "discriminator_biased", k=3, critic=before)
    _, biased_after = advantages.advantages(rewards, "discriminator_biased", k=3, critic=after)
    assert abs(float(biased_before[1] - biased_after[1])) > 1e-3  # the teaching arm reads it


def test_critic_baseline_runs_in_the_trainer(examples):
    history = make(examples, baseline="critic").run(2, progress=False)
    assert history["baseline"].notna().all()


# --- adaptive lambda ---------------------------------------------------------------------
def test_pairwise_accuracy_counts_ties_as_half_and_compares_within_prompts():
    reward = torch.tensor([0.0, 1.0, 5.0, 6.0])  # B=2, k=2
    assert advantages.pairwise_accuracy(torch.zeros(4), reward, k=2) == 0.5
    # right within each prompt, wrong across prompts: within-prompt pairs only are counted
    assert advantages.pairwise_accuracy(torch.tensor([5.0, 6.0, 0.0, 1.0]), reward, k=2) == 1.0


def test_a_perfect_critic_turns_adaptive_lambda_on_by_step_two(examples, monkeypatch):
    plain = discriminator.train_step

    def perfect(disc, optimizer, prompts, completions, targets, **kwargs):
        out = plain(disc, optimizer, prompts, completions, targets, **kwargs)
        out["scores"] = torch.as_tensor(targets, dtype=torch.float32).nan_to_num(0.0)  # knows the reward
        return out

    def spread(prompts, completions, **kwargs):  # distinct rewards, so every pair counts
        return RewardOutput(total=[0.1 * i for i in range(len(completions))])

    monkeypatch.setattr(discriminator, "train_step", perfect)
    config = HybridConfig(**{**BASE, "lambda_schedule": "adaptive", "samples_per_prompt": 3})
    trainer = HybridTrainer(config, examples=examples, reward=spread, verbose=False)
    rows = [trainer.step() for _ in range(2)]
    assert rows[1]["lambda"] > 0


def test_rl_mode_refuses_a_lambda_schedule():
    with pytest.raises(ValueError, match="mode='rl'"):
        HybridConfig(mode="rl", lambda_schedule="linear")
