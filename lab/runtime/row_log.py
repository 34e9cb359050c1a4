"""A run's history, bounded in memory: the last N steps' rows in the trainer, every row on disk.

With ``history_window: N`` (> 0) a :class:`Window` (one of :meth:`lab.trainer.HybridTrainer.run`'s
callbacks) appends each step's history row and sample rows to the output folder's
``history.jsonl`` (exact), ``history.csv`` and ``samples.csv`` (for people) as they come, then
drops the rows older than N steps from the trainer (``trainer.history`` is that window;
:func:`read_history` reads the whole run). A checkpoint keeps only the window, and resuming
from one cuts the folder's files back to its step (:func:`truncate`), so exact resume holds.
Memory stays flat however long a stream runs. Without an output folder the older rows are
dropped. ``N = 0`` (the default) keeps every row in memory, as the checkpoints write them.

>>> rows = [{"step": s} for s in range(1, 6)]
>>> [r["step"] for r in keep_last(rows, step=5, size=2)]
[4, 5]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

FILES = ("history.jsonl", "history.csv", "samples.csv")


def keep_last(rows: list[dict], step: int, size: int) -> list[dict]:
    """The rows of the last ``size`` steps up to ``step``."""
    return [row for row in rows if row["step"] > step - size]


def last_step(run_dir: Path) -> int:
    """The step of the last row in ``run_dir/history.jsonl`` (0 if there is none)."""
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with path.open("rb") as handle:
        size, tail = path.stat().st_size, 1 << 16
        while True:  # the tail long enough to hold the last whole row
            handle.seek(max(0, size - tail))
            lines = handle.read().splitlines()
            if len(lines) > 1 or tail >= size:
                return int(json.loads(lines[-1])["step"])
            tail *= 4


def append(run_dir: Path, history: list[dict], samples: list[dict]) -> None:
    """Append rows to ``run_dir``'s ``history.jsonl``, ``history.csv`` and ``samples.csv``."""
    run_dir = Path(run_dir)
    if history:
        with (run_dir / "history.jsonl").open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in history))
    _append_csv(run_dir / "history.csv", history)
    _append_csv(run_dir / "samples.csv", samples)


def append_after(run_dir: Path, step: int, history: list[dict], samples: list[dict]) -> None:
    """:func:`append` the rows of the steps after ``step`` (those already on disk are left out)."""
    append(run_dir, [r for r in history if r["step"] > step], [r for r in samples if r["step"] > step])


def _append_csv(path: Path, rows: list[dict]) -> None:
    """Append under the file's header; a row with a column the file lacks (rare: a step's first
    non-finite value) rewrites the file with the new column."""
    if not rows:
        return
    header = None
    if path.is_file() and path.stat().st_size > 0:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
    keys = dict.fromkeys(key for row in rows for key in row)
    if header is None:
        pd.DataFrame(rows).to_csv(path, index=False)
    elif set(keys) <= set(header):
        pd.DataFrame(rows, columns=header).to_csv(path, mode="a", header=False, index=False)
    else:
        old = pd.read_csv(path, keep_default_na=False)
        pd.concat([old, pd.DataFrame(rows)], ignore_index=True).to_csv(path, index=False)


def truncate(run_dir: Path, step: int) -> None:
    """Drop the rows after ``step`` from ``run_dir``'s files (a resume from that step's checkpoint)."""
    run_dir = Path(run_dir)
    path = run_dir / "history.jsonl"
    if path.is_file() and last_step(run_dir) > step:
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    for name in ("history.csv", "samples.csv"):
        path = run_dir / name
        if path.is_file() and path.stat().st_size > 1:
            frame = pd.read_csv(path, keep_default_na=False)
            if (frame["step"] > step).any():
                frame[frame["step"] <= step].to_csv(path, index=False)


def read_history(run_dir: Path) -> pd.DataFrame:
    """Every history row of a run folder (``history.jsonl``), one per step."""
    path = Path(run_dir) / "history.jsonl"
    return pd.read_json(path, lines=True) if path.is_file() and path.stat().st_size else pd.DataFrame()


class Window:
    """The callback that keeps a trainer's rows to the last ``size`` steps, appending them to
    ``out_dir``'s files first (the main process's; ``None``: no folder, older rows dropped)."""

    def __init__(self, size: int, out_dir: Path | None):
        self.size, self.dir = size, None if out_dir is None else Path(out_dir)
        self.logged = last_step(self.dir) if self.dir is not None else 0  # rows on disk up to this step

    def __call__(self, trainer, row: dict) -> None:
        if not self.size:
            return
        step = trainer.step_count
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            append_after(self.dir, self.logged, trainer.rows, trainer.sample_rows)
            self.logged = step
        trainer.rows = keep_last(trainer.rows, step, self.size)
        trainer.sample_rows = keep_last(trainer.sample_rows, step, self.size)
