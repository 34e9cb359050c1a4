"""The results atlas: every arm against the default hybrid, one row each (``ablate --preset atlas``).

Each arm changes one switch of the default hybrid (:data:`lab.experiments.arms.ARMS`); run with
the same seeds and data order, its held-out answers pair with the hybrid's prompt by prompt.
:func:`table` gives per arm: what it changes, its paired difference from ``hybrid`` with the
95% interval and MDE on greedy semantic, greedy ROUGE-L and the factual metric (cluster
bootstrap, :func:`lab.eval.stats.paired_table`), on sampled distinct-2 (a set-level metric: the
per-seed t-interval), its seconds per training step (the training steps' seconds, less the run's
setup; on a CPU its CPU seconds: with one torch thread, the wall time it takes on a core of its
own, whatever else shares the machine) and the process's peak resident memory during its runs.
:func:`write` saves ``atlas.csv``, ``atlas.md`` (the README's table) and ``atlas.png`` (:func:`plot`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lab.eval import diagnostics, stats
from lab.experiments import claims
from lab.ui import plots

REFERENCE = "hybrid"
COLUMNS = {"greedy_semantic": "greedy semantic", "greedy_rouge_l": "greedy ROUGE-L",
           "sampled_distinct_2": "sampled distinct-2"}


def step_seconds(results: pd.DataFrame, on_cpu: bool = True) -> pd.Series:
    """Seconds per training step of each arm, mean over its seeds: (training - setup) / steps, in
    CPU seconds on a CPU where a run recorded them (wall seconds otherwise)."""
    wide = results.pivot_table(index=["arm", "seed"], columns="metric", values="value")
    spent = wide["train_seconds"] - (wide["setup_seconds"] if "setup_seconds" in wide else 0.0)
    if on_cpu and "train_cpu_seconds" in wide:  # runs recorded before CPU seconds keep their wall seconds
        spent = (wide["train_cpu_seconds"] - wide["setup_cpu_seconds"]).fillna(spent)
    per_step = (spent / wide["steps"].where(wide["steps"] > 0)).groupby(level="arm").mean()
    return per_step.reindex(list(dict.fromkeys(results["arm"])))


def table(out: Path, results: pd.DataFrame, definitions: dict, n_boot: int = 2000,
          on_cpu: bool = True) -> pd.DataFrame:
    """One row per arm: description, per metric ``<m>``, ``<m>_low``, ``<m>_high``, ``<m>_mde`` (for
    ``hybrid``, the first row, its own mean and no interval), plus ``seconds_per_step``
    (:func:`step_seconds`) and ``peak_rss_mb`` (means over seeds)."""
    factual = claims.factual_metric(results)
    metrics = [*COLUMNS, *([factual] if factual else [])]
    paired = stats.paired_table(diagnostics.per_prompt(out, results), results, metrics, REFERENCE, n_boot)
    wide = results.pivot_table(index="arm", columns="metric", values="value", aggfunc="mean")
    per_step = step_seconds(results, on_cpu)
    rows = []
    for arm in sorted(dict.fromkeys(results["arm"]), key=lambda a: a != REFERENCE):  # the reference first
        row = {"arm": arm, "changes": definitions.get(arm, {}).get("description", "")}
        row.update({metric: wide.loc[arm].get(metric, float("nan")) for metric in metrics} if arm == REFERENCE
                   else _differences(paired, arm, metrics))
        row["seconds_per_step"] = per_step.get(arm, float("nan"))
        row["peak_rss_mb"] = wide.loc[arm].get("peak_rss_mb", float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def _differences(paired: pd.DataFrame, arm: str, metrics: list[str]) -> dict:
    """``arm``'s paired difference from the reference per metric: ``<m>``, ``<m>_low``, ``<m>_high``,
    ``<m>_mde`` (the bootstrap interval, the per-seed t one where a metric has no per-prompt value)."""
    cells = {}
    for metric in metrics:
        found = paired[(paired["arm"] == arm) & (paired["metric"] == metric)]
        if found.empty:
            continue
        r = found.iloc[0]
        low, high = (r["boot_low"], r["boot_high"]) if r["boot_low"] == r["boot_low"] else (r["t_low"], r["t_high"])
        diff = r["diff"] if r["diff"] == r["diff"] else r["t_diff"]
        cells.update({metric: diff, f"{metric}_low": low, f"{metric}_high": high, f"{metric}_mde": r["mde"]})
    return cells


def _cell(row: pd.Series, metric: str) -> str:
    if metric not in row or row[metric] != row[metric]:
        return "n/a"
    if row["arm"] == REFERENCE:
        return f"{row[metric]:.3f} (its mean)"
    if row[f"{metric}_low"] != row[f"{metric}_low"]:
        return f"{row[metric]:+.3f} (one seed: no interval)"
    mark = " *" if row[f"{metric}_low"] > 0 or row[f"{metric}_high"] < 0 else ""
    return f"{row[metric]:+.3f} [{row[f'{metric}_low']:+.3f}, {row[f'{metric}_high']:+.3f}]{mark} " \
           f"(MDE {row[f'{metric}_mde']:.3f})"


def markdown(frame: pd.DataFrame) -> str:
    """The atlas as a Markdown table (``*``: the interval excludes 0); each row has an anchor,
    ``#atlas-<arm>``, for the notebook sections that teach its switch to link to."""
    metrics = [m for m in frame.columns if m in COLUMNS or m.endswith(claims.FACTUAL)]
    metrics = [m for m in metrics if not m.endswith(("_low", "_high", "_mde"))]
    head = ["arm", "what it changes", *(COLUMNS.get(m, m) + " vs hybrid" for m in metrics), "s / step", "peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in frame.iterrows():
        cells = [f'<a id="atlas-{row["arm"]}"></a>`{row["arm"]}`', row["changes"], *(_cell(row, m) for m in metrics),
                 "n/a" if row["seconds_per_step"] != row["seconds_per_step"] else f"{row['seconds_per_step']:.1f}",
                 "n/a" if row["peak_rss_mb"] != row["peak_rss_mb"] else f"{row['peak_rss_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(frame: pd.DataFrame) -> Figure:
    """A forest plot of :func:`table`: one panel per metric, one row per arm (the hybrid's is the
    zero line), its difference from the hybrid with the 95% interval; filled where the interval
    excludes 0, a hollow marker where one seed gave no interval."""
    metrics = [m for m in frame.columns if f"{m}_low" in frame.columns]
    arms = frame[frame["arm"] != REFERENCE].reset_index(drop=True)
    fig, axes = plots.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.22 * len(arms) + 1.2), squeeze=False)
    y = np.arange(len(arms))[::-1]  # the table's order, top to bottom
    for ax, metric in zip(axes[0], metrics):
        diff, low, high = (arms[c].to_numpy(float) for c in (metric, f"{metric}_low", f"{metric}_high"))  # (arms,)
        clear = (low > 0) | (high < 0)
        ax.axvline(0, color="grey", lw=0.8)
        ax.hlines(y, low, high, color="C0", lw=1.2)
        ax.scatter(diff[clear], y[clear], color="C3", zorder=3, s=14)
        ax.scatter(diff[~clear], y[~clear], facecolor="white", edgecolor="C0", zorder=3, s=14)
        ax.set_title(f"{COLUMNS.get(metric, metric)} - hybrid", fontsize=9)
        ax.set_yticks(y, arms["arm"] if ax is axes[0][0] else [""] * len(y), fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylim(-0.8, len(arms) - 0.2)
    fig.suptitle("atlas: each arm minus the default hybrid, paired per prompt, 95% interval "
                 "(red: it excludes 0)", fontsize=10)
    return fig


def write(out: Path, results: pd.DataFrame, definitions: dict, n_boot: int = 2000,
          on_cpu: bool = True) -> pd.DataFrame:
    """``atlas.csv``, ``atlas.md`` and ``atlas.png`` in the ablation folder ``out``; returns the table."""
    frame = table(Path(out), results, definitions, n_boot, on_cpu)
    frame.to_csv(Path(out) / "atlas.csv", index=False)
    (Path(out) / "atlas.md").write_text(
        "# Atlas: every arm minus the default hybrid (same seeds and data order, paired per prompt)\n\n"
        "Difference [95% interval] (MDE); * = the interval excludes 0. Written by `python -m lab ablate "
        "--preset atlas` (lab.experiments.atlas).\n\n" + markdown(frame))
    plots.save(plot(frame), Path(out) / "atlas.png")
    return frame
