"""Issue 23's switches beside the policy-loss family: GAD's Bradley-Terry discriminator (the
reference above each sample; its score the generator's reward), D as a naturalness term beside
the true reward, and on-policy self-distillation (SDFT) by the reverse KL to a teacher."""

import math

import pytest
import torch

from lab import discriminator, objective
from lab.config import HybridConfig
from lab.variants import distill
from tiny import make

GAD = dict(mode="rl", reward_source="discriminator", discriminator_loss="bradley_terry")


def test_the_bradley_terry_loss_is_the_hand_computed_mean_over_reference_sample_pairs():
    reference, samples = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 1.5, -1.0, 0.0])  # k = 2 per prompt
    by_hand = -(math.log(1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(0.5)))
                + math.log(1 / (1 + math.exp(-1.0))) + math.log(0.5)) / 4
    assert discriminator.bradley_terry_loss(reference, samples, k=2).item() == pytest.approx(by_hand)


def test_one_discriminator_step_raises_the_reference_above_the_samples(examples):
    trainer = make(examples, **GAD)
    batch = trainer.batch(1)
    rollout = trainer._sample(batch)
    rows = discriminator.critic_rows("bradley_terry", batch, rollout.prompts, rollout.completions,
                                     torch.zeros(len(rollout.prompts)), None, trainer.rng)
    assert rows.pairs == [(0, 2), (0, 3), (1, 4), (1, 5)] and rows.targets.isnan().all()  # ranked, not regressed

    def gap() -> float:  # mean D(x, ref) - D(x, y) over the prompt's samples
        return -float(rows.critic(discriminator.judge(trainer.disc, rows.prompts, rows.completions)).mean())

    before = gap()
    out = discriminator.train_step(trainer.disc, trainer.opt_disc, rows.prompts, rows.completions, rows.targets,
                                   pairs=rows.pairs)
    assert out["mse"] == 0 and out["contrastive"] == pytest.approx(math.log(2), abs=0.05)  # starts at a tie
    assert gap() > before


def test_gad_rewards_the_generator_with_ds_relative_score_and_tracks_how_often_it_fools_d(examples):
    trainer = make(examples, **GAD)
    rows = [trainer.step() for _ in range(3)]
    assert all(0 <= row["d_fooled"] <= 1 and row["d_mse"] == 0 for row in rows)
    for row in rows:  # d_pred per sample: D(x, y) - D(x, reference); fooled: the share above 0
        scores = trainer.samples.query(f"step == {row['step']}")["d_pred"]
        assert row["d_fooled"] == pytest.approx(float((scores > 0).mean()))
    # D learns to tell references from samples: on the last step's batch, the trained D scores the
    # references above the samples by more than D as it started (the same seed) does. (Each step's
    # loss is on a new batch, so its trend over 3 steps depends on the draws.)
    references = {example.prompt: example.completion for example in examples}
    batch = trainer.samples.query("step == 3")
    prompts, completions = batch["prompt"].tolist(), batch["completion"].tolist()

    def gap(disc) -> float:  # mean D(x, reference) - D(x, y)
        return float((discriminator.judge(disc, prompts, [references[p] for p in prompts])
                      - discriminator.judge(disc, prompts, completions)).mean())

    assert gap(trainer.disc) > gap(make(examples, **GAD).disc) + 0.05


def test_naturalness_adds_w_times_ds_odds_of_a_sample_passing_for_its_reference():
    cfg = HybridConfig(discriminator_loss="bradley_terry", baseline="loo", naturalness_weight=0.4)
    reward, critic = torch.tensor([0.2, 0.7, 0.5]), torch.tensor([-2.0, 0.0, 1.0])
    assert torch.allclose(objective.rl_target(cfg, reward, critic), reward + 0.4 * torch.sigmoid(critic))
    assert torch.equal(objective.rl_target(cfg.replace(naturalness_weight=0.0), reward, critic), reward)


def test_naturalness_trains_in_the_loop(examples):
    trainer = make(examples, mode="hybrid", baseline="loo", discriminator_loss="bradley_terry", naturalness_weight=0.5)
    row = trainer.step()
    assert row["d_fooled"] >= 0 and row["loss_sft"] > 0 and row["skipped_updates"] == 0


@pytest.mark.parametrize("changes, message", [
    (dict(discriminator_loss="bradley_terry"), "not its reward"),  # the default critic baseline of the reward
    (dict(discriminator_loss="bradley_terry", mode="selfplay", baseline="ema"), "mode 'rl' or 'hybrid'"),
    (dict(naturalness_weight=0.3, baseline="loo"), "set discriminator_loss='bradley_terry'"),
    (dict(mode="distill", loss_type="grpo"), "leave loss_type='reinforce'"),
])
def test_settings_that_do_not_fit_together_say_how_to_fix_them(changes, message):
    with pytest.raises(ValueError, match=message):
        HybridConfig(**changes)


# --- self-distillation ----------------------------------------------------------------------
def distill_loss(trainer, teacher: distill.Teacher) -> float:
    """The objective's reverse KL on one batch of the trainer's own samples, against ``teacher``."""
    batch = trainer.batch(1)
    samples = trainer._sample(batch).samples
    prompt_ids, prompt_mask = samples.prompt_tensors()
    responses = samples.responses()
    gen = objective.GeneratorBatch(prompt_ids, prompt_mask, None, responses, torch.zeros(len(responses)),
                                   k=samples.k, teacher_logprobs=teacher.logprobs(
                                       prompt_ids, prompt_mask, [e.completion for e in batch], responses))
    loss, logs = objective.generator_loss(trainer.model, gen, trainer.config, 1.0, trainer.tokenizer.pad_token_id)
    assert loss.item() == pytest.approx(logs["kl_teacher"])
    return logs["kl_teacher"]


def test_the_teachers_kl_is_zero_in_the_students_own_context_and_positive_with_the_reference(examples):
    trainer = make(examples, mode="distill", lr=5e-2)
    trainer.step()  # the adapter moves off zero, so the base and the policy differ
    same = distill.Teacher(trainer.model, trainer.tokenizer, "generator", conditioned=False, max_prompt_tokens=64)
    assert distill_loss(trainer, same) == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(trainer, trainer.teacher) > 1e-4  # SDFT: the same model, shown the reference
    base = distill.Teacher(trainer.model, trainer.tokenizer, None, conditioned=False, max_prompt_tokens=64)
    assert distill_loss(trainer, base) > 1e-6  # adapters off: another distribution


def test_sdft_trains_on_its_own_samples_without_a_discriminator(examples):
    trainer = make(examples, mode="distill")
    rows = [trainer.step() for _ in range(2)]
    assert not trainer.config.discriminator_used and "d_loss" not in rows[0]
    assert all(row["kl_teacher"] > 0 and row["skipped_updates"] == 0 for row in rows)
    assert "loss_sft" not in rows[0] and rows[0]["reward"] == rows[0]["reward"]  # the reward is still measured


def test_the_teacher_reads_the_students_prompt_tokens_after_the_demonstration(examples):
    trainer = make(examples, mode="distill")
    prompt = trainer.tokenizer("### Prompt:\nQ?\n\n### Response:\n")["input_ids"]
    own = distill.Teacher(trainer.model, trainer.tokenizer, "generator", conditioned=False, max_prompt_tokens=64)
    assert own.context_ids(prompt, "A.") == prompt  # distill_from: exactly the student's context
    shown = trainer.teacher.context_ids(prompt, "A.")
    assert shown[-len(prompt):] == prompt and len(shown) > len(prompt)  # the demonstration, then the prompt
    assert trainer.tokenizer.decode(shown[:-len(prompt)]) == distill.DEMONSTRATION.format(reference="A.")


def test_a_teacher_with_another_tokenizer_or_none_offline_gets_one_clear_error(examples, monkeypatch, no_network):
    with pytest.raises(Exception, match="cannot be loaded|not.*cached|offline"):
        make(examples, mode="distill", distill_from="someone/not-cached-7b")
    from lab import models

    model, tokenizer = models.load("tiny-gpt2", "cpu")
    tokenizer.add_tokens(["<an-extra-token>"])
    monkeypatch.setattr(distill, "load", lambda *args: (model, tokenizer))
    with pytest.raises(ValueError, match="must share the tokenizer"):
        make(examples, mode="distill", distill_from="other-family")


@pytest.mark.parametrize("changes", [
    dict(discriminator_loss="bradley_terry", baseline="loo", contrastive_weight=0.0),  # D would never learn
    dict(discriminator_loss="bradley_terry", reward_source="discriminator", naturalness_weight=0.5),  # ignored
])
def test_a_bradley_terry_setting_that_would_do_nothing_is_refused(changes):
    with pytest.raises(ValueError, match="bradley_terry"):
        HybridConfig(**changes)


def test_a_teacher_with_another_output_width_is_refused_at_load(examples, monkeypatch):
    from lab import models

    model, tokenizer = models.load("tiny-gpt2", "cpu")
    model.resize_token_embeddings(len(tokenizer) + 8)  # the same tokenizer, a padded output layer
    monkeypatch.setattr(distill, "load", lambda *args: (model, tokenizer))
    with pytest.raises(ValueError, match="same output vocabulary"):
        make(examples, mode="distill", distill_from="padded-teacher")
