"""``accelerate launch`` runs ``python -m lab train`` unchanged (lab.runtime.distributed): 2 CPU processes
(gloo, configs/accelerate/cpu_2proc.yaml) write one run folder whose losses equal one process's
on the same global batch and seed, and resume from it."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from lab.runtime import distributed
from lab.config import HybridConfig
from lab.trainer import HybridTrainer

ROOT = Path(__file__).resolve().parents[1]
# B = 4 prompts a step: 2 per process. baseline=critic trains the discriminator too (its
# gradients are averaged like the generator's); the length reward needs no extra model.
FIELDS = dict(model="tiny-gpt2", device="cpu", prompts_per_step=4, samples_per_prompt=2, max_new_tokens=6,
              reward_weights={"length": 1.0}, baseline="critic", lr=1e-2, seed=0)
TOL = 1e-5  # abs, on losses near 10: only the summation order differs between 1 and 2 processes


def _flags(fields: dict) -> list[str]:
    return [arg for k, v in fields.items()
            for arg in (f"--{k.replace('_', '-')}", json.dumps(v) if isinstance(v, dict) else str(v))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str) -> str:
    """``accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m lab train ARGS``
    from the repository root; returns its stdout (the run must end with rc 0)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
           "--main_process_port", str(_free_port()), "-m", "lab", "train", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", LAB_DTYPE=os.environ.get("LAB_DTYPE", "float32"))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def _one_process(steps: int, **changes) -> pd.DataFrame:
    """The same config in this one process (no launcher): the reference history."""
    trainer = HybridTrainer(HybridConfig(**{**FIELDS, **changes}), verbose=False)
    for _ in range(steps):
        trainer.step()
    return trainer.history


def _history(run: Path) -> pd.DataFrame:
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert pd.read_csv(run / "history.csv")["step"].tolist() == [row["step"] for row in rows]
    return pd.DataFrame(rows)


def test_shard_gives_each_process_a_contiguous_equal_share(monkeypatch):
    assert distributed.shard(list("abcd")) == list("abcd")  # one process: the whole batch
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for rank, share in ((0, ["a", "b"]), (1, ["c", "d"])):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        assert distributed.shard(list("abcd")) == share
    with pytest.raises(ValueError, match=r"prompts_per_step=3 does not divide by the 2 processes"):
        distributed.shard([1, 2, 3])
    with pytest.raises(ValueError, match=r"ppo_minibatches=3 exceeds the 2 prompts of each of the 2 processes"):
        distributed.check_divisible(4, minibatches=3)


def test_one_process_everything_is_a_no_op():
    grad = torch.ones(2)
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = grad
    distributed.all_reduce_mean([w])
    values = torch.arange(3.0)
    row = {"step": 1, "loss": float("nan"), "sample": "x"}
    assert w.grad is grad and distributed.gather(values) is values and distributed.mean_row(row) is row
    assert (distributed.all_finite(True), distributed.all_finite(False), distributed.any_true(False)) == (True, False, False)
    assert distributed.pooled(values, torch.tensor(7)) is values and distributed.mean_value(None) is None
    assert distributed.setup(torch.device("cpu")) == torch.device("cpu") and not distributed.launched()
    one = distributed.hooks()  # what the trainer and the objective call: here, each returns its input
    assert type(one) is distributed.OneProcess and (one.count, one.rank, one.is_main) == (1, 0, True)
    assert one.shard_batch(row) is row and one.gather(values) is values and one.gather_rows([row]) == [row]
    assert one.pooled_mean(values, torch.tensor(7)) is values and one.mean_row(row) is row
    assert one.all_finite(False) is False and one.any_true(True) is True and one.mean_value(0.5) == 0.5
    assert one.from_main(lambda: 3) == 3 and one.own_streams(None) is None
    one.average_gradients([w])
    assert w.grad is grad


def test_two_processes_hybrid_step_matches_one_process_on_the_sft_term(tmp_path):
    run = tmp_path / "hybrid"
    out = _launch("--out", str(run), "--steps", "1", *_flags(FIELDS))
    assert out.count("outputs written to") == 1  # only the main process prints
    assert out.count("data parallel: 2 processes, backend gloo") == 1  # and says once how it runs
    history = _history(run)
    assert history["step"].tolist() == [1]  # one history, one row per step, not one per process
    # Hybrid: the processes draw other samples than one process would (seed + rank), so only the
    # SFT term, computed on the reference answers before any update, is comparable.
    reference = _one_process(1)
    assert abs(history["loss_sft"][0] - reference["loss_sft"][0]) < TOL, (history["loss_sft"][0],
                                                                          reference["loss_sft"][0])
    assert "d_loss" in history and len(pd.read_csv(run / "samples.csv")) == 4 * 2  # every process's samples
    assert not [p for p in run.rglob("*") if p.name.startswith(".")]  # no leftover temporary files


def test_two_processes_sft_match_one_process_step_for_step_across_a_resume(tmp_path):
    """Mode sft: every term is comparable, and step 2 (after a resume with 2 processes) shows
    that the averaged gradient and its norm before clipping equal one process's on the whole batch."""
    run = tmp_path / "sft"
    _launch("--out", str(run), "--steps", "1", *_flags({**FIELDS, "mode": "sft"}))
    assert _history(run)["step"].tolist() == [1]
    assert _launch("--out", str(run), "--steps", "2", "--resume").count("resumed") == 1
    history = _history(run)
    assert history["step"].tolist() == [1, 2]
    reference = _one_process(2, mode="sft")
    for key in ("loss", "loss_sft", "grad_norm"):
        gap = (history[key] - reference[key]).abs().max()
        assert gap < TOL, (key, history[key].tolist(), reference[key].tolist())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    rng = torch.load(run / "checkpoints/step-000002/rng.pt", weights_only=True)
    assert len(rng["processes"]) == 2 and not torch.equal(*[p["torch"] for p in rng["processes"]])
    resumed = HybridTrainer.resume(run, verbose=False)  # loadable, in one process too
    assert resumed.step_count == 2 and resumed.history["step"].tolist() == [1, 2]
