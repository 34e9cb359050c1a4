"""Experiment tracking (lab.runtime.tracking): TensorBoard event files that TensorBoard's own
reader parses, with the history's scalars and a samples table; clear errors for bad names."""

import pytest

from lab.runtime import tracking

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_a_tracker_writes_scalars_and_samples_tensorboard_reads(tmp_path):
    tracker = tracking.Tracker("tensorboard", tmp_path / "tb", config={"lr": 1e-4})
    for step, reward in ((1, 0.25), (2, 0.5)):
        tracker({"step": step, "reward": reward, "loss": 1.0 / step, "sample": "text", "kl": float("nan")},
                [{"prompt": "Q", "completion": "A", "reward": reward, "d_pred": 0.1}])
    tracker.close()
    events = read_events(tmp_path / "tb")
    assert {"reward", "loss"} <= set(events.Tags()["scalars"])
    assert "kl" not in events.Tags()["scalars"]  # NaN is not a point
    assert [(e.step, e.value) for e in events.Scalars("reward")] == [(1, 0.25), (2, 0.5)]
    assert {"samples/text_summary", "config/text_summary"} <= set(events.Tags()["tensors"])


def test_report_to_names_are_checked():
    assert tracking.backends("none") == []
    assert tracking.backends("auto") == ["tensorboard"]  # installed in the dev environment
    with pytest.raises(ValueError, match="choose from"):
        tracking.backends("tensorbord")
    with pytest.raises(ValueError, match="pip install"):
        tracking.backends("wandb") if not tracking._installed("wandb") else pytest.skip("wandb installed")


def test_a_two_step_run_writes_its_history_to_tensorboard(examples, tmp_path):
    from tiny import make

    trainer = make(examples, report_to="tensorboard")
    history = trainer.run(2, progress=False, out_dir=tmp_path / "run")
    events = read_events(tmp_path / "run" / "tensorboard")
    for name in ("reward", "loss", "loss_sft", "d_loss", "d_accuracy"):
        assert [e.step for e in events.Scalars(name)] == [1, 2], name
    assert [e.value for e in events.Scalars("reward")] == pytest.approx(list(history["reward"]), rel=1e-6)
    assert "samples/text_summary" in events.Tags()["tensors"]


def test_no_output_folder_no_tracking(examples, tmp_path, monkeypatch):
    from tiny import make

    monkeypatch.chdir(tmp_path)
    make(examples, report_to="tensorboard").run(1, progress=False)
    assert not list(tmp_path.iterdir())
