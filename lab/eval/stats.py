"""Confidence intervals over seeds and paired differences between arms of an ablation.

The unit of replication is the *training run* (one seed): every held-out prompt of a run
is answered by the same trained model, so prompts are not independent repetitions of the
experiment. A test over prompts would treat one lucky run as dozens of samples and
overclaim. So:

- an arm's metric is its per-seed value (the mean over held-out prompts), and its 95%
  interval is the t-interval over seeds: ``mean +- t_{0.975, n-1} * sd / sqrt(n)``;
- an arm is compared with the reference arm (``sft``) by the **paired t-interval over
  seeds**: ``d_s = arm_s - sft_s`` for the seeds both arms ran (same seed: same data
  order, same initial adapter, same sampling seed at evaluation), then the t-interval of
  the mean of ``d_s``. The difference is "significant" at 95% when the interval excludes 0.

With one seed the interval is undefined (NaN): "single seed: no interval". With two seeds
``t_{0.975, 1} = 12.7``, so only very consistent, large differences reach significance.

The per-seed means throw away how consistently an arm differs *prompt by prompt*. Every arm
answers the same held-out prompts at the same seeds, so the ablation also pairs per (seed,
prompt) cell (:func:`paired_table`):

- :func:`cluster_bootstrap`: resample seeds (the clusters: a lucky run stays one draw), then
  prompts, and recompute the mean difference; vectorised, seeded;
- :func:`paired_bootstrap`: the percentile interval of those replicates, stretched by
  ``t_{df, 0.975} / z_{0.975}`` with Welch-Satterthwaite ``df`` (:func:`effective_df`), since 3
  seeds estimate a seed-to-seed spread poorly; covers at about the nominal rate in simulation
  (``tests/test_stats.py``);
- :func:`mde`: the minimum detectable difference at 80% power,
  ``MDE = (t_{df, 0.975} + t_{df, 0.80}) * SE`` (``2.80 * SE`` for large ``df``), with ``SE``
  the bootstrap's standard error (or the per-seed one, ``sd(d_s) / sqrt(n)`` with ``n - 1`` df,
  for the per-seed t-interval and for metrics without a per-prompt value, like distinct-n).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95


RANGES = {"semantic": (-1.0, 1.0), "bertscore": (-1.0, 1.0), "rouge_l": (0.0, 1.0), "bleu": (0.0, 1.0),
          "meteor": (0.0, 1.0), "distinct_1": (0.0, 1.0), "distinct_2": (0.0, 1.0), "self_bleu": (0.0, 1.0),
          "truthfulness": (0.0, 1.0), "mc1": (0.0, 1.0), "mc2": (0.0, 1.0)}  # a metric's possible values


def metric_range(metric: str) -> tuple[float, float] | None:
    """The values ``metric`` can take (``greedy_`` / ``sampled_`` prefixes allowed), None if unbounded.

    >>> metric_range("sampled_distinct_2"), metric_range("greedy_ppl")
    ((0.0, 1.0), None)
    """
    name = metric.split("_", 1)[1] if metric.startswith(("greedy_", "sampled_")) else metric
    return RANGES.get(name)


def mean_ci(values, confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """``(mean, low, high)``: the t-interval of the mean; NaN bounds with fewer than 2 values.
    ``bounds``: the values' range (:func:`metric_range`); the interval is cut to it, since the mean
    cannot leave it (with 2 seeds a t-interval of a [0, 1] metric can reach from -0.2 to 1.3).

    >>> [round(x, 3) for x in mean_ci([1.0, 2.0, 3.0])]
    [2.0, -0.484, 4.484]
    >>> [round(x, 3) for x in mean_ci([0.2, 0.9], bounds=(0.0, 1.0))]
    [0.55, 0.0, 1.0]
    >>> mean_ci([0.5])
    (0.5, nan, nan)
    """
    x = np.asarray([v for v in values if v == v], dtype=float)  # NaN values dropped
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    sem = float(x.std(ddof=1)) / math.sqrt(len(x))
    if sem == 0:  # every seed gave the same value: a zero-width interval
        return mean, mean, mean
    low, high = sps.t.interval(confidence, len(x) - 1, loc=mean, scale=sem)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, float(low), float(high)


def paired_difference(a, b, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``a_i - b_i``: the paired t-interval (pairs with a NaN dropped).

    >>> [round(x, 3) for x in paired_difference([0.5, 0.7, 0.6], [0.4, 0.5, 0.5])]
    [0.133, -0.01, 0.277]
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs one value of each arm per pair, got {a.shape} and {b.shape}")
    return mean_ci(a - b, confidence)


def significant(low: float, high: float) -> bool:
    """True when the interval ``[low, high]`` excludes 0 (False when it is undefined)."""
    return bool(low > 0 or high < 0)


def summarize_results(results: pd.DataFrame, reference: str = "sft", confidence: float = CONFIDENCE,
                      unpaired: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per arm and metric: mean and interval over seeds, and the paired difference to ``reference``.

    ``results``: long format, columns ``arm, seed, metric, value``. Returns one row per
    (arm, metric) with ``n_seeds, mean, ci_low, ci_high, diff, diff_low, diff_high,
    n_pairs, significant``; the difference columns are NaN for the reference arm itself,
    when the reference arm is absent, and for the metrics in ``unpaired``.
    """
    wide = results.pivot_table(index=["arm", "metric"], columns="seed", values="value", aggfunc="mean")
    rows = []
    for (arm, metric), by_seed in wide.iterrows():
        mean, low, high = mean_ci(by_seed.to_numpy(), confidence, metric_range(metric))  # within its range
        row = dict(arm=arm, metric=metric, n_seeds=int(by_seed.notna().sum()), mean=mean,
                   ci_low=low, ci_high=high, diff=math.nan, diff_low=math.nan, diff_high=math.nan,
                   n_pairs=0, significant=False)
        if arm != reference and metric not in unpaired and (reference, metric) in wide.index:
            ref = wide.loc[(reference, metric)]
            both = by_seed.notna() & ref.notna()
            diff, d_low, d_high = paired_difference(by_seed[both].to_numpy(), ref[both].to_numpy(), confidence)
            row.update(diff=diff, diff_low=d_low, diff_high=d_high, n_pairs=int(both.sum()),
                       significant=significant(d_low, d_high))
        rows.append(row)
    order = list(dict.fromkeys(results["arm"]))  # arms in the order they were run
    out = pd.DataFrame(rows)
    out["arm"] = pd.Categorical(out["arm"], categories=order, ordered=True)
    return out.sort_values(["arm", "metric"]).reset_index(drop=True).astype({"arm": str})


# --- per-prompt paired statistics: the cluster bootstrap and the minimum detectable difference --
PROMPT_DRAWS = ("shared", "within")


def _draws(rng: np.random.Generator, n_seeds: int, n_prompts: int, n_boot: int, prompts: str):
    """Bootstrap indices: seeds ``(B, S)``; prompts ``(B, P)`` (``shared``) or ``(B, S, P)`` (``within``)."""
    if prompts not in PROMPT_DRAWS:
        raise ValueError(f"prompts={prompts!r}: choose one of {', '.join(PROMPT_DRAWS)}")
    seeds = rng.integers(0, n_seeds, (n_boot, n_seeds))  # (B, S)
    shape = (n_boot, n_prompts) if prompts == "shared" else (n_boot, n_seeds, n_prompts)
    return seeds, rng.integers(0, n_prompts, shape)


def _resampled_means(x: np.ndarray, seeds: np.ndarray, prompt_idx: np.ndarray) -> np.ndarray:
    """Mean of the drawn cells of ``x`` (S, P) per resample, NaN cells left out: ``(B,)``."""
    values, present = np.nan_to_num(x), (~np.isnan(x)).astype(float)
    pick = (seeds[:, :, None], prompt_idx[:, None, :] if prompt_idx.ndim == 2 else prompt_idx)
    total, count = values[pick].sum(axis=(1, 2)), present[pick].sum(axis=(1, 2))  # (B,), (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / count


def cluster_bootstrap(arm, ref=None, n_boot: int = 2000, seed: int = 0, prompts: str = "shared",
                      paired: bool = True, transform=None) -> np.ndarray:
    """``(B,)`` bootstrap replicates of ``f(mean arm) - f(mean ref)`` (``f``: ``transform``, default
    the identity; without ``ref``: of ``f(mean arm)``).

    ``arm``, ``ref``: arrays ``(S seeds, P prompts)``, one value per (seed, prompt), NaN where
    missing; row ``s`` of both is the same seed and column ``p`` the same prompt. Each replicate
    draws S seeds with replacement, then P prompts with replacement: one draw shared by the drawn
    seeds (``prompts="shared"``: every seed answers the same prompts, a crossed design, so the
    prompt-to-prompt variation of the difference stays in the interval) or a draw per seed
    (``"within"``: the textbook nested bootstrap, which treats prompts as nested in seeds and
    under-covers when some prompts favour an arm in every seed). ``paired``: ``ref`` is
    resampled at the same cells as ``arm`` (False: its own draws, the unpaired comparison).
    Vectorised: one ``(B, S, P)`` gather per arm.

    >>> reps = cluster_bootstrap(np.ones((2, 3)), np.zeros((2, 3)), n_boot=5)
    >>> reps.tolist()
    [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    arm = np.asarray(arm, dtype=float)
    rng = np.random.default_rng(seed)
    f = transform or (lambda v: v)
    seeds, prompt_idx = _draws(rng, *arm.shape, n_boot, prompts)
    out = f(_resampled_means(arm, seeds, prompt_idx))
    if ref is not None:
        ref = np.asarray(ref, dtype=float)
        if ref.shape != arm.shape:
            raise ValueError(f"cluster_bootstrap needs arm and ref of one shape (seeds, prompts), got "
                             f"{arm.shape} and {ref.shape}")
        if not paired:
            seeds, prompt_idx = _draws(rng, *ref.shape, n_boot, prompts)
        out = out - f(_resampled_means(ref, seeds, prompt_idx))
    return out


def _components(x: np.ndarray, prompts: str) -> list[tuple[float, float]]:
    """``[(variance, degrees of freedom)]`` of the mean of ``x`` (S, P) at the seed level and the
    prompt level, as the bootstrap draws them (the cell noise counted at both levels)."""
    n_seeds, n_prompts = x.shape
    parts = []
    if n_seeds > 1:
        rows = np.nanmean(x, axis=1)
        parts.append((float(np.nanvar(rows, ddof=1)) / n_seeds, n_seeds - 1))
    if prompts == "shared":
        cols = np.nanmean(x, axis=0)
        cols = cols[~np.isnan(cols)]
        parts.append((float(np.var(cols, ddof=1)) / len(cols), len(cols) - 1))
    else:
        within = np.nanvar(x, axis=1, ddof=1)  # (S,)
        parts.append((float(np.nanmean(within)) / (n_seeds * n_prompts), n_seeds * (n_prompts - 1)))
    return parts


def effective_df(*matrices, prompts: str = "shared") -> float:
    """Welch-Satterthwaite degrees of freedom of the mean of the cells: the seed level has
    ``S - 1``, the prompt level ``P - 1`` (``within``: ``S (P - 1)``), weighted by their share of
    the variance: ``df = (sum V_i)^2 / sum(V_i^2 / df_i)``. Few seeds and a large seed-to-seed
    spread give few degrees of freedom (a wide interval); a prompt-dominated spread gives many.
    Several matrices (the two arms of an unpaired comparison) add their components.

    >>> round(effective_df(np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]])), 2)  # V_s = 0.25, V_p = 1/3
    2.88
    """
    parts = [p for x in matrices for p in _components(np.asarray(x, dtype=float), prompts) if p[1] > 0]
    total = sum(v for v, _ in parts)
    if not parts or total <= 0:
        return math.inf
    return total ** 2 / sum(v ** 2 / df for v, df in parts)


def variance_components(x) -> tuple[float, float, float]:
    """``(sd_seed, sd_prompt, sd_cell)`` of an (S, P) matrix of paired differences, S, P >= 2, by the
    two-way model ``x_sp = mu + a_s + b_p + e_sp`` (method of moments, negative variances as 0).

    >>> [round(v, 3) for v in variance_components([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]])]
    [0.707, 1.0, 0.0]
    """
    x = np.asarray(x, dtype=float)
    n_seeds, n_prompts = x.shape
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    residual = x - rows[:, None] - cols[None, :] + x.mean()
    cell = float((residual ** 2).sum()) / ((n_seeds - 1) * (n_prompts - 1))
    seed = max(0.0, float(rows.var(ddof=1)) - cell / n_prompts)
    prompt = max(0.0, float(cols.var(ddof=1)) - cell / n_seeds)
    return math.sqrt(seed), math.sqrt(prompt), math.sqrt(cell)


def planned_mde(sd_seed: float, sd_prompt: float, sd_cell: float, seeds: int, prompts: int,
                confidence: float = CONFIDENCE, power: float = 0.8) -> float:
    """The MDE a design of ``seeds`` x ``prompts`` should give for paired differences with these
    :func:`variance_components` (from a pilot), before it runs: the variance of the mean at the seed
    level ``sd_seed^2 / S + sd_cell^2 / (S P)`` and at the prompt level ``sd_prompt^2 / P +
    sd_cell^2 / (S P)`` (the cell noise at both levels, as :func:`paired_bootstrap` draws it), with
    their Welch-Satterthwaite ``df``.

    >>> round(planned_mde(0.01, 0.05, 0.05, seeds=5, prompts=126), 4)
    0.0207
    """
    cell = sd_cell ** 2 / (seeds * prompts)
    parts = [(sd_seed ** 2 / seeds + cell, seeds - 1), (sd_prompt ** 2 / prompts + cell, prompts - 1)]
    total = sum(v for v, _ in parts)
    df = total ** 2 / sum(v ** 2 / d for v, d in parts if d > 0)
    return mde(math.sqrt(total), df, confidence, power)


def mde(se: float, df: float = math.inf, confidence: float = CONFIDENCE, power: float = 0.8) -> float:
    """Minimum detectable difference of a two-sided test at level ``1 - confidence`` with ``power``:
    ``MDE = (t_{df, 1 - alpha/2} + t_{df, power}) * SE`` (normal quantiles when ``df`` is infinite:
    ``(1.960 + 0.842) * SE = 2.80 * SE``). A true difference this large is found significant in
    ``power`` of the repetitions of the same experiment; a smaller one usually is not.

    >>> round(mde(0.01), 5)
    0.02802
    >>> round(mde(0.01, df=2), 4)  # 3 seeds, seed-dominated: t quantiles
    0.0536
    """
    if se != se or df != df or df <= 0:
        return math.nan
    dist = sps.norm if math.isinf(df) else sps.t(df)
    return float((dist.ppf(1 - (1 - confidence) / 2) + dist.ppf(power)) * se)


def paired_bootstrap(arm, ref, n_boot: int = 2000, seed: int = 0, confidence: float = CONFIDENCE,
                     power: float = 0.8, prompts: str = "shared", paired: bool = True, transform=None) -> dict:
    """The difference ``f(mean arm) - f(mean ref)`` over (seed, prompt) cells with its 95% interval
    from :func:`cluster_bootstrap` and the minimum detectable difference (:func:`mde`).

    Interval: the bootstrap percentile interval, its half-widths stretched by
    ``t_{df, 0.975} / z_{0.975}`` with ``df`` from :func:`effective_df`: with 3 seeds and a spread
    that comes mostly from seeds, a plain percentile interval covers the truth only ~77% of the
    time (the bootstrap cannot know that 3 seeds estimate their spread poorly); stretched, ~91%.
    When the prompts carry the spread, ``df`` is large and the stretch vanishes. Counting the
    cell noise at both levels makes the interval slightly conservative (wider than needed).
    ``SE``: the standard deviation of the replicates. Returns ``diff, low, high, se, df, mde,
    n_seeds, n_prompts``.
    """
    arm, ref = np.asarray(arm, dtype=float), np.asarray(ref, dtype=float)
    f = transform or (lambda v: v)
    n_seeds, n_prompts = arm.shape
    out = dict(diff=math.nan, low=math.nan, high=math.nan, se=math.nan, df=math.nan, mde=math.nan,
               n_seeds=n_seeds, n_prompts=n_prompts)
    if arm.size == 0 or np.isnan(arm).all() or np.isnan(ref).all():
        return out
    diff = float(f(np.nanmean(arm)) - f(np.nanmean(ref)))
    reps = cluster_bootstrap(arm, ref, n_boot, seed, prompts, paired, transform)
    reps = reps[np.isfinite(reps)]
    df = effective_df(arm - ref, prompts=prompts) if paired else effective_df(arm, ref, prompts=prompts)
    z = sps.norm.ppf(1 - (1 - confidence) / 2)
    stretch = (sps.t.ppf(1 - (1 - confidence) / 2, df) if not math.isinf(df) else z) / z
    q_low, q_high = np.quantile(reps, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    se = float(reps.std(ddof=1))
    out.update(diff=diff, low=float(diff - (diff - q_low) * stretch), high=float(diff + (q_high - diff) * stretch),
               se=se, df=float(df), mde=mde(se, df, confidence, power))
    return out


def seed_t_mde(differences, confidence: float = CONFIDENCE, power: float = 0.8) -> float:
    """The MDE of the per-seed paired t-test: :func:`mde` with ``SE = sd(d_s) / sqrt(n)``, ``n - 1`` df."""
    d = np.asarray([v for v in differences if v == v], dtype=float)
    if len(d) < 2:
        return math.nan
    return mde(float(d.std(ddof=1)) / math.sqrt(len(d)), len(d) - 1, confidence, power)


# per-prompt values behind a results.csv metric: (eval.csv column, transform of the pooled mean)
PER_PROMPT = {"ppl": ("nll", np.exp)}
SET_LEVEL = ("distinct_1", "distinct_2")  # a property of a set of answers: no per-prompt value


def prompt_matrix(per_prompt: pd.DataFrame, arm: str, decoding: str, column: str, seeds, prompt_ids) -> np.ndarray:
    """``(S, P)`` values of ``column`` for ``arm`` and ``decoding`` (NaN where absent).

    ``per_prompt``: long format with columns ``arm, seed, decoding, prompt_id`` and the metric
    columns of :func:`lab.evaluate.evaluate_model` (every run's ``eval.csv`` stacked)."""
    part = per_prompt[(per_prompt["arm"] == arm) & (per_prompt["decoding"] == decoding)]
    wide = part.pivot_table(index="seed", columns="prompt_id", values=column, aggfunc="mean", dropna=False)
    return wide.reindex(index=list(seeds), columns=list(prompt_ids)).to_numpy(dtype=float)


def paired_table(per_prompt: pd.DataFrame, results: pd.DataFrame, metrics, reference: str = "sft",
                 n_boot: int = 2000, seed: int = 0, confidence: float = CONFIDENCE, power: float = 0.8,
                 prompts: str = "shared") -> pd.DataFrame:
    """Per arm (not ``reference``) and metric of ``metrics`` (``<decoding>_<name>``, as in
    ``results.csv``): the paired difference vs ``reference`` two ways.

    - ``diff, boot_low, boot_high, boot_se, df, mde``: :func:`paired_bootstrap` over the seeds both
      arms ran and the prompts both answered (``ppl``: ``exp(mean nll)`` of the resampled cells;
      ``distinct_n`` has no per-prompt value: NaN);
    - ``t_diff, t_low, t_high, t_mde``: the per-seed paired t-interval (:func:`paired_difference`)
      of the per-seed values in ``results`` (``arm, seed, metric, value``), and its MDE.

    ``mde`` is the bootstrap one where there is one, else the t one; ``significant``: the
    bootstrap interval (else the t-interval) excludes 0. Seeded: the same inputs give the same table.
    """
    wide = results.pivot_table(index=["arm", "metric"], columns="seed", values="value", aggfunc="mean")
    arms = [a for a in dict.fromkeys(results["arm"]) if a != reference]
    rows = []
    for arm in arms:
        for metric in metrics:
            if (arm, metric) not in wide.index or (reference, metric) not in wide.index:
                continue
            a, r = wide.loc[(arm, metric)], wide.loc[(reference, metric)]
            both = a.notna() & r.notna()
            t_diff, t_low, t_high = paired_difference(a[both].to_numpy(), r[both].to_numpy(), confidence)
            row = dict(arm=arm, metric=metric, n_seeds=int(both.sum()), n_prompts=0, diff=math.nan,
                       boot_low=math.nan, boot_high=math.nan, boot_se=math.nan, df=math.nan, mde=math.nan,
                       t_diff=t_diff, t_low=t_low, t_high=t_high,
                       t_mde=seed_t_mde(a[both].to_numpy() - r[both].to_numpy(), confidence, power))
            decoding, name = metric.split("_", 1)
            column, transform = PER_PROMPT.get(name, (name, None))
            if name not in SET_LEVEL and column in per_prompt:
                seeds = [s for s in both.index[both]]
                ids = sorted(set(per_prompt.loc[per_prompt["arm"] == arm, "prompt_id"])
                             & set(per_prompt.loc[per_prompt["arm"] == reference, "prompt_id"]))
                x = prompt_matrix(per_prompt, arm, decoding, column, seeds, ids)
                y = prompt_matrix(per_prompt, reference, decoding, column, seeds, ids)
                scored = ~(np.isnan(x).all(axis=0) | np.isnan(y).all(axis=0))  # mc2: only the factual prompts
                x, y, ids = x[:, scored], y[:, scored], [i for i, keep in zip(ids, scored) if keep]
                boot = paired_bootstrap(x, y, n_boot, seed, confidence, power, prompts, transform=transform)
                row.update(n_prompts=len(ids), diff=boot["diff"], boot_low=boot["low"], boot_high=boot["high"],
                           boot_se=boot["se"], df=boot["df"], mde=boot["mde"])
            if row["mde"] != row["mde"]:
                row["mde"] = row["t_mde"]
            low, high = (row["boot_low"], row["boot_high"]) if row["boot_low"] == row["boot_low"] \
                else (t_low, t_high)
            row["significant"] = significant(low, high)
            rows.append(row)
    return pd.DataFrame(rows, columns=["arm", "metric", "n_seeds", "n_prompts", "diff", "boot_low", "boot_high",
                                       "boot_se", "df", "mde", "t_diff", "t_low", "t_high", "t_mde", "significant"])
