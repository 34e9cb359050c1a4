"""The ablation's figures: held-out metrics per arm, quality vs diversity, training curves with
seed bands, and the reward-hacking monitor (:mod:`lab.experiments.ablation` writes the tables
they read). Built from :mod:`lab.ui.plots`' helpers, so they look like every other figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lab.eval.stats import mean_ci, metric_range
from lab.experiments.curves import budget, learning_curves
from lab.ui import plots


def is_cost(metric: str) -> bool:
    """Whether ``metric`` is a run's cost (seconds, steps, peak memory), not a held-out metric."""
    return metric.endswith("seconds") or metric in ("steps", "peak_rss_mb")


def error_bars(part: pd.DataFrame, metric: str) -> np.ndarray:
    """(2, arms) lower and upper error-bar lengths of ``part`` (``mean, ci_low, ci_high`` per arm), the
    interval cut to the values ``metric`` can take (:func:`lab.eval.stats.metric_range`; every other
    metric is >= 0: perplexity, words, repetition, D's score, costs): with 2 seeds a t-interval can
    reach far outside them, and the mean cannot. NaN intervals (one seed) give no bar."""
    low, high = metric_range(metric) or (0.0, np.inf)
    return np.nan_to_num(np.vstack([part["mean"] - part["ci_low"].clip(lower=low),
                                    part["ci_high"].clip(upper=high) - part["mean"]]))


def plot_metrics(summary: pd.DataFrame, metrics=None, most: int = 12) -> Figure:
    """One bar chart per metric: the mean over seeds per arm, 95% CI error bars cut to the metric's
    range (:func:`error_bars`). Over ``most`` arms the bars lie down, an arm a row named once at
    the left of each row of panels, and the figure grows with the arms (45 upright bars with slanted
    names are unreadable).

    ``summary``: :func:`lab.eval.stats.summarize_results` (``arm, metric, mean, ci_low, ci_high``);
    ``metrics``: which, in order (default: every held-out metric, no costs; the ablation passes its
    ``KEY_METRICS``).
    """
    present = list(dict.fromkeys(summary["metric"]))
    metrics = [m for m in (metrics or [m for m in present if not is_cost(m)]) if m in present]
    arms = list(dict.fromkeys(summary["arm"]))
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, -(-len(metrics) // ncols))
    lying = len(arms) > most
    height = max(3.4, 0.9 + 0.19 * len(arms)) if lying else 3.4
    fig, axes = plots.subplots(nrows, ncols, (4.2 * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    bars = dict(color=list(plots.colors(arms).values()), capsize=2 if lying else 3)
    for i, (ax, metric) in enumerate(zip(axes.flat, metrics)):
        part = summary[summary["metric"] == metric].set_index("arm").reindex(arms)
        if lying:  # the first arm on top, as in a table
            ax.barh(range(len(arms)), part["mean"], xerr=error_bars(part, metric), **bars)
            ax.set_yticks(range(len(arms)), arms if i % ncols == 0 else [], fontsize=8)
            ax.set_ylim(len(arms) - 0.5, -0.5)
            ax.set_xlabel(metric.split("_", 1)[-1])
        else:
            ax.bar(range(len(arms)), part["mean"], yerr=error_bars(part, metric), **bars)
            ax.set_xticks(range(len(arms)), arms, rotation=40, ha="right", fontsize=8)
            ax.set_ylabel(metric.split("_", 1)[-1])
        ax.set_title(metric)
    fig.suptitle("held-out metrics: mean over seeds, bars = 95% CI (t over seeds, cut to the metric's range)")
    return fig


def plot_quality_diversity(results: pd.DataFrame, x: str = "sampled_distinct_2",
                           y: str = "sampled_semantic") -> Figure:
    """Quality (``y``) vs diversity (``x``): each seed a faint dot, each arm's mean with 95% CIs.

    ``results``: long format ``arm, seed, metric, value`` (the ablation's ``results.csv``).
    """
    ax = plots.axes_or_new(None, figsize=(6.4, 4.8))
    wide = results.pivot_table(index=["arm", "seed"], columns="metric", values="value").reset_index()
    drawn = False
    for arm, color in plots.colors(dict.fromkeys(results["arm"])).items():
        part = wide[wide["arm"] == arm]
        if x not in part or y not in part:
            continue
        ax.scatter(part[x], part[y], color=color, alpha=0.35, s=18)
        (mx, lx, hx), (my, ly, hy) = mean_ci(part[x], bounds=metric_range(x)), mean_ci(part[y], bounds=metric_range(y))
        ax.errorbar(mx, my, xerr=np.nan_to_num([[mx - lx], [hx - mx]]), yerr=np.nan_to_num([[my - ly], [hy - my]]),
                    fmt="o", color=color, capsize=3, label=arm)
        drawn = True
    return plots.finish(ax, "quality vs diversity (dots: seeds; markers: mean, 95% CI)", f"{y} (quality)",
                        drawn, xlabel=f"{x} (diversity)")


def plot_learning_curves(curves: pd.DataFrame, metric: str = "greedy_semantic") -> Figure:
    """Held-out ``metric`` against training steps, per arm: the mean over seeds with its 95% CI
    band (each seed a faint line); an arm evaluated only once (base) is a dashed level.

    ``curves``: :func:`lab.experiments.curves.learning_curves`' frame (``arm, seed, step``, metrics).
    """
    ax = plots.axes_or_new(None, figsize=(7, 4.2))
    drawn = False
    for arm, color in plots.colors(dict.fromkeys(curves["arm"])).items():
        part = curves[curves["arm"] == arm].dropna(subset=[metric])
        if part.empty:
            continue
        if (part["step"] == 0).all():  # the untrained model (base): one level
            ax.axhline(part[metric].mean(), color=color, linestyle="--", label=f"{arm} (untrained)")
            drawn = True
            continue
        for _, seed in part.groupby("seed"):
            ax.plot(seed["step"], seed[metric], color=color, alpha=0.2, linewidth=0.8)
        steps = sorted(part["step"].unique())
        cis = [mean_ci(part.loc[part["step"] == s, metric], bounds=metric_range(metric)) for s in steps]
        ax.plot(steps, [c[0] for c in cis], "o-", color=color, label=arm, markersize=3)
        ax.fill_between(steps, [c[1] for c in cis], [c[2] for c in cis], color=color, alpha=0.15)
        drawn = True
    return plots.finish(ax, f"held-out {metric} over training (mean of seeds, 95% CI)", metric, drawn,
                        xlabel="training step")


def plot_curves(runs, metric: str = "reward", labels: list[str] | None = None) -> Figure:
    """Training curves of several arms via :func:`lab.ui.plots.compare`, smoothed over a tenth of the steps.

    ``runs``: (config, history) pairs, one per arm (an untrained arm with an empty history
    keeps the colours in step with the other ablation figures).
    """
    steps = max([len(plots.unpack(run)[1]) for run in runs] + [1])
    fig = plots.compare(runs, metric, window=max(1, steps // 10), labels=labels)
    crowded_legend(fig, fig.axes[0])
    return fig


def crowded_legend(fig: Figure, *axes: Axes, most: int = 10) -> None:
    """Over ``most`` entries: one legend below the figure, in columns (in-axes ones squeeze the axes to nothing)."""
    handles, labels = axes[-1].get_legend_handles_labels()
    if len(labels) <= most:
        return
    for ax in fig.axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, -(-len(labels) // 4)), fontsize="x-small")


def _seedframe(histories, metric: str) -> pd.DataFrame:
    """``(step x seed)`` values of ``metric`` from a list of histories (one per seed)."""
    frames = [plots.frame(h).assign(_seed=i) for i, h in enumerate(histories)
              if h is not None and len(h) and plots.series(plots.frame(h), metric) is not None]
    if not frames:
        return pd.DataFrame()
    data = pd.concat(frames, ignore_index=True)
    data[metric] = pd.to_numeric(data[metric], errors="coerce")
    return data.pivot_table(index="step", columns="_seed", values=metric)


def plot_seed_bands(runs: dict, metric: str = "reward", labels: list[str] | None = None,
                    ax: Axes | None = None) -> Figure:
    """Per arm, ``metric`` by step: the mean over seeds (line) and the range over seeds (band),
    each seed's curve first smoothed over a tenth of the steps. ``runs``: ``{arm: [history of
    each seed]}``; ``labels``: the arms in colour order (those without data keep their colour)."""
    ax = plots.axes_or_new(ax, figsize=(7.2, 4.4))
    names = labels or list(runs)
    drawn = False
    for arm, color in plots.colors(names).items():
        curves = _seedframe(runs.get(arm, []), metric)
        if curves.empty:
            continue
        curves = curves.rolling(max(1, len(curves) // 10), min_periods=1).mean()
        x = curves.index.to_numpy(dtype=float)
        ax.plot(x, curves.mean(axis=1), color=color, linewidth=2, label=f"{arm} ({curves.shape[1]} seeds)",
                marker="o" if len(x) < 20 else None, markersize=3)
        ax.fill_between(x, curves.min(axis=1), curves.max(axis=1), color=color, alpha=0.18, linewidth=0)
        drawn = True
    fig = plots.finish(ax, f"{metric} by arm: mean over seeds, band = range over seeds", metric, drawn)
    crowded_legend(fig, ax)
    return fig


def plot_hacking(curves: dict, labels: list[str] | None = None) -> Figure:
    """Reward hacking: per arm, the gap between the discriminator's score and the true reward
    (left) and their correlation over each step's samples (right), mean over seeds, band = range.
    ``curves``: ``{arm: frame}`` with ``step, seed, gap, corr`` (:func:`lab.eval.diagnostics.hacking_curves`);
    ``labels``: the arms in colour order (as in the other ablation figures)."""
    fig, (left, right) = plots.subplots(1, 2, figsize=(11, 4))
    for arm, color in plots.colors(labels or list(curves)).items():
        if arm not in curves:
            continue
        frame = curves[arm]
        for ax, column in ((left, "gap"), (right, "corr")):
            wide = frame.pivot_table(index="step", columns="seed", values=column)
            wide = wide.rolling(max(1, len(wide) // 10), min_periods=1).mean()
            x = wide.index.to_numpy(dtype=float)
            ax.plot(x, wide.mean(axis=1), color=color, linewidth=2, label=arm, marker="o" if len(x) < 20 else None,
                    markersize=3)
            ax.fill_between(x, wide.min(axis=1), wide.max(axis=1), color=color, alpha=0.15, linewidth=0)
    left.axhline(0, color="grey", linewidth=0.8)
    plots.finish(left, "D score - true reward (fresh samples)", "gap", bool(curves))
    plots.finish(right, "corr(D score, true reward) per step", "Pearson r", bool(curves))
    crowded_legend(fig, right)
    return fig


# --- an ablation folder's figures ----------------------------------------------------------------
def arm_curves(out: Path, arms) -> list[tuple[dict, pd.DataFrame]]:
    """Per arm, ``(config, history averaged over seeds by step)`` from ``out``; an arm without
    histories (``base``) gets an empty one, so every arm keeps its colour."""
    runs = []
    for arm in arms:
        histories = [pd.read_csv(p) for p in sorted((out / "runs").glob(f"{arm}_seed*/history.csv"))]
        mean = pd.concat(histories).groupby("step").mean(numeric_only=True).reset_index() if histories \
            else pd.DataFrame()
        runs.append((json.loads((out / f"config_{arm}.json").read_text()), mean))
    return runs


def write_all(out: Path, results: pd.DataFrame, summary: pd.DataFrame, key_metrics) -> None:
    """Every figure of an ablation folder ``out`` (``metrics.png`` shows ``key_metrics``)."""
    arms = list(dict.fromkeys(results["arm"]))
    plots.save(plot_metrics(summary, key_metrics), out / "metrics.png")
    plots.save(plot_quality_diversity(results), out / "quality_diversity.png")
    curves = arm_curves(out, arms)
    for metric in ("reward", "loss_sft"):
        plots.save(plot_curves(curves, metric, labels=arms), out / f"curves_{metric}.png")
    learning = learning_curves(out, results)
    if not learning.empty:
        learning.to_csv(out / "learning_curves.csv", index=False)
        if "base" in set(learning["arm"]):
            budget(learning).to_csv(out / "budget.csv", index=False)
        for metric in ("greedy_semantic", "greedy_rouge_l"):
            plots.save(plot_learning_curves(learning, metric), out / f"learning_{metric}.png")
