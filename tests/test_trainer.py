"""HybridTrainer on tiny-gpt2: every mode, baselines, frozen weights, checkpoints and resume."""

import math
import re
from pathlib import Path

import pytest
import torch

from lab import advantages, checkpoint
from lab.config import HybridConfig
from lab.trainer import HybridTrainer
from tiny import BASE, make

LOSS_KEYS = ("loss", "loss_sft", "loss_rl", "kl", "entropy", "d_loss", "grad_norm")


@pytest.mark.parametrize("changes", [
    dict(mode="sft"),
    dict(mode="rl"),
    dict(mode="hybrid"),
    dict(mode="hybrid", baseline="loo", kl_coef=0.1, entropy_coef=0.01),
    dict(mode="hybrid", baseline="discriminator_biased", discriminator_loss="mse+contrastive"),
    dict(mode="hybrid", baseline="critic", scale_rewards=True, loss_type="ppo", ppo_epochs=2),
    dict(mode="rl", baseline="group", loss_type="ppo", ppo_minibatches=2),
    dict(mode="rl", reward_source="discriminator", baseline="ema"),
    dict(mode="hybrid", reward_source="mix", lambda_schedule="linear", lambda_warmup_steps=2),
    dict(mode="hybrid", lambda_schedule="adaptive", reward_weights={"rouge": 1.0, "length": 0.5}),
])
def test_each_mode_runs_two_steps_with_finite_losses(examples, changes):
    trainer = make(examples, **changes)
    history = trainer.run(2, progress=False)
    assert list(history["step"]) == [1, 2]
    for key in LOSS_KEYS:
        if key in history:
            assert history[key].map(math.isfinite).all(), key
    if changes["mode"] != "sft":
        assert {"reward", "adv_mean", "sample"} <= set(history.columns)
        assert ("d_pred" in history) is trainer.config.discriminator_used  # trained only when read
    if changes["mode"] != "rl":
        assert history["loss_sft"].notna().all()


def test_loo_baseline_matches_hand_computation():
    rewards = torch.tensor([0.2, 0.4, 0.9, 0.1, 0.5, 0.3])  # B=2 prompts, k=3
    expected = [(0.4 + 0.9) / 2, (0.2 + 0.9) / 2, (0.2 + 0.4) / 2,
                (0.5 + 0.3) / 2, (0.1 + 0.3) / 2, (0.1 + 0.5) / 2]
    adv, base = advantages.advantages(rewards, "loo", k=3)
    assert torch.allclose(base, torch.tensor(expected))
    assert torch.allclose(adv, rewards - torch.tensor(expected))


def test_advantages_use_the_configured_baseline(examples, monkeypatch):
    seen = {}
    original = advantages.advantages

    def spy(rewards, kind, k, ema=None, critic=None, scale=False):
        result = original(rewards, kind, k, ema=ema, critic=critic, scale=scale)
        seen.update(kind=kind, rewards=rewards, ema=ema, critic=critic, result=result)
        return result

    monkeypatch.setattr(advantages, "advantages", spy)
    for kind in ("ema", "discriminator_biased", "loo", "group", "critic"):
        trainer = make(examples, baseline=kind)
        trainer.run(2, progress=False)
        adv, base = seen["result"]
        assert seen["kind"] == kind
        if kind == "ema":  # second step: the EMA of the first step's mean reward
            assert torch.allclose(base, torch.full_like(base, seen["ema"]))
            assert seen["ema"] == pytest.approx(trainer.history["reward"].iloc[0])
        elif kind == "discriminator_biased":
            assert torch.equal(base, seen["critic"])
            assert trainer.history["baseline"].iloc[-1] == pytest.approx(trainer.history["d_pred"].iloc[-1])
        elif kind == "critic":  # k = 2: the other sample's critic score
            assert torch.allclose(base, seen["critic"].view(-1, 2).flip(1).reshape(-1))
        elif kind == "group":
            assert torch.allclose(base, seen["rewards"].view(-1, 2).mean(1).repeat_interleave(2))
        else:
            assert torch.allclose(base, advantages.loo_baseline(seen["rewards"], 2))


def snapshot(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_generator_lora_changes_and_base_weights_do_not(examples):
    trainer = make(examples, mode="hybrid", train_discriminator="always")
    before = snapshot(trainer.model)
    head_before = snapshot(trainer.disc.head)
    trainer.run(2, progress=False)
    after = snapshot(trainer.model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any(".generator." in n for n in changed), "generator LoRA did not train"
    assert any(".discriminator." in n for n in changed), "discriminator LoRA did not train"
    assert all("lora_" in n for n in changed), f"frozen weights changed: {sorted(changed)[:3]}"
    assert any(not torch.equal(head_before[n], p) for n, p in snapshot(trainer.disc.head).items())


def test_sft_mode_leaves_discriminator_untouched(examples):
    trainer = make(examples, mode="sft")
    before = snapshot(trainer.model)
    trainer.run(1, progress=False)
    after = snapshot(trainer.model)
    assert all(torch.equal(before[n], after[n]) for n in before if ".generator." not in n)


def test_resume_reproduces_history_exactly(examples, tmp_path):
    changes = dict(mode="hybrid", discriminator_loss="mse+contrastive", kl_coef=0.05,
                   entropy_coef=0.01, lora_dropout=0.1)
    straight = make(examples, **changes).run(4, progress=False)
    first = make(examples, **changes)
    first.run(2, out_dir=tmp_path, progress=False)
    resumed = HybridTrainer.resume(tmp_path, examples=examples, verbose=False)
    assert resumed.step_count == 2
    history = resumed.run(2, progress=False)
    drop = [c for c in history.columns if c.startswith("time_") or c == "step_time"]
    assert history.drop(columns=drop).equals(straight.drop(columns=drop))


def test_interrupted_checkpoint_keeps_previous_loadable(examples, tmp_path, monkeypatch):
    trainer = make(examples)
    trainer.run(1, out_dir=tmp_path, progress=False)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    trainer.step()
    monkeypatch.setattr(checkpoint, "write_history", crash)  # dies after adapters were written
    with pytest.raises(KeyboardInterrupt):
        trainer.save(tmp_path)
    monkeypatch.undo()
    assert [p.name for p in checkpoint.complete_checkpoints(tmp_path)] == ["step-000001"]
    resumed = HybridTrainer.resume(tmp_path, examples=examples, verbose=False)
    assert resumed.step_count == 1 and len(resumed.history) == 1


def test_the_checkpoint_reads_no_trainer_attribute():
    """lab.checkpoint stores what the trainer hands over (its adapters, its state_dict) and
    nothing it picks itself: a new piece of state is an edit of lab/trainer.py only."""
    used = set(re.findall(r"(?<![\w.])trainer\.(\w+)", Path(checkpoint.__file__).read_text()))
    assert used == {"adapters", "state_dict", "load_state_dict"}, used


def test_a_new_piece_of_state_round_trips_through_the_trainer_alone(examples, tmp_path):
    class Counting(HybridTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = 0

        def step(self):
            self.seen += 1
            return super().step()

        def state_dict(self):
            state = super().state_dict()
            state["state"]["seen"] = self.seen
            return state

        def load_state_dict(self, state):
            super().load_state_dict(state)
            self.seen = state["state"]["seen"]

    Counting(HybridConfig(**{**BASE, "mode": "sft"}), examples=examples, verbose=False).run(
        2, out_dir=tmp_path, progress=False)
    assert Counting.resume(tmp_path, examples=examples, verbose=False).seen == 2


def test_saved_adapter_loads_with_plain_peft(examples, tmp_path):
    from peft import PeftModel

    from lab import models

    trainer = make(examples)
    trainer.run(1, out_dir=tmp_path, progress=False)
    ckpt = checkpoint.find(tmp_path)
    assert (ckpt / "generator" / "adapter_model.safetensors").is_file()
    base, _ = models.load("tiny-gpt2", "cpu", verbose=False)
    loaded = PeftModel.from_pretrained(base, ckpt / "generator")
    ours = {n.replace(".generator.", "."): p for n, p in trainer.model.named_parameters() if ".generator." in n}
    theirs = {n.replace(".default.", "."): p for n, p in loaded.named_parameters() if "lora_" in n}
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)


def test_stop_request_ends_run_after_current_step(examples):
    trainer = make(examples, mode="sft")
    history = trainer.run(5, callbacks=[lambda t, row: t.request_stop()], progress=False)
    assert len(history) == 1


def test_batches_follow_a_seeded_order(examples):
    trainer = make(examples)
    seen = [e.prompt for step in range(1, 7) for e in trainer.batch(step)]
    assert sorted(seen) == sorted(e.prompt for e in examples)  # one epoch covers every row once
    assert seen != [e.prompt for e in examples]


def test_a_model_that_already_trained_is_refused(examples, tiny):
    first = make(examples)
    with pytest.raises(ValueError, match="fresh model"):
        HybridTrainer(first.config, examples=examples, model=first.model, tokenizer=first.tokenizer, verbose=False)
