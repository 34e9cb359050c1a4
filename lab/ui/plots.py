"""Run history -> figures: one function per panel, a dashboard, run comparison, ``save``;
the helpers every figure of the kit shares (the ablation's figures: :mod:`lab.experiments.figures`).

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
def frame(history) -> pd.DataFrame:
    return history if isinstance(history, pd.DataFrame) else pd.DataFrame(history)


def series(history: pd.DataFrame, column: str) -> pd.Series | None:
    """The column as floats, or None when it is absent or all-NaN."""
    if column not in history:
        return None
    values = pd.to_numeric(history[column], errors="coerce").reset_index(drop=True)
    return None if values.isna().all() else values


def steps(history: pd.DataFrame) -> np.ndarray:
    if "step" in history:
        return pd.to_numeric(history["step"], errors="coerce").to_numpy()
    return np.arange(1, len(history) + 1)


def subplots(nrows=1, ncols=1, figsize=(6.4, 4), squeeze=True):
    """``plt.subplots``, closed in pyplot: the figure stays usable, but the notebook's
    end-of-cell flush does not show it a second time."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=squeeze)
    plt.close(fig)
    return fig, axes


def colors(names) -> dict:
    """One colour per name, in order (``C0``, ``C1``, ...), as :func:`compare` colours runs."""
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def axes_or_new(ax: Axes | None, figsize=(6.4, 4)) -> Axes:
    return subplots(figsize=figsize)[1] if ax is None else ax


def _smoothed(ax: Axes, x, values: pd.Series, window: int, label: str, color: str) -> None:
    """Raw values as a thin faint line, their rolling mean bold."""
    ax.plot(x, values, color=color, alpha=0.3, linewidth=0.8)
    ax.plot(x, values.rolling(max(1, window), min_periods=1).mean(), color=color,
            linewidth=2, label=label)


def finish(ax: Axes, title: str, ylabel: str, drawn: bool, *twins: Axes,
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
    ax, x = axes_or_new(ax), steps(history)
    left = {c: l for c, l in left.items() if series(history, c) is not None}
    right = {c: l for c, l in right.items() if series(history, c) is not None}
    twin = ax.twinx() if left and right else None
    for i, (column, label) in enumerate({**left, **right}.items()):
        (twin if twin and column in right else ax).plot(x, series(history, column),
                                                        color=f"C{i}", label=label)
    if twin:
        twin.set_ylabel(right_label)
    return finish(ax, title, left_label if left or not right else right_label,
                   bool(left or right), *([twin] if twin else []))


# --- panels --------------------------------------------------------------------------------
def reward_parts(history) -> list[str]:
    """The ``reward_<part>`` columns with data (``reward_std`` excluded)."""
    history = frame(history)
    return [c for c in history.columns if isinstance(c, str) and c.startswith("reward_")
            and c != "reward_std" and series(history, c) is not None]


def rewards(history, window: int = 5, ax: Axes | None = None) -> Figure:
    """Total reward (black) and each part: raw values faint, rolling mean over ``window`` steps bold."""
    history = frame(history)
    ax, x = axes_or_new(ax), steps(history)
    columns = (["reward"] if series(history, "reward") is not None else []) + reward_parts(history)
    for i, column in enumerate(columns):
        label = "total" if column == "reward" else column.removeprefix("reward_")
        _smoothed(ax, x, series(history, column), window, label,
                  "black" if column == "reward" else f"C{i}")
    return finish(ax, f"Reward (rolling mean over {window})", "reward", bool(columns))


def losses(history, ax: Axes | None = None) -> Figure:
    """Generator loss terms per step: total (bold), SFT, REINFORCE, KL; and the policy's
    entropy (dashed), which is a loss term only when ``entropy_coef > 0``."""
    history = frame(history)
    ax, x = axes_or_new(ax), steps(history)
    drawn = False
    for i, (column, label) in enumerate(LOSSES.items()):
        values = series(history, column)
        if values is not None:
            ax.plot(x, values, label=label, color="black" if column == "loss" else f"C{i}",
                    linewidth=2 if column == "loss" else 1.2, linestyle="--" if column == "entropy" else "-")
            drawn = True
    return finish(ax, "Generator losses", "loss", drawn)


def discriminator(history, ax: Axes | None = None) -> Figure:
    """Discriminator loss (left axis) and its predicted vs the true mean reward (right axis)."""
    history = frame(history)
    right = {"d_pred": "predicted (D)", "reward": "true reward"}
    if series(history, "d_pred") is None:  # the true reward alone says nothing about D
        right = {}
    return _two_scales(history, ax, "Discriminator", {"d_loss": "D loss"}, "D loss",
                       right, "mean reward")


def discriminator_scatter(data, ax: Axes | None = None) -> Figure:
    """Predicted (``d_pred``) vs true ``reward`` with the y = x line, and Pearson r in the title.

    ``data`` is a history (one point per step) or a samples frame (one point per sample).
    """
    data = frame(data)
    ax = axes_or_new(ax, figsize=(5, 5))
    pred, true = series(data, "d_pred"), series(data, "reward")
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
    return finish(ax, title, "predicted reward (D)", both, xlabel="true reward")


def lambda_schedule(history, ax: Axes | None = None) -> Figure:
    """The RL weight lambda per step."""
    history = frame(history)
    ax, values = axes_or_new(ax), series(history, "lambda")
    if values is not None:
        ax.plot(steps(history), values, color="C4")
        low, high = min(0.0, values.min()), max(0.0, values.max())
        pad = 0.05 * ((high - low) or 1.0)
        ax.set_ylim(low - pad, high + pad)  # 0 always in view
    return finish(ax, "RL weight λ", "λ", values is not None)


def length_diversity(history, ax: Axes | None = None) -> Figure:
    """Mean response length (left axis) and distinct-1/2 (right axis)."""
    return _two_scales(frame(history), ax, "Length and diversity",
                       {"response_len": "response length"}, "tokens",
                       {"distinct_1": "distinct-1", "distinct_2": "distinct-2"}, "distinct-n")


def timing(history, ax: Axes | None = None) -> Figure:
    """Seconds per step, stacked by phase, with the measured step total dashed."""
    history = frame(history)
    ax, x = axes_or_new(ax), steps(history)
    phases = {label: series(history, column) for column, label in PHASES.items()
              if series(history, column) is not None}
    if phases:
        ax.stackplot(x, *[v.fillna(0) for v in phases.values()], labels=list(phases), alpha=0.8)
    total = series(history, "step_time")
    if total is not None:
        ax.plot(x, total, "k--", linewidth=1, label="step total")
    return finish(ax, "Time per step", "seconds", bool(phases) or total is not None)


def dashboard(history, title: str | None = None) -> Figure:
    """Rewards, losses, lambda / discriminator, predicted-vs-true scatter, length and diversity."""
    history = frame(history)
    fig, axes = subplots(2, 3, figsize=(14, 8))
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
def unpack(run) -> tuple[dict, pd.DataFrame]:
    config, history = (getattr(run, "config", None), run.history) if hasattr(run, "history") else run
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    return config, frame(history)


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
    runs = [unpack(run) for run in runs]
    labels = labels or run_labels([config for config, _ in runs])
    _, ax = subplots(figsize=(8, 4.5))
    drawn = False
    for i, ((_, history), label) in enumerate(zip(runs, labels)):
        values = series(history, metric)
        if values is not None:
            _smoothed(ax, steps(history), values, window, label, f"C{i % 10}")
            drawn = True
    return finish(ax, f"{metric} by run (rolling mean over {window})", metric, drawn)


def token_heatmap(views: dict, tokens: list[list[str]], field: str = "weight", rows: int | None = 8) -> Figure:
    """One heatmap per view (name -> :class:`lab.eval.token_view.TokenView`, e.g. a loss type),
    side by side on the same rollouts: ``field`` per response token (rows: responses, at most
    ``rows``; columns: token positions), 0 at the centre of a red-blue scale; a clipped token
    (no gradient) is crossed. ``tokens``: each response's token texts, written in the cells."""
    names = list(views)
    shown = min(len(tokens), rows or len(tokens))
    _, axes = subplots(1, len(names), figsize=(3.3 * len(names), 0.45 * shown + 1.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = getattr(views[name], field)[:shown]  # (rows, T)
        centre = 1.0 if field == "ratio" else 0.0  # no change / no weight: white
        limit = np.nanmax(np.abs(values - centre)) or 1.0
        ax.imshow(values, cmap="RdBu", vmin=centre - limit, vmax=centre + limit, aspect="auto")
        clipped = views[name].clipped[:shown]
        for i, row in enumerate(tokens[:shown]):
            for t, text in enumerate(row[:values.shape[1]]):
                ax.text(t, i, text.replace("Ġ", " ").replace("Ċ", "\\n")[:6], ha="center", va="center", fontsize=5)
                if clipped[i, t] == 1:
                    ax.plot(t, i, "x", color="k", markersize=9, alpha=0.6)
        title = f"{name}: loss {views[name].loss:+.3f}" if field == "weight" else name
        ax.set(title=title, xlabel="response token", ylabel="response (prompt-major)" if ax is axes[0][0] else None)
        ax.set_yticks(range(shown))
    axes[0][0].figure.suptitle(f"{field} per token (x: clipped, no gradient)")
    return axes[0][0].figure


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG (another suffix picks another format), creating folders; returns the path."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
