"""Run diagnostics from what the trainer logs: stability across seeds, collapse, reward hacking.

Everything here reads the files a run leaves (``history.csv``: one row per step;
``samples.csv``: one row per sampled response with ``step, reward, d_pred``, the critic's
prediction made *before* it trained on that sample, i.e. on fresh samples) and returns tables;
:mod:`lab.experiments.ablation` puts them in its report. Nothing here trains or loads a model.

**Windows.** Early and late behaviour are compared over the first and the last fifth of a
run's steps (at least two steps each from 4 steps on, one below; a one-step run has nothing to
compare and is never flagged). Short runs compare few samples: their flags are noisy.

**Collapse flags** (per run; thresholds in :data:`THRESHOLDS`):

- ``distinct_drop``: distinct-2 of the step's samples fell by more than 25% (relative) from
  the early to the late window: the policy repeats itself more;
- ``self_bleu_rise``: self-BLEU of the window's pooled samples, one per prompt, rose by more
  than 0.15 (answers to *different* prompts became alike: mode collapse; needs at least
  :data:`MIN_POOL` samples in each window);
- ``length_drift``: the mean response length changed by more than 50% (relative), up
  (rambling) or down (clipped answers);
- ``collapse``: any of them.

**Reward hacking** (per run, from ``samples.csv``): per step, the Pearson correlation between
the discriminator's score ``d_pred`` and the true reward over the step's samples, and their
gap ``d_pred - reward``. The run is flagged ``hacking`` when, over steps, (1) the mean D score
rises (OLS slope > 0, one-sided p < 0.05), (2) the gap rises too (slope > 0, one-sided p <
0.05: the true reward does not keep up) and (3) in the late window D over-rates the samples
(mean gap > 0, one-sided t-test over the window's steps, p < 0.05). Condition (3) keeps a
critic that is still *learning* the reward's level from below (its score and gap rise toward
0) from being called hacked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from lab.core.ngrams import self_bleu

THRESHOLDS = {"distinct_drop": 0.25, "self_bleu_rise": 0.15, "length_drift": 0.5}
WINDOW = 0.2  # the early / late window: this share of the run's steps
ALPHA = 0.05  # one-sided tests of the hacking flag
MIN_POOL = 8  # fewer answers in a window: no self-BLEU (too noisy to flag)


def windows(steps, fraction: float = WINDOW) -> tuple[list, list]:
    """The first and last ``fraction`` of the sorted distinct ``steps`` (at least two each from 4
    steps on, else one).

    >>> windows(range(1, 11)), windows(range(1, 5))
    (([1, 2], [9, 10]), ([1, 2], [3, 4]))
    """
    steps = sorted(set(steps))
    n = max(2 if len(steps) >= 4 else 1, int(round(len(steps) * fraction)))
    return steps[:n], steps[-n:]


def _window_mean(frame: pd.DataFrame, column: str, steps) -> float:
    if column not in frame:
        return math.nan
    values = pd.to_numeric(frame.loc[frame["step"].isin(steps), column], errors="coerce")
    return float(values.mean()) if values.notna().any() else math.nan


def _pooled_self_bleu(samples: pd.DataFrame | None, steps) -> float:
    if samples is None or samples.empty or "completion" not in samples:
        return math.nan
    pool = samples[samples["step"].isin(steps)]
    if "prompt_id" in pool:  # one answer per prompt: the k answers to one prompt are alike anyway
        pool = pool.drop_duplicates(["step", "prompt_id"])
    texts = pool["completion"].fillna("").astype(str).tolist()
    return float(np.mean(self_bleu(texts))) if len(texts) >= MIN_POOL else math.nan


def run_stability(history: pd.DataFrame, samples: pd.DataFrame | None = None,
                  thresholds: dict | None = None) -> dict:
    """Early vs late window of one run: reward, distinct-2, self-BLEU (of ``samples``' pooled
    completions), response length; the collapse flags (module docstring) as booleans.

    >>> h = pd.DataFrame({"step": range(1, 11), "reward": 0.5, "response_len": 10.0,
    ...                   "distinct_2": [0.9] * 5 + [0.3] * 5})
    >>> row = run_stability(h)
    >>> row["distinct_drop"], row["length_drift"], row["collapse"]
    (True, False, True)
    """
    limits = {**THRESHOLDS, **(thresholds or {})}
    row = dict(steps=0, reward_early=math.nan, reward_late=math.nan, distinct_2_early=math.nan,
               distinct_2_late=math.nan, self_bleu_early=math.nan, self_bleu_late=math.nan,
               length_early=math.nan, length_late=math.nan, distinct_2_drop=math.nan,
               distinct_drop=False, self_bleu_rise=False, length_drift=False, collapse=False)
    if history is None or history.empty or "step" not in history:
        return row
    steps = sorted(set(history["step"]))
    early, late = windows(steps)
    row["steps"] = len(steps)
    for name, column in (("reward", "reward"), ("distinct_2", "distinct_2"), ("length", "response_len")):
        row[f"{name}_early"], row[f"{name}_late"] = (_window_mean(history, column, w) for w in (early, late))
    if len(steps) < 2:
        return row
    row["self_bleu_early"], row["self_bleu_late"] = (_pooled_self_bleu(samples, w) for w in (early, late))
    d_early, d_late = row["distinct_2_early"], row["distinct_2_late"]
    if d_early == d_early and d_late == d_late and d_early > 0:
        row["distinct_2_drop"] = (d_early - d_late) / d_early  # relative; > 0: less varied late
        row["distinct_drop"] = bool(row["distinct_2_drop"] > limits["distinct_drop"])
    rise = row["self_bleu_late"] - row["self_bleu_early"]
    row["self_bleu_rise"] = bool(rise == rise and rise > limits["self_bleu_rise"])
    l_early, l_late = row["length_early"], row["length_late"]
    row["length_drift"] = bool(l_early == l_early and l_late == l_late and l_early > 0
                               and abs(l_late / l_early - 1) > limits["length_drift"])
    row["collapse"] = bool(row["distinct_drop"] or row["self_bleu_rise"] or row["length_drift"])
    return row


def hacking_curve(samples: pd.DataFrame) -> pd.DataFrame:
    """Per step: mean ``d_pred`` and ``reward``, their ``gap`` (D - reward) and Pearson ``corr``
    over the step's samples (NaN when either is constant or a step has one sample).

    >>> s = pd.DataFrame({"step": [1, 1, 1, 2, 2, 2], "reward": [0.1, 0.2, 0.3, 0.1, 0.2, 0.3],
    ...                   "d_pred": [0.0, 0.1, 0.2, 0.3, 0.2, 0.1]})
    >>> hacking_curve(s)[["step", "gap", "corr"]].round(3).values.tolist()
    [[1.0, -0.1, 1.0], [2.0, 0.0, -1.0]]
    """
    cols = ["step", "d_pred", "reward", "gap", "corr", "n"]
    if samples is None or samples.empty or not {"d_pred", "reward"} <= set(samples.columns):
        return pd.DataFrame(columns=cols)
    data = samples[["step", "d_pred", "reward"]].apply(pd.to_numeric, errors="coerce").dropna()

    def per_step(group: pd.DataFrame) -> pd.Series:
        d, r = group["d_pred"].to_numpy(), group["reward"].to_numpy()
        corr = float(np.corrcoef(d, r)[0, 1]) if len(d) > 1 and d.std() > 0 and r.std() > 0 else math.nan
        return pd.Series(dict(d_pred=d.mean(), reward=r.mean(), gap=(d - r).mean(), corr=corr, n=len(d)))

    rows = [dict(step=step, **per_step(group)) for step, group in data.groupby("step")]
    return pd.DataFrame(rows, columns=cols)


def _slope(x, y) -> tuple[float, float]:
    """OLS slope of ``y`` on ``x`` and its one-sided p-value for slope > 0 (NaN with < 3 points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan, math.nan
    if np.ptp(y) == 0:
        return 0.0, 1.0
    fit = sps.linregress(x, y)
    p = fit.pvalue / 2 if fit.slope > 0 else 1 - fit.pvalue / 2
    return float(fit.slope), float(p)


def run_hacking(samples: pd.DataFrame, alpha: float = ALPHA) -> dict:
    """The hacking test of one run (module docstring): slopes per step of D's score, the true
    reward and their gap (one-sided p-values for > 0), early / late correlation and gap, the flag.

    >>> steps = np.repeat(np.arange(1, 21), 4)
    >>> rising = pd.DataFrame({"step": steps, "reward": 0.5 + 0.01 * np.tile([-1, 1, -1, 1], 20),
    ...                        "d_pred": 0.5 + 0.02 * steps})  # D's score climbs, the reward does not
    >>> run_hacking(rising)["hacking"]
    True
    """
    curve = hacking_curve(samples)
    row = dict(steps=len(curve), d_slope=math.nan, d_p=math.nan, reward_slope=math.nan, reward_p=math.nan,
               gap_slope=math.nan, gap_p=math.nan, corr_early=math.nan, corr_late=math.nan,
               gap_early=math.nan, gap_late=math.nan, late_gap_p=math.nan, hacking=False)
    if curve.empty:
        return row
    early, late = windows(curve["step"])
    for name in ("corr", "gap"):
        row[f"{name}_early"], row[f"{name}_late"] = (_window_mean(curve, name, w) for w in (early, late))
    for name, column in (("d", "d_pred"), ("reward", "reward"), ("gap", "gap")):
        row[f"{name}_slope"], row[f"{name}_p"] = _slope(curve["step"], curve[column])
    late_gaps = curve.loc[curve["step"].isin(late), "gap"].to_numpy(dtype=float)
    if len(late_gaps) >= 2 and late_gaps.std(ddof=1) > 0:
        row["late_gap_p"] = float(sps.ttest_1samp(late_gaps, 0.0, alternative="greater").pvalue)
    elif len(late_gaps) >= 2:  # every late step has the same gap
        row["late_gap_p"] = 0.0 if late_gaps[0] > 0 else 1.0
    row["hacking"] = bool(row["d_p"] < alpha and row["gap_p"] < alpha and row["late_gap_p"] < alpha)
    return row


# --- an ablation's runs ------------------------------------------------------------------
def per_prompt(out: Path, results: pd.DataFrame) -> pd.DataFrame:
    """Every run's ``eval.csv`` stacked, with ``arm`` and ``seed`` columns."""
    frames = []
    for arm, seed in results[["arm", "seed"]].drop_duplicates().itertuples(index=False):
        path = Path(out) / "runs" / f"{arm}_seed{seed}" / "eval.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(arm=arm, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["arm", "seed", "decoding"])


def movement(prompts: pd.DataFrame, results: pd.DataFrame, base: str = "base", reference: str = "sft") -> pd.DataFrame:
    """Per arm: answer length (``greedy_words``, ``sampled_words``: means over seeds) and how far
    the policy moved: the share of greedy answers that differ from the untrained model's
    (``changed_vs_base``) and from ``reference``'s at the same seed (``changed_vs_sft``: the
    effect of everything that is not SFT), averaged over seeds."""
    greedy = prompts[prompts["decoding"] == "greedy"] if "decoding" in prompts else prompts
    greedy = greedy.assign(completion=greedy["completion"].fillna("").astype(str)) if "completion" in greedy else greedy
    answers = greedy.pivot_table(index=["arm", "seed"], columns="prompt_id", values="completion",
                                 aggfunc="first") if not greedy.empty else pd.DataFrame()
    base_answers = answers.loc[base].iloc[0] if base in answers.index.get_level_values(0) else None
    rows = []
    for arm in dict.fromkeys(results["arm"]):
        mine = results[results["arm"] == arm].groupby("metric")["value"].mean()
        row = dict(arm=arm, greedy_words=mine.get("greedy_words", math.nan),
                   sampled_words=mine.get("sampled_words", math.nan), changed_vs_base=math.nan,
                   changed_vs_sft=math.nan)
        if arm in answers.index.get_level_values(0):
            seeds = answers.loc[arm]
            if base_answers is not None:
                row["changed_vs_base"] = float((seeds.fillna("") != base_answers.fillna("")).mean(axis=1).mean())
            if arm != reference and reference in answers.index.get_level_values(0):
                ref = answers.loc[reference]
                common = seeds.index.intersection(ref.index)
                if len(common):
                    row["changed_vs_sft"] = float((seeds.loc[common].fillna("") != ref.loc[common].fillna(""))
                                                  .mean(axis=1).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def read_runs(out: str | Path, arms) -> dict[str, dict[int, dict]]:
    """``{arm: {seed: {"history": DataFrame | None, "samples": DataFrame | None}}}`` from
    ``out/runs/<arm>_seed<n>/`` (``history.csv``, ``samples.csv``); missing files are None."""
    runs: dict[str, dict[int, dict]] = {}
    for arm in arms:
        for folder in sorted(Path(out, "runs").glob(f"{arm}_seed*")):
            seed = folder.name[len(arm) + len("_seed"):]
            if not seed.isdigit():  # another arm whose name starts with this one's
                continue
            files = {name: folder / f"{name}.csv" for name in ("history", "samples")}
            runs.setdefault(arm, {})[int(seed)] = {
                name: pd.read_csv(path) if path.is_file() and path.stat().st_size else None
                for name, path in files.items()}
    return runs


def stability_table(runs: dict, results: pd.DataFrame | None = None, metric: str = "greedy_semantic",
                    thresholds: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_run, per_arm)``: :func:`run_stability` of every run, and per arm the spread of the
    reward curve across seeds (``curve_sd``: the across-seed standard deviation per step,
    averaged over steps), the late-window reward's mean and spread over seeds, the number of seeds
    flagged for each kind of collapse, and the worst seed (lowest ``metric`` in ``results``) with
    its held-out values of the key metrics. Arms without histories (``base``) are left out.
    """
    per_run = pd.DataFrame([dict(arm=arm, seed=seed, **run_stability(r["history"], r["samples"], thresholds))
                            for arm, seeds in runs.items() for seed, r in seeds.items() if r["history"] is not None])
    rows = []
    for arm, seeds in runs.items():
        if all(r["history"] is None for r in seeds.values()):  # not trained (base)
            continue
        histories = [r["history"].assign(seed=s) for s, r in seeds.items()
                     if r["history"] is not None and "reward" in r["history"]]
        row = dict(arm=arm, seeds=len(seeds), curve_sd=math.nan, reward_late=math.nan, reward_late_sd=math.nan)
        if histories:
            curves = pd.concat(histories).pivot_table(index="step", columns="seed", values="reward")
            row["curve_sd"] = float(curves.std(axis=1, ddof=1).mean()) if curves.shape[1] > 1 else math.nan
        mine = per_run[per_run["arm"] == arm] if not per_run.empty else per_run
        if not mine.empty:
            late = mine["reward_late"].dropna()
            row.update(reward_late=float(late.mean()) if len(late) else math.nan,
                       reward_late_sd=float(late.std(ddof=1)) if len(late) > 1 else math.nan)
            sampled = any(r["history"] is not None and {"distinct_2", "response_len"} & set(r["history"])
                          for r in seeds.values())  # sft samples nothing in training: no flags to raise
            for flag in ("distinct_drop", "self_bleu_rise", "length_drift", "collapse"):
                row[flag] = int(mine[flag].sum()) if sampled else math.nan
        if results is not None and not results.empty:
            by_seed = results[(results["arm"] == arm) & (results["metric"] == metric)].set_index("seed")["value"]
            if by_seed.notna().any():
                worst = int(by_seed.idxmin())
                values = results[(results["arm"] == arm) & (results["seed"] == worst)].set_index("metric")["value"]
                row.update(worst_seed=worst, **{f"worst_{m}": float(values[m]) for m in values.index
                                                if m.startswith(("greedy_", "sampled_"))})
        rows.append(row)
    return per_run, pd.DataFrame(rows)


def hacking_table(runs: dict, alpha: float = ALPHA) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_run, per_arm)``: :func:`run_hacking` of every run with samples, and per arm the
    means over seeds of the early / late correlation and gap, and the number of seeds flagged."""
    per_run = pd.DataFrame([dict(arm=arm, seed=seed, **run_hacking(r["samples"], alpha))
                            for arm, seeds in runs.items() for seed, r in seeds.items()
                            if r["samples"] is not None and "d_pred" in r["samples"]])
    if per_run.empty:
        return per_run, pd.DataFrame(columns=["arm", "seeds", "corr_early", "corr_late", "gap_early",
                                              "gap_late", "d_slope", "reward_slope", "hacking"])
    per_arm = per_run.groupby("arm", sort=False).agg(
        seeds=("seed", "size"), corr_early=("corr_early", "mean"), corr_late=("corr_late", "mean"),
        gap_early=("gap_early", "mean"), gap_late=("gap_late", "mean"), d_slope=("d_slope", "mean"),
        reward_slope=("reward_slope", "mean"), hacking=("hacking", "sum")).reset_index()
    return per_run, per_arm


def hacking_curves(runs: dict) -> dict[str, pd.DataFrame]:
    """Per arm, :func:`hacking_curve` of each seed stacked (with a ``seed`` column), for the figure."""
    curves = {}
    for arm, seeds in runs.items():
        frames = [hacking_curve(r["samples"]).assign(seed=s) for s, r in seeds.items() if r["samples"] is not None]
        frames = [f for f in frames if not f.empty]
        if frames:
            curves[arm] = pd.concat(frames, ignore_index=True)
    return curves
