"""Experiment tracking: every history row and the step's samples, to TensorBoard, trackio or W&B.

``report_to`` takes TRL's names: ``"none"``, ``"tensorboard"``, ``"trackio"``, ``"wandb"``, a
comma-separated list of them, or ``"auto"``: TensorBoard when the ``tensorboard`` package is
installed (it works offline), else nothing. Each history row's numbers become scalars under
their column names (``reward``, ``loss``, ``d_accuracy`` ...) at the row's step; the step's
samples (prompt, completion, reward, the critic's prediction) a table. Only the main process
of a multi-process run logs.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

REPORT_TO = ("auto", "none", "tensorboard", "trackio", "wandb")
PROJECT = "lora-gan-lab"  # the trackio / W&B project runs are logged under
PACKAGE = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb"}


def backends(report_to: str) -> list[str]:
    """The backends ``report_to`` names (``auto``: TensorBoard if installed); a ``ValueError``
    for an unknown name or one whose package is missing, saying what to install."""
    names = [n.strip() for n in str(report_to).split(",") if n.strip()]
    unknown = [n for n in names if n not in REPORT_TO]
    if unknown or not names:
        raise ValueError(f"report_to={report_to!r}: choose from {', '.join(REPORT_TO)} (or a comma-separated list)")
    if "none" in names:
        return []
    if "auto" in names:
        return ["tensorboard"] if _installed("tensorboard") else []
    for name in names:
        if not _installed(PACKAGE[name]):
            raise ValueError(f"report_to={name!r} needs the {PACKAGE[name]} package: pip install {PACKAGE[name]} "
                             "(or report_to='none')")
    return names


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def scalars(row: dict) -> dict[str, float]:
    """The finite numbers of a history row, without ``step``.

    >>> scalars({"step": 3, "reward": 0.5, "sample": "text", "kl": float("nan"), "skipped": True})
    {'reward': 0.5}
    """
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


SAMPLE_COLUMNS = ("prompt", "completion", "reward", "d_pred")


def markdown_table(samples: list[dict]) -> str:
    """The samples as a Markdown table (TensorBoard's text panel renders it).

    >>> print(markdown_table([{"prompt": "Q|x", "completion": "A", "reward": 0.5, "d_pred": 0.25}]))
    | prompt | completion | reward | d_pred |
    |---|---|---|---|
    | Q/x | A | 0.500 | 0.250 |
    """
    def cell(value) -> str:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        return text.replace("|", "/").replace("\n", " ")

    head = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + "---|" * len(SAMPLE_COLUMNS)]
    return "\n".join(head + ["| " + " | ".join(cell(s.get(c, "")) for c in SAMPLE_COLUMNS) + " |" for s in samples])


class Tracker:
    """One run's logger for the backends of ``report_to``: call it with each history row and
    the step's samples; :meth:`close` at the end. TensorBoard event files go to ``log_dir``."""

    def __init__(self, report_to: str, log_dir: str | Path, config: dict, run_name: str | None = None):
        self.names = backends(report_to)
        self.log_dir = Path(log_dir)
        self._writers = []
        for name in self.names:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.log_dir.mkdir(parents=True, exist_ok=True)
                self._writers.append(_TensorBoard(SummaryWriter(str(self.log_dir)), config))
            else:
                self._writers.append(_Hosted(importlib.import_module(name), name, config, run_name, self.log_dir))

    def __call__(self, row: dict, samples: list[dict]) -> None:
        for writer in self._writers:
            writer.log(int(row["step"]), scalars(row), samples)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []


class _TensorBoard:
    def __init__(self, writer, config: dict):
        self.writer = writer
        writer.add_text("config", "\n".join(f"- {k}: {v}" for k, v in config.items()), 0)

    def log(self, step: int, values: dict, samples: list[dict]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        if samples:
            self.writer.add_text("samples", markdown_table(samples), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _Hosted:
    """trackio and W&B share ``init`` / ``log`` / ``Table`` / ``finish``."""

    def __init__(self, module, name: str, config: dict, run_name: str | None, log_dir: Path):
        self.module = module
        options = {"dir": str(log_dir)} if name == "wandb" else {}
        module.init(project=PROJECT, name=run_name, config=config, **options)

    def log(self, step: int, values: dict, samples: list[dict]) -> None:
        payload = dict(values)
        if samples and hasattr(self.module, "Table"):
            payload["samples"] = self.module.Table(columns=list(SAMPLE_COLUMNS),
                                                   data=[[s.get(c) for c in SAMPLE_COLUMNS] for s in samples])
        self.module.log(payload, step=step)

    def close(self) -> None:
        self.module.finish()


class RunTracker:
    """A :meth:`lab.trainer.HybridTrainer.run` callback: each step's history row and samples to
    the backends of ``config.report_to``, TensorBoard's files in ``OUT/tensorboard``. Without an
    output folder, or on a process that does not write, it logs nothing."""

    def __init__(self, config, out_dir: str | Path | None, is_main: bool = True):
        report_to = config.report_to if out_dir is not None and is_main else "none"
        folder = Path(out_dir if out_dir is not None else ".")
        self.tracker = Tracker(report_to, folder / "tensorboard", config.to_dict(), folder.name)

    def __call__(self, trainer, row: dict) -> None:
        samples = []  # this step's: the last rows of the samples log
        for sample in reversed(trainer.sample_rows):
            if sample.get("step") != row["step"]:
                break
            samples.append(sample)
        self.tracker(row, samples[::-1])

    def close(self) -> None:
        self.tracker.close()
