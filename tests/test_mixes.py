"""Experiments as switches (2 of 2): the property that defines each one.

Self-play, online streams, beam sampling, CHORD / SRFT / LUFFY / HPT mixes, and the
discriminator's side task, own rank and own model.
"""

import json
import math

import pytest
import torch

from lab import advantages, discriminator, generator
from lab.variants import mixing, selfplay
from lab.data import load_examples
from lab.rewards import RewardOutput
from lab.core.tensors import encode, right_pad
from lab.trainer import HybridTrainer
import tiny

def make(examples, reward=None, **changes):
    """tests/tiny.py's trainer with a length reward (no embedder to load)."""
    return tiny.make(examples, reward, **{"reward_weights": {"length": 1.0}, **changes})


def spread(prompts, completions, **kwargs):
    """A reward with a distinct value per row, so baselines and switches have something to see."""
    return RewardOutput(total=[0.1 * (i % 7) for i in range(len(completions))])


# --- self-play ---------------------------------------------------------------------------
def test_the_referee_preference_is_antisymmetric():
    a, b = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.1, 0.5, 2.0])
    torch.testing.assert_close(discriminator.preference(a, b), 1 - discriminator.preference(b, a))
    assert discriminator.preference(a, b)[2] == 0.5


def _snapshot(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if f".{selfplay.SNAPSHOT}." in n}


def test_selfplay_snapshot_stays_frozen_until_it_is_refreshed(examples):
    trainer = make(examples, spread, mode="selfplay", selfplay_refresh=3)
    frozen = _snapshot(trainer)
    assert frozen and all(not p.requires_grad for n, p in trainer.model.named_parameters() if ".snapshot." in n)
    rows = [trainer.step() for _ in range(2)]
    assert all(0 <= r["selfplay_preference"] <= 1 for r in rows)
    assert all(torch.equal(frozen[n], p) for n, p in _snapshot(trainer).items())  # steps 1-2: untouched
    trainer.step()  # step 3 refreshes it to the generator's weights
    generator_now = {n.replace(".generator.", ".snapshot."): p for n, p in trainer.model.named_parameters()
                     if ".generator." in n and "lora_" in n}
    assert all(torch.equal(generator_now[n], p) for n, p in _snapshot(trainer).items())
    assert any(not torch.equal(frozen[n], p) for n, p in _snapshot(trainer).items())


# --- online learning ---------------------------------------------------------------------
def test_a_row_appended_to_the_stream_is_trained_on(examples, tmp_path):
    stream = tmp_path / "stream.jsonl"
    stream.write_text("")
    trainer = make(examples, stream=str(stream), replay_ratio=0.5)
    first = trainer.step()
    assert first["streamed"] == 0  # nothing yet: the anchors fill the batch
    with stream.open("a") as f:
        f.write(json.dumps({"instruction": "Name the largest planet.", "output": "Jupiter."}) + "\n")
        f.write('{"instruction": "half a line')  # not complete yet: waits for its newline
    row = trainer.step()
    assert row["streamed"] == 1
    assert any("Name the largest planet." in p for p in trainer.samples["prompt"])
    assert trainer.stream.state_dict()["line"] == 1


def test_feed_queues_examples_for_the_next_steps(examples):
    trainer = make(examples, replay_ratio=0.0)
    fresh = load_examples("bundled", "heldout", limit=3)
    trainer.feed(fresh)
    trainer.step()
    assert set(trainer.samples["prompt"]) == {e.prompt for e in fresh[:2]}
    assert len(trainer.queue) == 1


# --- beam sampling -----------------------------------------------------------------------
def test_beam_sampler_gives_k_distinct_beams_per_prompt(tiny, examples):
    model, tok = tiny
    prompts = [e.prompt for e in examples[:2]]
    got = generator.sample(model, tok, prompts, k=3, max_new_tokens=5, sampler="beam", num_beams=4)
    rows = got.input_ids[:, got.prompt_len:].tolist()
    for b in range(2):
        beams = [tuple(r[:n]) for r, n in zip(rows[b * 3:(b + 1) * 3], got.lengths[b * 3:(b + 1) * 3].tolist())]
        assert len(set(beams)) == 3
    assert make(examples, sampler="beam", num_beams=3).run(1, progress=False)["reward"].notna().all()


# --- CHORD, SRFT, LUFFY, HPT -------------------------------------------------------------
def test_chord_mu_follows_warmup_then_cosine_decay(examples):
    cfg = dict(sft_schedule="chord", mu=0.8, mu_min=0.2, mu_warmup_steps=2, mu_decay_steps=4)
    rows = make(examples, **cfg).run(4, progress=False)
    expected = [0.4, 0.8, 0.2 + 0.6 * 0.5 * (1 + math.cos(math.pi / 4)), 0.2 + 0.6 * 0.5 * (1 + math.cos(math.pi / 2))]
    assert rows["mu"].tolist() == pytest.approx(expected)
    assert [mixing.mu_at(s, "chord", 0.8, 0.2, 2, 4) for s in (1, 2, 3, 4)] == pytest.approx(expected)
    for _, row in rows.iterrows():  # loss = mu * SFT + (1 - mu) * RL
        assert row["loss"] == pytest.approx(row["mu"] * row["loss_sft"] + (1 - row["mu"]) * row["loss_rl"], abs=1e-5)


def test_srft_mu_is_gated_by_the_policy_entropy(examples):
    row = make(examples, sft_schedule="srft", mu=0.5).step()
    assert row["mu"] == pytest.approx(0.5 * math.exp(-row["entropy"]), rel=1e-6)


def test_phi_weights_the_sft_tokens_by_p_times_one_minus_p(examples):
    trainer = make(examples, mode="sft", sft_token_weight="phi")
    batch = trainer.batch(1)
    prompts, answers = [e.prompt for e in batch], [e.completion for e in batch]
    ids, mask = encode(trainer.tokenizer, prompts, 256)
    conts, on = right_pad(generator.answer_tokens(trainer.tokenizer, answers), trainer.tokenizer.pad_token_id)
    with torch.no_grad():
        logp = generator.continuation_logprobs(trainer.model, ids, mask, conts, on, torch.arange(2)).tokens
    p = logp.exp()
    by_hand = -(p * (1 - p) * logp * on).sum() / on.sum()  # CHORD-phi, token-mean
    plain = -(logp * on).sum() / on.sum()
    row = trainer.step()
    assert row["loss_sft_phi"] == pytest.approx(float(by_hand), rel=1e-5)  # what it trains on
    assert row["loss_sft"] == pytest.approx(float(plain), rel=1e-5)  # logged unweighted: comparable across arms


def test_reference_in_group_puts_its_reward_in_the_group_baseline(examples, monkeypatch):
    seen = {}
    original = advantages.advantages

    def spy(target, kind, k, **kwargs):
        seen.update(target=target.clone(), k=k)
        return original(target, kind, k, **kwargs)

    monkeypatch.setattr(advantages, "advantages", spy)
    trainer = make(examples, spread, baseline="group", reference_in_group=True)
    row = trainer.step()
    assert seen["k"] == 3 and len(seen["target"]) == 6  # 2 samples + the reference, per prompt
    sampled = seen["target"].view(2, 3)[:, :2]  # spread is the reward itself here
    assert row["reward"] == pytest.approx(float(sampled.mean()))  # the log's reward: sampled rows only
    assert row["reward_reference"] == pytest.approx(float(seen["target"].view(2, 3)[:, 2].mean()))
    refs = [e.completion for e in trainer.batch(1)]
    samples = trainer.samples
    members = samples["completion"].iloc[[2, 5]]  # the reference (cut to the token budget) is last
    assert all(ref.startswith(text) and text for ref, text in zip(refs, members))
    group_mean = seen["target"].view(2, 3).mean(1)  # includes the reference's reward
    assert row["baseline"] == pytest.approx(float(group_mean.mean()))


def test_hpt_picks_sft_for_a_prompt_whose_samples_all_fail(examples):
    assert mixing.sft_prompts(torch.tensor([0.1, 0.2, 0.6, 0.1]), k=2, threshold=0.5).tolist() == [True, False]

    def split(prompts, completions, **kwargs):  # prompt 0's samples fail, prompt 1's succeed
        return RewardOutput(total=[0.0, 0.1, 0.9, 0.2])

    trainer = make(examples, split, per_prompt_switch=True, switch_threshold=0.5)
    batch = trainer.batch(1)
    with torch.no_grad():
        expected = generator.sft_loss(trainer.model, trainer.tokenizer, [batch[0].prompt], [batch[0].completion])
    row = trainer.step()
    assert row["sft_prompt_share"] == 0.5
    assert row["loss_sft"] == pytest.approx(float(expected), abs=1e-5)  # SFT on prompt 0 only


# --- discriminator side task, rank and size ----------------------------------------------
def test_auxiliary_perplexity_head_trains(examples):
    trainer = make(examples, discriminator_aux_weight=0.5)
    before = trainer.disc.aux.weight.detach().clone()
    rows = trainer.run(2, progress=False)
    assert rows["d_aux_mse"].map(math.isfinite).all()
    assert not torch.equal(before, trainer.disc.aux.weight)


def test_discriminator_lora_rank_and_a_separate_model(examples):
    trainer = make(examples, discriminator_lora_r=2, discriminator_model="tiny-gpt2", train_discriminator="always")
    assert trainer.disc.backbone is not trainer.model
    assert "discriminator" not in trainer.model.peft_config
    assert trainer.disc.backbone.peft_config["discriminator"].r == 2
    before = {n: p.detach().clone() for n, p in trainer.disc.backbone.named_parameters() if "lora_" in n}
    trainer.run(2, progress=False)
    after = dict(trainer.disc.backbone.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_a_stream_run_trains_on_appended_rows_until_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from lab import checkpoint

    out, stream = tmp_path / "run", tmp_path / "stream.jsonl"
    stream.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "train", "--out", str(out), "--model", "tiny-gpt2", "--preset", "quick",
         "--reward-weights", '{"length": 1}', "--stream", str(stream), "--checkpoint-every", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        def wait_for(condition, what):
            deadline = time.time() + 180
            while not condition():
                assert proc.poll() is None, proc.stdout.read()
                assert time.time() < deadline, f"timed out waiting for {what}"
                time.sleep(0.5)

        wait_for(lambda: checkpoint.complete_checkpoints(out), "the first checkpoint")
        with stream.open("a") as f:
            f.write(json.dumps({"instruction": "Name the red planet.", "output": "Mars."}) + "\n")
        samples = out / "samples.csv"
        wait_for(lambda: samples.is_file() and "Name the red planet." in samples.read_text(), "the streamed row")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "stopped by SIGTERM" in output
    resumed = HybridTrainer.resume(out, verbose=False)
    assert resumed.step_count >= 2


def test_a_frozen_discriminator_stops_moving_but_still_judges(examples):
    trainer = make(examples, spread, reward_source="mix", freeze_discriminator_after=1)
    trainer.step()
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if ".discriminator." in n}
    head = trainer.disc.head.weight.detach().clone()
    rows = [trainer.step() for _ in range(2)]
    assert all(r["d_frozen"] == 1 and math.isfinite(r["d_pred"]) for r in rows)
    assert all(torch.equal(frozen[n], p) for n, p in trainer.model.named_parameters() if n in frozen)
    assert torch.equal(head, trainer.disc.head.weight)


@pytest.mark.parametrize("changes", [
    dict(mode="selfplay", selfplay_refresh=3, discriminator_aux_weight=0.5),
    dict(sft_schedule="chord", mu_warmup_steps=1, reference_in_group=True, baseline="group"),
])
def test_resume_is_exact_with_the_new_switches(examples, tmp_path, changes):
    stream = tmp_path / "stream.jsonl"
    stream.write_text("".join(json.dumps({"instruction": f"Say {w}.", "output": f"{w}."}) + "\n"
                              for w in ("one", "two", "three", "four", "five")))
    changes = dict(changes, stream=str(stream), replay_ratio=0.5)
    straight = make(examples, spread, **changes).run(4, progress=False)
    first = make(examples, spread, **changes)
    first.run(2, out_dir=tmp_path / "run", progress=False)
    resumed = HybridTrainer.resume(tmp_path / "run", examples=examples, reward=spread, verbose=False)
    history = resumed.run(2, progress=False)
    drop = [c for c in history.columns if c.startswith("time_") or c == "step_time"]
    assert history.drop(columns=drop).equals(straight.drop(columns=drop))
