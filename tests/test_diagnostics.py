"""lab.eval.diagnostics on synthetic histories and samples: collapse flags and the reward-hacking test."""

import numpy as np
import pandas as pd
import pytest

from lab.eval import diagnostics


def history(steps=20, distinct=None, length=None, reward=None):
    return pd.DataFrame({"step": np.arange(1, steps + 1),
                         "reward": 0.5 if reward is None else reward,
                         "distinct_2": 0.8 if distinct is None else distinct,
                         "response_len": 12.0 if length is None else length})


def samples(d_pred, reward, per_step=4, noise=0.02, seed=0):
    """``per_step`` samples a step: the given per-step means plus seeded noise."""
    rng = np.random.default_rng(seed)
    steps = np.repeat(np.arange(1, len(d_pred) + 1), per_step)
    return pd.DataFrame({"step": steps, "d_pred": np.repeat(d_pred, per_step) + rng.normal(0, noise, len(steps)),
                         "reward": np.repeat(reward, per_step) + rng.normal(0, noise, len(steps)),
                         "completion": [f"answer {i}" for i in range(len(steps))]})


def test_collapse_flag_fires_on_a_distinct_2_drop_and_not_on_a_steady_run():
    dropping = diagnostics.run_stability(history(distinct=np.linspace(0.8, 0.3, 20)))
    assert dropping["distinct_drop"] and dropping["collapse"] and dropping["distinct_2_drop"] > 0.5
    steady = diagnostics.run_stability(history(distinct=0.8 + 0.01 * np.sin(np.arange(20))))
    assert not steady["collapse"] and abs(steady["distinct_2_drop"]) < 0.05
    mild = diagnostics.run_stability(history(distinct=np.linspace(0.8, 0.7, 20)))  # -12%: under the threshold
    assert not mild["distinct_drop"]
    assert diagnostics.run_stability(history(distinct=np.linspace(0.8, 0.7, 20)),
                                     thresholds={"distinct_drop": 0.05})["distinct_drop"]


def test_length_drift_and_self_bleu_rise_flags():
    assert diagnostics.run_stability(history(length=np.linspace(10, 30, 20)))["length_drift"]
    assert not diagnostics.run_stability(history(length=np.linspace(10, 12, 20)))["length_drift"]
    varied = [f"word{i} other{i} more{i} last{i}" for i in range(16)]  # no word shared between answers
    texts = varied + ["the same answer every time"] * 8  # the last 2 steps: one answer to every prompt
    sample = pd.DataFrame({"step": np.repeat(np.arange(1, 7), 4), "prompt_id": np.arange(24), "completion": texts})
    row = diagnostics.run_stability(history(steps=6), sample)
    assert row["self_bleu_late"] == 1.0 and row["self_bleu_early"] < 0.3
    assert row["self_bleu_rise"] and row["collapse"]
    one_prompt = sample.assign(prompt_id=sample["step"])  # k = 4 answers to one prompt a step: 2 per window
    assert np.isnan(diagnostics.run_stability(history(steps=6), one_prompt)["self_bleu_late"])  # too few to tell
    one_step = diagnostics.run_stability(history(steps=1, distinct=0.1))
    assert not one_step["collapse"]  # nothing to compare


def test_hacking_flag_fires_when_d_rises_and_the_true_reward_does_not():
    steps = np.arange(1, 21)
    flat = np.full(20, 0.5)
    hacked = diagnostics.run_hacking(samples(0.5 + 0.02 * steps, flat))
    assert hacked["hacking"] and hacked["d_slope"] > 0 and abs(hacked["reward_slope"]) < 0.005
    assert hacked["gap_late"] > hacked["gap_early"]
    assert not diagnostics.run_hacking(samples(flat, flat))["hacking"]  # nothing moves
    together = diagnostics.run_hacking(samples(0.5 + 0.02 * steps, 0.5 + 0.02 * steps))
    assert not together["hacking"] and together["d_slope"] > 0  # the reward keeps up: not hacking
    learning = diagnostics.run_hacking(samples(0.5 - 0.5 * np.exp(-steps / 4), flat))
    assert not learning["hacking"]  # a critic learning the reward's level from below
    assert diagnostics.run_hacking(samples(flat[:2], flat[:2]))["hacking"] is False  # too few steps to tell


def test_per_step_correlation_and_gap():
    rng = np.random.default_rng(1)
    reward = rng.uniform(0, 1, 40)
    frame = pd.DataFrame({"step": np.repeat([1, 2], 20), "reward": reward,
                          "d_pred": np.r_[reward[:20] + 0.1, rng.uniform(0, 1, 20)]})
    curve = diagnostics.hacking_curve(frame).set_index("step")
    assert curve.loc[1, "corr"] > 0.99 and curve.loc[1, "gap"] == pytest.approx(0.1)
    assert abs(curve.loc[2, "corr"]) < 0.6


def test_tables_over_arms_and_seeds_count_flags_and_find_the_worst_seed():
    steps = np.arange(1, 21)
    runs = {
        "rl": {s: {"history": history(distinct=np.linspace(0.8, 0.2 if s else 0.78, 20), reward=0.4 + 0.01 * s),
                   "samples": samples(0.5 + 0.02 * steps, np.full(20, 0.5), seed=s)} for s in range(3)},
        "sft": {s: {"history": pd.DataFrame({"step": steps, "loss_sft": 1.0}), "samples": None} for s in range(3)},
    }
    results = pd.DataFrame([dict(arm=a, seed=s, metric=m, value=v) for a in ("rl", "sft") for s in range(3)
                            for m, v in (("greedy_semantic", 0.5 - 0.1 * (s == 2)), ("greedy_words", 10.0))])
    per_run, per_arm = diagnostics.stability_table(runs, results)
    rl = per_arm.set_index("arm").loc["rl"]
    assert rl["collapse"] == 2 and rl["distinct_drop"] == 2 and rl["worst_seed"] == 2
    assert rl["worst_greedy_semantic"] == 0.4 and rl["curve_sd"] > 0
    assert len(per_run) == 6
    per_run, per_arm = diagnostics.hacking_table(runs)
    assert list(per_arm["arm"]) == ["rl"] and per_arm.iloc[0]["hacking"] == 3
    assert set(diagnostics.hacking_curves(runs)) == {"rl"}


def test_read_runs_reads_a_folder_and_keeps_arms_apart(tmp_path):
    for name in ("hybrid_seed0", "hybrid_seed1", "hybrid_loo_seed0"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        history(steps=3).to_csv(tmp_path / "runs" / name / "history.csv", index=False)
    runs = diagnostics.read_runs(tmp_path, ["hybrid", "hybrid_loo"])
    assert sorted(runs["hybrid"]) == [0, 1] and sorted(runs["hybrid_loo"]) == [0]
    assert runs["hybrid"][0]["samples"] is None and len(runs["hybrid"][0]["history"]) == 3
