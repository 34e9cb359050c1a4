"""Learning curves: held-out quality measured while an arm trains (``ablate --curve-every N``).

:class:`LearningCurve` is a trainer callback that scores the held-out greedy answers every ``N``
steps; :func:`lab.experiments.ablation.run_ablation` writes its rows to each run's ``curve.csv``,
and :func:`learning_curves` stacks them for the figures (:func:`lab.experiments.figures.plot_learning_curves`);
:func:`budget` reads from them where an arm has clearly left the untrained model and where it flattens
(``budget.csv``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from lab import evaluate
from lab.eval import stats


class LearningCurve:
    """A trainer callback: every ``every`` steps, the held-out ``examples``' greedy answers scored
    (:func:`lab.evaluate.evaluate_trainer`; its decoding forks the random streams, so the run trains
    exactly as without it): one row per evaluation, ``step`` and the mean of each metric."""

    METRICS = ("semantic", "rouge_l", "bleu", "distinct_2")

    def __init__(self, examples: list, every: int):
        self.examples, self.every, self.rows, self.seconds, self.cpu_seconds = examples, every, [], 0.0, 0.0

    def __call__(self, trainer, row: dict) -> None:
        if row["step"] % self.every:
            return
        start, cpu = time.perf_counter(), time.process_time()
        frame = evaluate.evaluate_trainer(trainer, self.examples, decodings=("greedy",))
        self.rows.append({"step": row["step"], **{f"greedy_{m}": float(frame[m].mean()) for m in self.METRICS
                                                   if m in frame}})
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu


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


def budget(curves: pd.DataFrame, metric: str = "greedy_semantic", tolerance: float = 0.02) -> pd.DataFrame:
    """Where training has happened and where it stops paying: per trained arm and step, the mean
    over seeds of ``metric`` minus the untrained model's at the same seed, its 95% t-interval
    (:func:`lab.eval.stats.mean_ci`), ``clear``: the interval excludes 0, and ``flat``: this point
    and every later one lie within ``tolerance`` of the mean of the arm's last three points.
    ``curves``: :func:`learning_curves`' rows (``base`` at step 0)."""
    base = curves[curves["arm"] == "base"].set_index("seed")[metric]
    rows = []
    for arm, part in curves[curves["arm"] != "base"].groupby("arm", sort=False):
        means = part.groupby("step")[metric].mean()
        final = means.iloc[-3:].mean()
        within = (means - final).abs().le(tolerance)[::-1].cummin()[::-1]  # this step and all later ones
        for step, at in part.groupby("step"):
            gain = (at.set_index("seed")[metric] - base).dropna()
            mean, low, high = stats.mean_ci(gain)
            rows.append(dict(arm=arm, step=step, metric=metric, gain_vs_base=mean, low=low, high=high,
                             seeds=len(gain), clear=bool(low > 0), flat=bool(within[step])))
    return pd.DataFrame(rows)
