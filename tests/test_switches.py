"""Each switch does what it says, tested on the property that defines it (a broken switch would
fail these, where a finite-loss check would pass): the entropy bonus raises entropy, the
curriculum and adaptive lambda follow their formulas in the trainer, the auxiliary head learns,
a larger discriminator is larger, and every arm changes what its description says."""

import math

import pytest
import torch

from lab import advantages, discriminator, generator, models, objective
from lab.config import HybridConfig
from lab.experiments import ablation, arms
from tiny import make

PROMPTS = ["### Prompt:\nName a colour.\n\n### Response:\n", "### Prompt:\nCount to three.\n\n### Response:\n"]


def policy_entropy(model, batch, cfg, pad_id) -> float:
    with torch.no_grad():
        return objective.generator_loss(model, batch, cfg, 1.0, pad_id)[1]["entropy"]


def test_the_entropy_bonus_raises_the_policys_entropy_on_a_fixed_batch():
    model, tok = models.load("tiny-gpt2", "cpu", "float32", verbose=False)
    model = models.add_lora(model, "generator", r=4, alpha=8, dropout=0.0)
    torch.manual_seed(0)
    samples = generator.sample(model, tok, PROMPTS, k=2, max_new_tokens=6)
    ids, mask = samples.prompt_tensors()
    batch = objective.GeneratorBatch(ids, mask, None, samples.responses(), torch.zeros(4), k=2)  # no RL signal
    cfg = HybridConfig(mode="rl", entropy_coef=1.0, baseline="ema")
    before = policy_entropy(model, batch, cfg, tok.pad_token_id)
    optimizer = torch.optim.Adam(generator.generator_parameters(model), lr=0.05)
    for _ in range(5):
        loss, _ = objective.generator_loss(model, batch, cfg, 1.0, tok.pad_token_id)  # = -entropy here
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert policy_entropy(model, batch, cfg, tok.pad_token_id) > before + 1e-5  # near its maximum ln(V) already


def test_the_curriculum_lambda_in_the_trainer_follows_its_formula(examples):
    history = make(examples, lambda_schedule="linear", lambda_warmup_steps=4, lambda_rl=0.8,
                   baseline="ema").run(3, progress=False)
    assert list(history["lambda"]) == pytest.approx([0.8 * s / 4 for s in (1, 2, 3)])


def test_adaptive_lambda_in_the_trainer_follows_the_critics_running_accuracy(examples):
    history = make(examples, lambda_schedule="adaptive", lambda_rl=1.0).run(4, progress=False)
    running, expected = None, []
    for accuracy in history["d_accuracy"]:  # the trainer's running mean: 0.8 * previous + 0.2 * this step's
        if accuracy == accuracy:
            running = accuracy if running is None else 0.8 * running + 0.2 * accuracy
        expected.append(advantages.lambda_at(1, "adaptive", 1.0, 1, running))
    assert list(history["lambda"]) == pytest.approx(expected)
    assert advantages.lambda_at(1, "adaptive", 1.0, 1, 0.6) < advantages.lambda_at(1, "adaptive", 1.0, 1, 0.9)


def test_the_auxiliary_head_learns_its_target_on_a_fixed_batch(tiny):
    model, tok = models.load("tiny-gpt2", "cpu", "float32", verbose=False)
    disc = discriminator.Discriminator(model, tok, aux_head=True)
    optimizer = torch.optim.AdamW(disc.parameters_to_train(), lr=1e-2)
    prompts, answers = PROMPTS * 2, ["Blue.", "One, two, three.", "Red!", "1 2 3"]
    aux = torch.tensor([2.0, 3.5, 1.0, 4.0])  # e.g. each answer's NLL under the base model
    first = discriminator.train_step(disc, optimizer, prompts, answers, [0.5] * 4, aux_targets=aux, aux_weight=1.0)
    for _ in range(15):
        last = discriminator.train_step(disc, optimizer, prompts, answers, [0.5] * 4, aux_targets=aux, aux_weight=1.0)
    assert last["aux_mse"] < 0.5 * first["aux_mse"]


def test_a_larger_discriminator_has_a_larger_hidden_size_than_the_generator(examples):
    trainer = make(examples, discriminator_model="smollm2-135m")
    hidden = lambda m: m.get_base_model().config.hidden_size  # noqa: E731
    assert hidden(trainer.disc.backbone) > hidden(trainer.model)
    assert trainer.disc.backbone is not trainer.model
    row = trainer.step()
    assert math.isfinite(row["d_loss"])


def test_every_arm_changes_the_config_it_names_and_differs_from_the_hybrid():
    settings = ablation.settings_for("quick", arms=["all"], steps=37, model="tiny-gpt2")  # no default is 37
    reference = ablation.arm_config(settings, "hybrid", 0).to_dict()
    for name, arm in arms.ARMS.items():
        if arm.changes is None or name == "hybrid":
            continue
        config = ablation.arm_config(settings, name, 0).to_dict()
        changed = {k for k in config if config[k] != reference[k]}
        assert changed or ablation.arm_steps(settings, name) != settings["steps"], f"{name} runs the hybrid itself"
        applied = settings["arm_definitions"][name]["changes"]
        assert set(arm.changes) == set(applied), name
        assert all(config[k] == v for k, v in applied.items()), f"{name}: a change it names is not in its config"
