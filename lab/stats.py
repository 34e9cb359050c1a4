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
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

CONFIDENCE = 0.95


def mean_ci(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(mean, low, high)``: the t-interval of the mean; NaN bounds with fewer than 2 values.

    >>> [round(x, 3) for x in mean_ci([1.0, 2.0, 3.0])]
    [2.0, -0.484, 4.484]
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
        mean, low, high = mean_ci(by_seed.to_numpy(), confidence)
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
