"""Run history -> figures: one function per panel, a dashboard, run comparison, the
ablation's figures (:func:`plot_metrics`, :func:`plot_quality_diversity`, :func:`plot_curves`,
:func:`plot_seed_bands`, :func:`plot_hacking`),
``save``.

Each function takes a history (the trainer's ``pandas.DataFrame``, one row per step; a
list of row dicts works too) and returns a ``matplotlib`` Figure whose axes are labelled.
Panels take ``ax=`` so that they compose. A column that is absent or all-NaN is skipped,
and a panel with nothing to show says "(no data)" in its title.

New figures are detached from pyplot, so Jupyter shows each once (as a cell's value or
with ``display(fig)``) and live redraws do not pile up open figures; scripts ``save`` them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LOSSES = {"loss": "total", "loss_sft": "SFT", "loss_rl": "REINFORCE", "kl": "KL",
          "entropy": "policy entropy"}  # entropy is logged always, a loss term only if entropy_coef > 0
PHASES = {"time_sample": "sample", "time_reward": "reward", "time_disc": "discriminator",
          "time_gen": "generator update"}
SHORT_NAMES = {"reward_weights": "weights"}  # config fields renamed in compare() labels


# --- helpers -------------------------------------------------------------------------------
def _frame(history) -> pd.DataFrame:
    return history if isinstance(history, pd.DataFrame) else pd.DataFrame(history)


def _series(history: pd.DataFrame, column: str) -> pd.Series | None:
    """The column as floats, or None when it is absent or all-NaN."""
    if column not in history:
        return None
    values = pd.to_numeric(history[column], errors="coerce").reset_index(drop=True)
    return None if values.isna().all() else values


def _steps(history: pd.DataFrame) -> np.ndarray:
    if "step" in history:
        return pd.to_numeric(history["step"], errors="coerce").to_numpy()
    return np.arange(1, len(history) + 1)


def _subplots(nrows=1, ncols=1, figsize=(6.4, 4), squeeze=True):
    """``plt.subplots``, closed in pyplot: the figure stays usable, but the notebook's
    end-of-cell flush does not show it a second time."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=squeeze)
    plt.close(fig)
    return fig, axes


def _colors(names) -> dict:
    """One colour per name, in order (``C0``, ``C1``, ...), as :func:`compare` colours runs."""
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def _axes(ax: Axes | None, figsize=(6.4, 4)) -> Axes:
    return _subplots(figsize=figsize)[1] if ax is None else ax


def _smoothed(ax: Axes, x, values: pd.Series, window: int, label: str, color: str) -> None:
    """Raw values as a thin faint line, their rolling mean bold."""
    ax.plot(x, values, color=color, alpha=0.3, linewidth=0.8)
    ax.plot(x, values.rolling(max(1, window), min_periods=1).mean(), color=color,
            linewidth=2, label=label)


def _finish(ax: Axes, title: str, ylabel: str, drawn: bool, *twins: Axes,
            xlabel: str = "step") -> Figure:
    """Labels, title ("(no data)" when nothing was drawn) and one legend over ``ax`` and its twins."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlabel == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 2.5 on short runs
    ax.set_title(title if drawn else f"{title} (no data)")
    if not drawn:  # an empty frame, not meaningless 0-1 ticks
        ax.set_xticks([])
        ax.set_yticks([])
    handles, labels = [], []
    for a in (ax, *twins):
        h, l = a.get_legend_handles_labels()
        handles, labels = handles + h, labels + l
    if handles:
        (twins[-1] if twins else ax).legend(handles, labels, fontsize="small")
    return ax.figure


def _two_scales(history: pd.DataFrame, ax: Axes | None, title: str, left: dict, left_label: str,
                right: dict, right_label: str) -> Figure:
    """``left`` ({column: label}) on ``ax``, ``right`` on a twin y-axis (on ``ax`` if no left)."""
    ax, x = _axes(ax), _steps(history)
    left = {c: l for c, l in left.items() if _series(history, c) is not None}
    right = {c: l for c, l in right.items() if _series(history, c) is not None}
    twin = ax.twinx() if left and right else None
    for i, (column, label) in enumerate({**left, **right}.items()):
        (twin if twin and column in right else ax).plot(x, _series(history, column),
                                                        color=f"C{i}", label=label)
    if twin:
        twin.set_ylabel(right_label)
    return _finish(ax, title, left_label if left or not right else right_label,
                   bool(left or right), *([twin] if twin else []))


# --- panels --------------------------------------------------------------------------------
def reward_parts(history) -> list[str]:
    """The ``reward_<part>`` columns with data (``reward_std`` excluded)."""
    history = _frame(history)
    return [c for c in history.columns if isinstance(c, str) and c.startswith("reward_")
            and c != "reward_std" and _series(history, c) is not None]


def rewards(history, window: int = 5, ax: Axes | None = None) -> Figure:
    """Total reward (black) and each part: raw values faint, rolling mean over ``window`` steps bold."""
    history = _frame(history)
    ax, x = _axes(ax), _steps(history)
    columns = (["reward"] if _series(history, "reward") is not None else []) + reward_parts(history)
    for i, column in enumerate(columns):
        label = "total" if column == "reward" else column.removeprefix("reward_")
        _smoothed(ax, x, _series(history, column), window, label,
                  "black" if column == "reward" else f"C{i}")
    return _finish(ax, f"Reward (rolling mean over {window})", "reward", bool(columns))


def losses(history, ax: Axes | None = None) -> Figure:
    """Generator loss terms per step: total (bold), SFT, REINFORCE, KL; and the policy's
    entropy (dashed), which is a loss term only when ``entropy_coef > 0``."""
    history = _frame(history)
    ax, x = _axes(ax), _steps(history)
    drawn = False
    for i, (column, label) in enumerate(LOSSES.items()):
        values = _series(history, column)
        if values is not None:
            ax.plot(x, values, label=label, color="black" if column == "loss" else f"C{i}",
                    linewidth=2 if column == "loss" else 1.2, linestyle="--" if column == "entropy" else "-")
            drawn = True
    return _finish(ax, "Generator losses", "loss", drawn)


def discriminator(history, ax: Axes | None = None) -> Figure:
    """Discriminator loss (left axis) and its predicted vs the true mean reward (right axis)."""
    history = _frame(history)
    right = {"d_pred": "predicted (D)", "reward": "true reward"}
    if _series(history, "d_pred") is None:  # the true reward alone says nothing about D
        right = {}
    return _two_scales(history, ax, "Discriminator", {"d_loss": "D loss"}, "D loss",
                       right, "mean reward")


def discriminator_scatter(data, ax: Axes | None = None) -> Figure:
    """Predicted (``d_pred``) vs true ``reward`` with the y = x line, and Pearson r in the title.

    ``data`` is a history (one point per step) or a samples frame (one point per sample).
    """
    data = _frame(data)
    ax = _axes(ax, figsize=(5, 5))
    pred, true = _series(data, "d_pred"), _series(data, "reward")
    title = "Predicted vs true reward"
    both = pred is not None and true is not None
    if both:
        keep = pred.notna() & true.notna()
        pred, true = pred[keep], true[keep]
        both = bool(keep.any())
    if both:
        ax.scatter(true, pred, s=18, alpha=0.6, color="C0", label="D prediction")
        low, high = min(true.min(), pred.min()), max(true.max(), pred.max())
        ax.plot([low, high], [low, high], "k--", linewidth=1, label="y = x")
        if len(true) > 1 and true.std() > 0 and pred.std() > 0:
            title += f" (r = {np.corrcoef(true, pred)[0, 1]:.2f})"
    return _finish(ax, title, "predicted reward (D)", both, xlabel="true reward")


def lambda_schedule(history, ax: Axes | None = None) -> Figure:
    """The RL weight lambda per step."""
    history = _frame(history)
    ax, values = _axes(ax), _series(history, "lambda")
    if values is not None:
        ax.plot(_steps(history), values, color="C4")
        low, high = min(0.0, values.min()), max(0.0, values.max())
        pad = 0.05 * ((high - low) or 1.0)
        ax.set_ylim(low - pad, high + pad)  # 0 always in view
    return _finish(ax, "RL weight λ", "λ", values is not None)


def length_diversity(history, ax: Axes | None = None) -> Figure:
    """Mean response length (left axis) and distinct-1/2 (right axis)."""
    return _two_scales(_frame(history), ax, "Length and diversity",
                       {"response_len": "response length"}, "tokens",
                       {"distinct_1": "distinct-1", "distinct_2": "distinct-2"}, "distinct-n")


def timing(history, ax: Axes | None = None) -> Figure:
    """Seconds per step, stacked by phase, with the measured step total dashed."""
    history = _frame(history)
    ax, x = _axes(ax), _steps(history)
    phases = {label: _series(history, column) for column, label in PHASES.items()
              if _series(history, column) is not None}
    if phases:
        ax.stackplot(x, *[v.fillna(0) for v in phases.values()], labels=list(phases), alpha=0.8)
    total = _series(history, "step_time")
    if total is not None:
        ax.plot(x, total, "k--", linewidth=1, label="step total")
    return _finish(ax, "Time per step", "seconds", bool(phases) or total is not None)


def dashboard(history, title: str | None = None) -> Figure:
    """Rewards, losses, lambda / discriminator, predicted-vs-true scatter, length and diversity."""
    history = _frame(history)
    fig, axes = _subplots(2, 3, figsize=(14, 8))
    rewards(history, ax=axes[0, 0])
    losses(history, ax=axes[0, 1])
    lambda_schedule(history, ax=axes[0, 2])
    discriminator(history, ax=axes[1, 0])
    discriminator_scatter(history, ax=axes[1, 1])
    length_diversity(history, ax=axes[1, 2])
    if title is None:
        run = f"{history['mode'].iloc[-1]} run" if "mode" in history and len(history) else "Run"
        title = f"{run}, {len(history)} steps"
    fig.suptitle(title, fontsize="x-large")
    return fig


# --- several runs --------------------------------------------------------------------------
def _unpack(run) -> tuple[dict, pd.DataFrame]:
    config, history = (getattr(run, "config", None), run.history) if hasattr(run, "history") else run
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    return config, _frame(history)


def _format(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{_format(v)}" for k, v in value.items())
    return str(value)


def run_labels(configs: list[dict]) -> list[str]:
    """Labels from the fields that differ between configs: "lambda_rl=0.5, lora_r=16".

    Identical configs (or a single one) give "run 1", "run 2", ...
    """
    keys = list(dict.fromkeys(k for config in configs for k in config))
    differ = [k for k in keys if any(c.get(k) != configs[0].get(k) for c in configs)]
    numbered = [f"run {i + 1}" for i in range(len(configs))]
    if not differ:
        return numbered
    labels = [", ".join(f"{SHORT_NAMES.get(k, k)}={_format(c.get(k))}" for k in differ) for c in configs]
    if len(set(labels)) < len(labels):  # repeated configs: keep the legend unambiguous
        labels = [f"{n}: {label}" for n, label in zip(numbered, labels)]
    return labels


def compare(runs, metric: str = "reward", window: int = 5, labels: list[str] | None = None) -> Figure:
    """Overlay ``metric`` (rolling mean over ``window``) of several runs.

    ``runs``: (config, history) pairs or objects with ``.config`` (HybridConfig or dict) and
    ``.history``. Labels default to :func:`run_labels` of the configs.
    """
    runs = [_unpack(run) for run in runs]
    labels = labels or run_labels([config for config, _ in runs])
    _, ax = _subplots(figsize=(8, 4.5))
    drawn = False
    for i, ((_, history), label) in enumerate(zip(runs, labels)):
        values = _series(history, metric)
        if values is not None:
            _smoothed(ax, _steps(history), values, window, label, f"C{i % 10}")
            drawn = True
    return _finish(ax, f"{metric} by run (rolling mean over {window})", metric, drawn)


# --- an ablation (arms x seeds; lab.experiments.ablation writes the tables) ------------------------------
def plot_metrics(summary: pd.DataFrame, metrics=None) -> Figure:
    """One bar chart per metric: the mean over seeds per arm, 95% CI error bars.

    ``summary``: :func:`lab.eval.stats.summarize_results` (``arm, metric, mean, ci_low, ci_high``);
    ``metrics``: which, in order (default: all; the ablation passes its ``KEY_METRICS``).
    """
    present = list(dict.fromkeys(summary["metric"]))
    metrics = [m for m in (metrics or present) if m in present]
    arms = list(dict.fromkeys(summary["arm"]))
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, -(-len(metrics) // ncols))
    fig, axes = _subplots(nrows, ncols, (4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        part = summary[summary["metric"] == metric].set_index("arm").reindex(arms)
        err = np.nan_to_num(np.vstack([part["mean"] - part["ci_low"], part["ci_high"] - part["mean"]]))
        ax.bar(range(len(arms)), part["mean"], yerr=err, capsize=3, color=list(_colors(arms).values()))
        ax.set_xticks(range(len(arms)), arms, rotation=40, ha="right", fontsize=8)
        ax.set_title(metric)
        ax.set_ylabel(metric.split("_", 1)[-1])
    fig.suptitle("held-out metrics: mean over seeds, bars = 95% CI (t over seeds)")
    return fig


def plot_quality_diversity(results: pd.DataFrame, x: str = "sampled_distinct_2",
                           y: str = "sampled_semantic") -> Figure:
    """Quality (``y``) vs diversity (``x``): each seed a faint dot, each arm's mean with 95% CIs.

    ``results``: long format ``arm, seed, metric, value`` (the ablation's ``results.csv``).
    """
    from lab.eval.stats import mean_ci

    ax = _axes(None, figsize=(6.4, 4.8))
    wide = results.pivot_table(index=["arm", "seed"], columns="metric", values="value").reset_index()
    drawn = False
    for arm, color in _colors(dict.fromkeys(results["arm"])).items():
        part = wide[wide["arm"] == arm]
        if x not in part or y not in part:
            continue
        ax.scatter(part[x], part[y], color=color, alpha=0.35, s=18)
        (mx, lx, hx), (my, ly, hy) = mean_ci(part[x]), mean_ci(part[y])
        ax.errorbar(mx, my, xerr=np.nan_to_num([[mx - lx], [hx - mx]]), yerr=np.nan_to_num([[my - ly], [hy - my]]),
                    fmt="o", color=color, capsize=3, label=arm)
        drawn = True
    return _finish(ax, "quality vs diversity (dots: seeds; markers: mean, 95% CI)", f"{y} (quality)",
                   drawn, xlabel=f"{x} (diversity)")


def plot_curves(runs, metric: str = "reward", labels: list[str] | None = None) -> Figure:
    """Training curves of several arms via :func:`compare`, smoothed over a tenth of the steps.

    ``runs``: (config, history) pairs, one per arm (an untrained arm with an empty history
    keeps the colours in step with the other ablation figures).
    """
    steps = max([len(_unpack(run)[1]) for run in runs] + [1])
    fig = compare(runs, metric, window=max(1, steps // 10), labels=labels)
    _crowded_legend(fig, fig.axes[0])
    return fig


def _crowded_legend(fig: Figure, *axes: Axes, most: int = 10) -> None:
    """Over ``most`` entries: one legend below the figure, in columns (in-axes ones squeeze the axes to nothing)."""
    handles, labels = axes[-1].get_legend_handles_labels()
    if len(labels) <= most:
        return
    for ax in fig.axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, -(-len(labels) // 4)), fontsize="x-small")


def _seed_frame(histories, metric: str) -> pd.DataFrame:
    """``(step x seed)`` values of ``metric`` from a list of histories (one per seed)."""
    frames = [_frame(h).assign(_seed=i) for i, h in enumerate(histories)
              if h is not None and len(h) and _series(_frame(h), metric) is not None]
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
    ax = _axes(ax, figsize=(7.2, 4.4))
    names = labels or list(runs)
    drawn = False
    for arm, color in _colors(names).items():
        curves = _seed_frame(runs.get(arm, []), metric)
        if curves.empty:
            continue
        curves = curves.rolling(max(1, len(curves) // 10), min_periods=1).mean()
        x = curves.index.to_numpy(dtype=float)
        ax.plot(x, curves.mean(axis=1), color=color, linewidth=2, label=f"{arm} ({curves.shape[1]} seeds)",
                marker="o" if len(x) < 20 else None, markersize=3)
        ax.fill_between(x, curves.min(axis=1), curves.max(axis=1), color=color, alpha=0.18, linewidth=0)
        drawn = True
    fig = _finish(ax, f"{metric} by arm: mean over seeds, band = range over seeds", metric, drawn)
    _crowded_legend(fig, ax)
    return fig


def plot_hacking(curves: dict, labels: list[str] | None = None) -> Figure:
    """Reward hacking: per arm, the gap between the discriminator's score and the true reward
    (left) and their correlation over each step's samples (right), mean over seeds, band = range.
    ``curves``: ``{arm: frame}`` with ``step, seed, gap, corr`` (:func:`lab.eval.diagnostics.hacking_curves`);
    ``labels``: the arms in colour order (as in the other ablation figures)."""
    fig, (left, right) = _subplots(1, 2, figsize=(11, 4))
    for arm, color in _colors(labels or list(curves)).items():
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
    _finish(left, "D score - true reward (fresh samples)", "gap", bool(curves))
    _finish(right, "corr(D score, true reward) per step", "Pearson r", bool(curves))
    _crowded_legend(fig, right)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (another suffix picks another format), creating folders; returns the path."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
