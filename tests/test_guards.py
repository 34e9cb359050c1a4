"""Signals end a run after its step with a checkpoint; non-finite values skip updates."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from lab import checkpoint, objective
from lab.rewards import RewardOutput
from lab.trainer import HybridTrainer
from tiny import make

def state(trainer):
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    moments = {i: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
               for opt in (trainer.opt_gen, trainer.opt_disc) for i, s in enumerate(opt.state.values())}
    return weights, moments


def same(a, b):
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else same(a[k], b[k]) for k in a)


def test_a_nan_reward_skips_every_update_and_is_logged(examples):
    calls = []

    def reward(prompts, completions, **kwargs):
        calls.append(1)
        value = float("nan") if len(calls) == 2 else 0.5
        return RewardOutput(total=[value] * len(completions))

    trainer = make(examples, reward)
    trainer.step()
    before = state(trainer)
    row = trainer.step()
    assert row["nonfinite"] == "reward" and trainer.nonfinite_in_a_row == 1
    after = state(trainer)
    assert same(before[0], after[0]) and same(before[1], after[1])  # no weight, no moment moved
    assert trainer.step().get("nonfinite") is None and trainer.nonfinite_in_a_row == 0


def test_a_nan_loss_skips_the_generator_update(examples, monkeypatch):
    trainer = make(examples, mode="sft")
    trainer.step()
    before = state(trainer)
    plain = objective.generator_loss
    monkeypatch.setattr(objective, "generator_loss",
                        lambda *a, **k: (plain(*a, **k)[0] * float("inf"), {}))
    row = trainer.step()
    assert row["nonfinite"] == "generator" and row["skipped_updates"] == 1
    assert same(before[0], state(trainer)[0]) and same(before[1], state(trainer)[1])


def test_non_finite_steps_in_a_row_stop_the_run_with_a_checkpoint(examples, tmp_path):
    def reward(prompts, completions, **kwargs):
        return RewardOutput(total=[float("inf")] * len(completions))

    trainer = make(examples, reward, max_nonfinite_steps=2)
    with pytest.raises(FloatingPointError, match="2 steps in a row"):
        trainer.run(5, out_dir=tmp_path, progress=False)
    assert trainer.step_count == 2
    assert checkpoint.find(tmp_path).name == "step-000002"


def test_sigint_in_a_notebook_ends_the_run_after_the_step_and_keeps_its_rows(examples, tmp_path):
    trainer = make(examples, mode="sft")
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a background job

    def interrupt(trainer, row):  # the kernel's interrupt button sends SIGINT
        if row["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    history = trainer.run(10, callbacks=[interrupt], out_dir=tmp_path, progress=False)
    assert list(history["step"]) == [1, 2] and trainer.stop_reason == "SIGINT"
    assert checkpoint.find(tmp_path).name == "step-000002"
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_sigterm_finishes_the_step_saves_and_exits_0(tmp_path):
    sig = signal.SIGTERM
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", "train", "--out", str(out), "--steps", "10000", "--model", "tiny-gpt2",
         "--preset", "quick", "--reward-weights", '{"length": 1}', "--checkpoint-every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()  # the merged output, as it comes (the progress bar ends its lines with \r)
    deadline = time.time() + 120
    while "hybrid run" not in "".join(chunks) and time.time() < deadline:
        time.sleep(0.2)  # the progress bar is drawn inside the signal handlers' block: the run has begun
        if proc.poll() is not None:
            break
    time.sleep(2)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    output = "".join(chunks)
    assert proc.returncode == 0, output
    assert f"stopped by {sig.name}" in output and "--resume" in output
    ckpt = checkpoint.find(out)
    resumed = HybridTrainer.resume(out, verbose=False)
    assert resumed.step_count == int(ckpt.name.split("-")[1]) >= 1
