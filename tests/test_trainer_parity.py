"""The trainer runs the building blocks the notebooks teach, and logs what it computes.

Parity: its logged SFT loss is ``lab.generator.sft_loss`` on the same batch, and one of its
discriminator updates is one ``lab.discriminator.train_step``. Identities: KL is 0 before
the first update, the ``mix`` reward source and the total loss follow their formulas, and
clipping caps the gradient norm.
"""

import random

import pytest
import torch

from lab import advantages, discriminator, generator, losses
from tiny import make


def _perturb_generator(trainer):
    """LoRA B starts at zero; a non-trivial adapter makes the comparison meaningful."""
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name and ".generator." in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", ["sft", "hybrid"])
def test_logged_sft_loss_equals_sft_loss_on_the_same_batch(examples, mode):
    trainer = make(examples, mode=mode, kl_coef=0.1)
    _perturb_generator(trainer)
    batch = trainer.batch(1)
    with torch.no_grad():
        expected = generator.sft_loss(trainer.model, trainer.tokenizer, [e.prompt for e in batch],
                                      [e.completion for e in batch], trainer.config.max_prompt_tokens)
    row = trainer.step()
    assert row["loss_sft"] == pytest.approx(expected.item(), abs=1e-5)


def test_sft_loss_equals_the_plain_per_row_computation(examples):
    trainer = make(examples, mode="sft")
    _perturb_generator(trainer)
    rows = examples[:3]
    prompts, answers = [e.prompt for e in rows], [e.completion for e in rows]
    batch = generator.sft_batch(trainer.tokenizer, prompts, answers)
    trained = batch["labels"] != generator.IGNORE  # (N, L)
    with torch.no_grad():
        plain = generator.response_logprobs(trainer.model, batch["input_ids"], batch["attention_mask"], trained)
        fast = generator.sft_loss(trainer.model, trainer.tokenizer, prompts, answers)
    torch.testing.assert_close(fast, losses.mean_nll(plain.tokens, trained[:, 1:]), atol=1e-5, rtol=1e-5)


def _disc_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if ".discriminator." in n} | {
        f"head.{n}": p.detach().clone() for n, p in trainer.disc.head.named_parameters()}


@pytest.mark.parametrize("loss", ["mse", "mse+contrastive"])
def test_one_trainer_discriminator_update_is_one_train_step(examples, loss):
    changes = dict(mode="hybrid", discriminator_loss=loss, train_discriminator="always")
    trainer = make(examples, **changes)
    trainer.step()  # samples, rewards, one discriminator update (and a generator update)
    samples = trainer.samples
    batch = trainer.batch(1)

    plain = make(examples, **changes)  # same seed: same initial discriminator
    optimizer = torch.optim.AdamW(plain.disc.parameters_to_train(), lr=plain.config.lr_discriminator)
    prompts, texts = list(samples["prompt"]), list(samples["completion"])
    targets = torch.tensor(samples["reward"].tolist(), dtype=torch.float32)
    junk = None
    if loss == "mse+contrastive":  # the references first, each ranked above a junk answer
        references = [e.completion for e in batch]
        junk = discriminator.junk_for(references, random.Random(plain.config.seed))
        prompts, texts = [e.prompt for e in batch] + prompts, references + texts
        targets = torch.cat([torch.full((len(batch),), float("nan")), targets])
    plain.model.train()
    plain.disc.train()
    out = discriminator.train_step(plain.disc, optimizer, prompts, texts, targets, junk=junk,
                                   contrastive_weight=plain.config.contrastive_weight)
    assert out["loss"] == pytest.approx(trainer.history["d_loss"].iloc[0], abs=1e-6)
    ours, theirs = _disc_state(trainer), _disc_state(plain)
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-5)


def test_kl_is_zero_before_the_first_update(examples):
    row = make(examples, mode="hybrid", kl_coef=0.1).step()  # LoRA B = 0: the policy is the base
    assert row["kl"] == pytest.approx(0.0, abs=1e-7)


def test_mix_reward_source_is_the_stated_formula(examples, monkeypatch):
    seen = {}
    original = advantages.advantages

    def spy(target, kind, k, **kwargs):
        seen["target"] = target.clone()
        return original(target, kind, k, **kwargs)

    monkeypatch.setattr(advantages, "advantages", spy)
    trainer = make(examples, mode="hybrid", reward_source="mix", reward_mix=0.3)
    trainer.step()
    reward = torch.tensor(trainer.samples["reward"].tolist())  # (N,)
    critic = torch.tensor(trainer.samples["d_pred"].tolist())  # (N,) before the critic's update
    torch.testing.assert_close(seen["target"], 0.7 * reward + 0.3 * critic, atol=1e-6, rtol=1e-6)


def test_total_loss_is_sft_plus_lambda_times_the_rl_terms(examples):
    cfg = dict(mode="hybrid", lambda_rl=0.7, kl_coef=0.2, entropy_coef=0.05)
    trainer = make(examples, **cfg)
    _perturb_generator(trainer)  # KL and entropy nonzero from step 1
    for row in (trainer.step(), trainer.step()):
        rl = row["loss_rl"] + cfg["kl_coef"] * row["kl"] - cfg["entropy_coef"] * row["entropy"]
        assert row["lambda"] == cfg["lambda_rl"]
        assert row["kl"] > 0
        assert row["loss"] == pytest.approx(row["loss_sft"] + row["lambda"] * rl, abs=1e-5)


def test_gradient_clipping_caps_the_norm(examples):
    trainer = make(examples, mode="hybrid", max_grad_norm=1e-3)
    row = trainer.step()
    grads = [p.grad for p in trainer.gen_params if p.grad is not None]
    clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert row["grad_norm"] > 1e-3  # the norm before clipping, as logged
    assert float(clipped) <= 1e-3 * (1 + 1e-4)
