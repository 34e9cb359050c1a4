"""Learning curves: held-out quality measured while an arm trains (``ablate --curve-every N``).

:class:`LearningCurve` is a trainer callback that scores the held-out greedy answers every ``N``
steps; :func:`lab.experiments.ablation.run_ablation` writes its rows to each run's ``curve.csv``,
and :func:`learning_curves` stacks them for the figures (:func:`lab.experiments.figures.plot_learning_curves`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from lab import evaluate


class LearningCurve:
    """A trainer callback: every ``every`` steps, the held-out ``examples``' greedy answers scored
    (:func:`lab.evaluate.evaluate_trainer`; its decoding forks the random streams, so the run trains
    exactly as without it): one row per evaluation, ``step`` and the mean of each metric."""

    METRICS = ("semantic", "rouge_l", "bleu", "distinct_2")

    def __init__(self, examples: list, every: int):
        self.examples, self.every, self.rows, self.seconds = examples, every, [], 0.0

    def __call__(self, trainer, row: dict) -> None:
        if row["step"] % self.every:
            return
        start = time.perf_counter()
        frame = evaluate.evaluate_trainer(trainer, self.examples, decodings=("greedy",))
        self.rows.append({"step": row["step"], **{f"greedy_{m}": float(frame[m].mean()) for m in self.METRICS
                                                   if m in frame}})
        self.seconds += time.perf_counter() - start


def learning_curves(out: Path, results: pd.DataFrame) -> pd.DataFrame:
    """Every run's ``curve.csv`` stacked (``arm, seed, step`` and the metrics); an untrained arm
    (base) joins as its final greedy values at step 0, a flat reference line."""
    frames = [pd.read_csv(path).assign(arm=path.parent.name.rsplit("_seed", 1)[0],
                                       seed=int(path.parent.name.rsplit("_seed", 1)[1]))
              for path in sorted(Path(out).glob("runs/*/curve.csv"))]
    if not frames:
        return pd.DataFrame()
    curves = pd.concat(frames, ignore_index=True)
    base = results[(results["arm"] == "base") & results["metric"].isin(curves.columns)]
    if not base.empty:
        flat = base.pivot_table(index="seed", columns="metric", values="value").reset_index().assign(arm="base", step=0)
        curves = pd.concat([flat, curves], ignore_index=True)
    return curves
