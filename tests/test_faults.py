"""Kill anywhere, lose nothing (issue 16, item 1).

``test_killed_runs_resume_to_the_uninterrupted_history`` runs a few trials of
``benchmarks/faults.py`` (the full count runs as ``python benchmarks/faults.py --trials 20``):
``python -m lab train`` on tiny-gpt2 is SIGKILLed at random moments and inside checkpoint
writes, resumed with ``--resume`` until done, and its history must equal an uninterrupted run's.
The other tests pin the two bugs such trials found, in-process and fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from lab import __main__ as cli
from lab import checkpoint
from lab.config import preset

ROOT = Path(__file__).resolve().parent.parent


def _faults():
    spec = importlib.util.spec_from_file_location("lab_bench_faults", ROOT / "benchmarks" / "faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_killed_runs_resume_to_the_uninterrupted_history(tmp_path):
    faults = _faults()
    summary = faults.run(trials=3, steps=4, seed=1, max_kills=2, folder=tmp_path / "faults")
    print(json.dumps(summary))
    assert summary["failures"] == [] and summary["survived"] == summary["trials"] == 3
    assert summary["kills"] >= 3 and summary["kills_checkpoint_write"] >= 1


def test_the_check_sees_a_lost_a_duplicated_or_a_changed_step():
    faults = _faults()
    reference = [{"step": 1, "loss": 1.0, "time_gen": 0.1}, {"step": 2, "loss": float("nan"), "step_time": 2.0}]
    assert faults.compare([dict(r, time_gen=9.0) for r in reference], reference) == []  # timing aside
    assert "missing [2]" in faults.compare(reference[:1], reference)[0]
    assert "duplicated [1]" in faults.compare([reference[0], reference[0]], reference)[0]
    assert "['loss']" in faults.compare([reference[0], dict(reference[1], loss=2.0)], reference)[0]


@pytest.fixture(scope="module")
def trainer():
    from lab.trainer import HybridTrainer

    return HybridTrainer(preset("quick", model="tiny-gpt2", device="cpu", mode="sft", max_new_tokens=4,
                                reward_weights={"perplexity": 1.0}), verbose=False)


def test_a_start_killed_before_its_first_checkpoint_can_start_again(tmp_path, capsys):
    """Found by the fault run: a kill inside the first checkpoint write left only
    ``checkpoints/.tmp-*``; ``train`` then said "already holds a run" and ``--resume`` said
    "no checkpoint": a dead end. Now a folder without a complete checkpoint holds no run, and
    the killed writer's leftovers are cleaned up."""
    out = tmp_path / "run"
    stale = out / "checkpoints" / ".tmp-step-000001-999999999"  # a pid that cannot be alive
    (stale / "generator").mkdir(parents=True)
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "1"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(out), "--steps", "1", "--preset", "quick", "--model", "tiny-gpt2",
                     "--mode", "sft", "--max-new-tokens", "4", "--reward-weights", '{"perplexity": 1}']) == 0
    assert not stale.exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000001"]


def test_a_kill_while_replacing_or_rotating_a_checkpoint_leaves_no_half_deleted_one(trainer, tmp_path, monkeypatch):
    """Found by reading the code the fault run exercises: a checkpoint was deleted in place
    (``shutil.rmtree``), so a kill mid-delete left a ``step-N`` folder missing files that
    ``find()`` took for complete. Now it is renamed aside first (atomic), then deleted."""
    out = tmp_path / "run"
    for _ in range(2):
        trainer.step()
        trainer.save(out)
    real = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # deletes part of a checkpoint, then "dies"
        path = Path(path)
        if (path / "state.json").is_file():
            (path / "state.json").unlink()
            raise KeyboardInterrupt("killed")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(out)  # the same step again: the old folder is replaced
    monkeypatch.undo()
    for ckpt in checkpoint.complete_checkpoints(out):
        assert (ckpt / "state.json").is_file() and (ckpt / "generator" / "adapter_model.safetensors").is_file()
    trainer.save(out)  # the next save cleans up; the run goes on
    assert all(not p.name.startswith(".") for p in (out / "checkpoints").iterdir())
    assert checkpoint.find(out).name == f"step-{trainer.step_count:06d}"


def test_a_live_writers_temporary_folder_is_not_touched(trainer, tmp_path):
    out = tmp_path / "run"
    live = out / "checkpoints" / f".tmp-step-000009-{os.getppid()}"  # a process that is alive
    live.mkdir(parents=True)
    trainer.save(out)
    assert live.is_dir()


def test_the_cuda_rng_state_is_saved_and_restored(trainer, tmp_path, monkeypatch):
    """Where there is a GPU, the checkpoint carries every CUDA generator's state and resume sets
    it back (sampling on a GPU draws from it). Checked here with a stand-in ``torch.cuda``; on an
    H100 the same round trip gave identical resumed samples (see the report of issue 16)."""
    import torch

    from lab.trainer import HybridTrainer

    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda value: restored.append(value))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: None)
    out = tmp_path / "run"
    trainer.save(out)
    saved = torch.load(checkpoint.find(out) / "rng.pt", weights_only=True)
    assert [s.tolist() for s in saved["cuda"]] == [s.tolist() for s in states]
    resumed = checkpoint.load(HybridTrainer, out, verbose=False)
    assert resumed.step_count == trainer.step_count
    assert len(restored) == 1 and [s.tolist() for s in restored[0]] == [s.tolist() for s in states]
