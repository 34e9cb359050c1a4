"""The runs of a session (config + history + samples), as tables, PNG bytes and a saved folder.

Used by :class:`lab.ui.widgets.Playground`, but plain functions: a notebook can build
:class:`Run` records by hand and pass them to :func:`lab.ui.plots.compare` or :func:`save_session`.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab.config import HybridConfig
from lab.ui import plots

TABLE_STYLE = ("<style>.lab-table {border-collapse: collapse; font-size: 12px}"
               " .lab-table th, .lab-table td {padding: 3px 10px; border-bottom: 1px solid #ddd;"
               " text-align: right} .lab-table td:nth-child(-n+2), .lab-table th:nth-child(-n+2)"
               " {text-align: left}</style>")


@dataclass
class Run:
    """One finished (or stopped) run: what was asked, what happened."""

    config: HybridConfig
    history: pd.DataFrame
    samples: pd.DataFrame = field(default_factory=pd.DataFrame)
    steps: int = 0  # steps requested
    seconds: float = 0.0  # wall time, model loading included
    stopped: bool = False  # ended early by Stop (or an error)

    @property
    def final_reward(self) -> float:
        """Mean reward of the last step (NaN for an SFT-only run)."""
        if "reward" not in self.history or self.history.empty:
            return float("nan")
        return float(self.history["reward"].iloc[-1])


def png(fig, dpi: int = 72) -> bytes:
    """The figure as PNG bytes (for an ``ipywidgets.Image``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _short(text: str, width: int) -> str:
    """One line without the prompt template's markers, cut to ``width`` characters."""
    text = re.sub(r"###\s*(Prompt|Response):", " ", str(text))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def samples_table(samples: pd.DataFrame, width: int = 90) -> str:
    """HTML table of the last step's samples: prompt, completion, reward, D's guess, parts."""
    if samples is None or samples.empty:
        return "<i>No samples yet: an RL or hybrid run shows its sampled answers here.</i>"
    step = int(samples["step"].max())
    last = samples[samples["step"] == step].copy()
    last["prompt"] = last["prompt"].map(lambda t: _short(t, 50))
    last["completion"] = last["completion"].map(lambda t: _short(t, width))
    last = last.drop(columns="step").rename(columns=lambda c: c.removeprefix("reward_"))
    table = last.to_html(index=False, float_format="{:.3f}".format, classes="lab-table", border=0)
    return f"{TABLE_STYLE}<b>Samples of step {step}</b>{table}"


def summary(runs: list[Run]) -> pd.DataFrame:
    """One row per run: what differs (the label), steps done, final and mean reward, time."""
    labels = plots.run_labels([run.config.to_dict() for run in runs])
    return pd.DataFrame({
        "run": range(1, len(runs) + 1),
        "label": labels,
        "steps": [f"{len(r.history)}/{r.steps}" + (" (stopped)" if r.stopped else "") for r in runs],
        "final reward": [r.final_reward for r in runs],
        "mean reward": [r.history["reward"].mean() if "reward" in r.history else float("nan")
                        for r in runs],
        "seconds": [r.seconds for r in runs],
    })


def runs_table(runs: list[Run]) -> str:
    """:func:`summary` as an HTML table."""
    if not runs:
        return "<i>No runs yet: press Run.</i>"
    return TABLE_STYLE + summary(runs).to_html(index=False, float_format="{:.3f}".format, border=0,
                                               formatters={"seconds": "{:.0f}".format}, classes="lab-table")


def history_table(runs: list[Run]) -> pd.DataFrame:
    """Every run's history in one frame, with ``run`` (1-based) and ``label`` columns first."""
    if not runs:
        return pd.DataFrame()
    labels = plots.run_labels([run.config.to_dict() for run in runs])
    frames = [run.history.assign(run=i + 1, label=label) for i, (run, label) in enumerate(zip(runs, labels))]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["run", "label", *[c for c in frame.columns if c not in ("run", "label")]]]


RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def run_folder(root: str | Path, name: str) -> Path:
    """``root / name`` for a run name typed by a user: one plain folder name (letters, digits,
    ``. _ + -``, not starting with ``.`` or ``-``), so that it can never leave ``root``.

    >>> run_folder("runs", "lr-1e-4").as_posix()
    'runs/lr-1e-4'
    >>> run_folder("runs", "../elsewhere")
    Traceback (most recent call last):
    ...
    ValueError: run name '../elsewhere' is not a plain folder name: it has a path separator; use letters, digits and . _ + - (e.g. 'lr-1e-4'), or pass a full path as out=
    """
    if not isinstance(name, str):
        raise ValueError(f"run name must be text, got {type(name).__name__}")
    if not RUN_NAME.match(name) or name.strip(".") == "":
        why = ("it has a path separator" if ("/" in name or "\\" in name)
               else "it is empty" if not name.strip()
               else "it starts with '.' or '-'" if name[:1] in ".-"
               else "it is too long" if len(name) > 100
               else "it has characters other than letters, digits and . _ + -")
        raise ValueError(f"run name {name!r} is not a plain folder name: {why}; use letters, digits and "
                         f". _ + - (e.g. 'lr-1e-4'), or pass a full path as out=")
    return Path(root) / name


def save_session(trainer, runs: list[Run], out: Path, metric: str = "reward") -> Path:
    """Save the current run and the session into ``out``; returns ``out``.

    ``out`` then holds the trainer's checkpoint (``checkpoints/``, ``config.json``,
    ``history.csv``, ``samples.csv``, from ``trainer.save``), ``dashboard.png`` of the
    current run, and for the session ``compare.png`` (``metric`` by run), ``runs.csv``
    (every history, one ``run`` column) and ``runs.json`` (every config).
    """
    out = Path(out)
    trainer.save(out)
    title = f"{trainer.config.mode} run, {trainer.step_count} steps"
    plots.save(plots.dashboard(trainer.history, title=title), out / "dashboard.png")
    if runs:
        plots.save(plots.compare(runs, metric), out / "compare.png")
        history_table(runs).to_csv(out / "runs.csv", index=False)
        configs = [dict(run.config.to_dict(), steps_done=len(run.history)) for run in runs]
        (out / "runs.json").write_text(json.dumps(configs, indent=2) + "\n")
    return out
