"""lab.eval.stats: the per-prompt cluster bootstrap (coverage, pairing), the MDE, and reference numbers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lab.eval import stats


def crossed(rng, n_seeds, n_prompts, effect, seed_sd, prompt_sd, noise_sd):
    """Paired differences of a crossed design: effect + seed effect + prompt effect + cell noise."""
    return (effect + rng.normal(0, seed_sd, (n_seeds, 1)) + rng.normal(0, prompt_sd, (1, n_prompts))
            + rng.normal(0, noise_sd, (n_seeds, n_prompts)))


@pytest.mark.parametrize("n_seeds, seed_sd, prompt_sd, noise_sd", [
    (3, 0.02, 0.05, 0.10),  # the standard preset's shape: seeds, prompts and noise all matter
    (5, 0.05, 0.02, 0.05),  # the seeds carry the spread: the t stretch has to do the work
])
def test_bootstrap_interval_covers_the_true_difference_at_about_the_nominal_rate(n_seeds, seed_sd, prompt_sd,
                                                                                 noise_sd):
    rng = np.random.default_rng(7)
    effect, covered, repeats = 0.1, 0, 200
    for i in range(repeats):
        d = crossed(rng, n_seeds, 30, effect, seed_sd, prompt_sd, noise_sd)
        out = stats.paired_bootstrap(d, np.zeros_like(d), n_boot=300, seed=i)
        covered += out["low"] <= effect <= out["high"]
    assert 0.9 <= covered / repeats <= 0.99, covered / repeats


def test_paired_interval_is_narrower_than_the_unpaired_one_on_correlated_data():
    rng = np.random.default_rng(3)
    # both arms share each prompt's difficulty and each seed's luck: pairing cancels them
    shared = rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.15, (1, 40))
    ref = 0.5 + shared + rng.normal(0, 0.02, (3, 40))
    arm = ref + 0.03 + rng.normal(0, 0.02, (3, 40))
    paired = stats.paired_bootstrap(arm, ref, n_boot=1000, seed=0)
    unpaired = stats.paired_bootstrap(arm, ref, n_boot=1000, seed=0, paired=False)
    assert paired["diff"] == pytest.approx(unpaired["diff"])
    assert (paired["high"] - paired["low"]) * 3 < unpaired["high"] - unpaired["low"]
    assert paired["low"] > 0 > unpaired["low"]  # paired finds the +0.03 that unpaired cannot
    assert paired["mde"] < unpaired["mde"]


def test_vectorised_bootstrap_equals_an_explicit_loop_over_the_same_draws():
    rng = np.random.default_rng(0)
    arm, ref = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    arm[1, 2] = np.nan  # a missing cell is left out of the mean
    fast = stats.cluster_bootstrap(arm, ref, n_boot=50, seed=11)
    draws = np.random.default_rng(11)
    seeds, prompts = draws.integers(0, 3, (50, 3)), draws.integers(0, 5, (50, 5))
    slow = [np.nanmean([arm[s, p] for s in seeds[b] for p in prompts[b]])
            - np.mean([ref[s, p] for s in seeds[b] for p in prompts[b]]) for b in range(50)]
    np.testing.assert_allclose(fast, slow)
    within = stats.cluster_bootstrap(arm, None, n_boot=20, seed=5, prompts="within")
    draws = np.random.default_rng(5)
    seeds, prompts = draws.integers(0, 3, (20, 3)), draws.integers(0, 5, (20, 3, 5))
    slow = [np.nanmean([arm[seeds[b, j], p] for j in range(3) for p in prompts[b, j]]) for b in range(20)]
    np.testing.assert_allclose(within, slow)


def test_reference_numbers_mde_df_se_and_t_interval():
    # MDE = (z_0.975 + z_0.8) * SE = (1.959964 + 0.841621) * SE
    assert stats.mde(0.01) == pytest.approx(0.02801585, rel=1e-6)
    assert stats.mde(0.01, df=2) == pytest.approx((sps.t.ppf(0.975, 2) + sps.t.ppf(0.8, 2)) * 0.01)
    # df by hand: row means 1, 2 -> V_s = 0.5 / 2 (1 df); column means .5, 1.5, 2.5 -> V_p = 1 / 3 (2 df)
    vs, vp = 0.25, 1 / 3
    assert stats.effective_df([[0, 1, 2], [1, 2, 3]]) == pytest.approx((vs + vp) ** 2 / (vs ** 2 / 1 + vp ** 2 / 2))
    # one seed: the bootstrap SE of a mean is sqrt((P-1)/P) * sd / sqrt(P)
    x = np.array([[0.1, 0.4, 0.35, 0.8, 0.2, 0.55, 0.9, 0.05]])
    reps = stats.cluster_bootstrap(x, np.zeros_like(x), n_boot=40000, seed=1)
    assert reps.std() == pytest.approx(np.sqrt(7 / 8) * x.std(ddof=1) / np.sqrt(8), rel=0.02)
    # the per-seed column is scipy's paired t-interval
    a, b = np.array([0.52, 0.61, 0.58, 0.49]), np.array([0.50, 0.55, 0.57, 0.41])
    low, high = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert stats.paired_difference(a, b)[1:] == pytest.approx((low, high))
    d = a - b
    assert stats.seed_t_mde(d) == pytest.approx((sps.t.ppf(0.975, 3) + sps.t.ppf(0.8, 3)) * d.std(ddof=1) / 2)


def _frames(values: dict, nll: dict | None = None):
    """per-prompt and results frames from ``{arm: (S, P) semantic values}``."""
    rows, results = [], []
    for arm, x in values.items():
        for s, row in enumerate(np.asarray(x, dtype=float)):
            for p, v in enumerate(row):
                rows.append(dict(arm=arm, seed=s, decoding="greedy", prompt_id=p, semantic=v,
                                 nll=(nll or {}).get(arm, np.zeros_like(x))[s][p]))
            results.append(dict(arm=arm, seed=s, metric="greedy_semantic", value=row.mean()))
            results.append(dict(arm=arm, seed=s, metric="greedy_ppl",
                                value=float(np.exp(np.mean((nll or {}).get(arm, np.zeros_like(x))[s])))))
            results.append(dict(arm=arm, seed=s, metric="greedy_distinct_2", value=0.5 + 0.01 * s))
    return pd.DataFrame(rows), pd.DataFrame(results)


def test_paired_table_on_fixed_inputs():
    sft = [[0.5, 0.6, 0.7], [0.4, 0.6, 0.8]]
    hybrid = [[0.6, 0.6, 0.9], [0.5, 0.7, 0.8]]
    nll = {"sft": np.log([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]), "hybrid": np.log([[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]])}
    prompts, results = _frames({"sft": sft, "hybrid": hybrid}, nll)
    table = stats.paired_table(prompts, results, ["greedy_semantic", "greedy_ppl", "greedy_distinct_2"],
                               n_boot=500, seed=0).set_index("metric")
    row = table.loc["greedy_semantic"]
    assert row["diff"] == pytest.approx(0.5 / 6) and row["t_diff"] == pytest.approx(0.5 / 6)
    seed_diffs = np.array([0.3 / 3, 0.2 / 3])
    assert (row["t_low"], row["t_high"]) == pytest.approx(sps.ttest_1samp(seed_diffs, 0).confidence_interval())
    assert row["boot_low"] <= row["diff"] <= row["boot_high"] and (row["n_seeds"], row["n_prompts"]) == (2, 3)
    assert table.loc["greedy_ppl", "diff"] == pytest.approx(1.0)  # exp(mean nll): 3 - 2
    distinct = table.loc["greedy_distinct_2"]  # set-level: no per-prompt bootstrap, the t MDE stands in
    assert math.isnan(distinct["boot_low"]) and distinct["mde"] == distinct["t_mde"]
    again = stats.paired_table(prompts, results, ["greedy_semantic"], n_boot=500, seed=0)
    assert again.iloc[0]["boot_low"] == row["boot_low"]  # seeded
