"""The discriminator's warm start (notebook 03's recipe before the loop): it learns, it is cached
per model, data and settings, and a run that loads it continues exactly as one that computed it."""

import math

import torch

from lab import warm_start
from tiny import make

WARM = dict(discriminator_warmup_steps=12, baseline="critic")


def test_the_warm_start_lowers_the_critic_loss_and_reports_held_out_ranking(examples, tmp_path, monkeypatch):
    monkeypatch.setattr(warm_start, "warm_start_dir", lambda: tmp_path)
    trainer = make(examples, **WARM)
    report = trainer.warm_start
    assert report["steps"] == 12 and report["cached"] is False
    assert report["loss_last"] < report["loss_first"]
    assert 0.0 <= report["ref_vs_junk"] <= 1.0 and report["held_out"] >= 1
    assert math.isnan(report["sample_ranking"]) or 0.0 <= report["sample_ranking"] <= 1.0


def test_a_cached_warm_start_gives_the_same_critic_and_the_same_run(examples, tmp_path, monkeypatch):
    monkeypatch.setattr(warm_start, "warm_start_dir", lambda: tmp_path)
    first = make(examples, **WARM)
    weights = {name: value.clone() for name, value in warm_start.weights(first.disc).items()}
    rows = [first.run(2, progress=False)]  # each run right after its own trainer: they share torch's stream
    second = make(examples, **WARM)
    assert first.warm_start["cached"] is False and second.warm_start["cached"] is True
    for name, value in warm_start.weights(second.disc).items():
        assert torch.equal(value, weights[name]), name
    rows.append(second.run(2, progress=False))
    for key in ("reward", "loss", "d_loss", "d_pred", "baseline", "sample"):
        assert list(rows[0][key]) == list(rows[1][key]), key


def test_other_settings_or_data_get_their_own_warm_start(examples, tmp_path, monkeypatch):
    monkeypatch.setattr(warm_start, "warm_start_dir", lambda: tmp_path)
    make(examples, **WARM)
    assert make(examples, **WARM, lr_discriminator=5e-3).warm_start["cached"] is False
    assert make(examples[4:], **WARM).warm_start["cached"] is False
    assert make(examples, **WARM).warm_start["cached"] is True


def test_no_warm_start_where_the_critic_is_not_read(examples, tmp_path, monkeypatch):
    monkeypatch.setattr(warm_start, "warm_start_dir", lambda: tmp_path)
    assert make(examples, discriminator_warmup_steps=12, baseline="ema").warm_start is None  # the D-free loop
    assert make(examples, discriminator_warmup_steps=12, mode="sft").warm_start is None
    assert not list(tmp_path.iterdir())
