"""history_window: the trainer keeps the last N steps' rows, the run folder every row, and resume stays exact."""

import json

import pandas as pd

from lab import checkpoint
from lab.runtime import row_log
from lab.trainer import HybridTrainer
from tiny import make

DROP = ("time_", "step_time")


def _without_times(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.startswith(DROP)]).reset_index(drop=True)


def test_a_window_keeps_the_last_steps_in_memory_and_every_row_in_the_run_folder(examples, tmp_path):
    trainer = make(examples, mode="hybrid", history_window=3, checkpoint_every=2)
    trainer.run(7, out_dir=tmp_path, progress=False)
    assert list(trainer.history["step"]) == [5, 6, 7] and set(trainer.samples["step"]) == {5, 6, 7}
    full = row_log.read_history(tmp_path)
    assert list(full["step"]) == list(range(1, 8))  # each step once, in order
    assert list(pd.read_csv(tmp_path / "history.csv")["step"]) == list(range(1, 8))
    samples = pd.read_csv(tmp_path / "samples.csv")
    assert samples.groupby("step").size().to_dict() == {s: 4 for s in range(1, 8)}  # B 2 x k 2 each step
    last = checkpoint.complete_checkpoints(tmp_path)[-1]
    assert [json.loads(line)["step"] for line in (last / "history.jsonl").read_text().splitlines()] == [5, 6, 7]


def test_a_windowed_run_resumed_from_an_older_checkpoint_matches_the_straight_run(examples, tmp_path):
    straight = make(examples, mode="hybrid", history_window=2).run(6, out_dir=tmp_path / "straight", progress=False)
    assert len(straight) == 2
    first = make(examples, mode="hybrid", history_window=2, checkpoint_every=3)
    first.run(5, out_dir=tmp_path / "run", progress=False)  # "killed" after step 5: its files hold steps 1..5
    for name in ("step-000005",):  # back to the checkpoint of step 3, as after a crash before step 5's save
        checkpoint._discard(tmp_path / "run" / "checkpoints" / name)
    resumed = HybridTrainer.resume(tmp_path / "run", examples=examples, verbose=False)
    assert resumed.step_count == 3 and row_log.last_step(tmp_path / "run") == 3  # the files cut back to step 3
    resumed.run(3, out_dir=tmp_path / "run", progress=False)
    for name in ("history.csv", "samples.csv"):
        got, want = (pd.read_csv(tmp_path / d / name, keep_default_na=False) for d in ("run", "straight"))
        assert _without_times(got).equals(_without_times(want)), name
    assert _without_times(row_log.read_history(tmp_path / "run")).equals(
        _without_times(row_log.read_history(tmp_path / "straight")))


def test_a_column_that_appears_late_rewrites_the_csv_with_it(tmp_path):
    row_log.append(tmp_path, [{"step": 1, "loss": 0.5}], [])
    row_log.append(tmp_path, [{"step": 2, "loss": 0.4, "nonfinite": "reward"}], [])
    frame = pd.read_csv(tmp_path / "history.csv", keep_default_na=False)
    assert list(frame["step"]) == [1, 2] and list(frame["nonfinite"]) == ["", "reward"]
    assert row_log.last_step(tmp_path) == 2
    row_log.truncate(tmp_path, 1)
    assert row_log.last_step(tmp_path) == 1 and len(pd.read_csv(tmp_path / "history.csv")) == 1


def test_without_a_window_the_checkpoints_keep_the_whole_history(examples, tmp_path):
    trainer = make(examples, checkpoint_every=2)
    trainer.run(4, out_dir=tmp_path, progress=False)
    assert len(trainer.history) == 4
    last = checkpoint.complete_checkpoints(tmp_path)[-1]
    assert len((last / "history.jsonl").read_text().splitlines()) == 4
