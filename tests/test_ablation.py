"""The ablation runner on tiny-gpt2: report files, expected rows, resume, settings checks, CLI."""

import json

import pandas as pd
import pytest

from lab import ablation, evaluate

TINY = dict(model="tiny-gpt2", device="cpu", prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    logs = []
    ablation.run_ablation(out, arms=["base", "sft"], seeds=2, steps=1, eval_limit=4,
                          log=logs.append, **TINY)
    return out, logs


def test_writes_results_summary_report_and_plots(report):
    out, logs = report
    for name in ("results.csv", "summary.csv", "report.md", "metrics.png", "quality_diversity.png",
                 "curves_reward.png", "curves_loss_sft.png", "config_sft.json", "config_base.json",
                 "ablation.json", "runs/sft_seed1/eval.csv", "runs/sft_seed0/history.csv"):
        assert (out / name).is_file(), name
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["arm", "seed", "metric", "value"]
    per_run = 2 * len(evaluate.SUMMARY_METRICS) + 2  # two decodings + train/eval seconds
    assert len(results) == 2 * 2 * per_run
    assert set(results.groupby(["arm", "seed"]).size()) == {per_run}
    assert {"greedy_semantic", "sampled_distinct_2", "sampled_ppl", "train_seconds"} <= set(results["metric"])
    assert len(logs) == 2 * 2 + 1 and "done" in logs[-1]


def test_summary_has_intervals_and_paired_differences_vs_sft(report):
    out, _ = report
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["arm"]) == {"base", "sft"}
    row = summary.set_index(["arm", "metric"]).loc[("base", "sampled_semantic")]
    assert row["n_seeds"] == 2 and row["n_pairs"] == 2
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert summary.set_index(["arm", "metric"]).loc[("sft", "sampled_semantic"), "diff"] != \
        summary.set_index(["arm", "metric"]).loc[("sft", "sampled_semantic"), "diff"]  # NaN for sft itself


def test_base_greedy_is_shared_across_seeds_and_sampled_differs(report):
    out, _ = report
    first, second = (pd.read_csv(out / f"runs/base_seed{s}/eval.csv").fillna("") for s in (0, 1))
    greedy = first["decoding"] == "greedy"
    assert first.loc[greedy, "completion"].tolist() == second.loc[greedy, "completion"].tolist()


def test_report_states_setup_and_does_not_overclaim(report):
    text = (report[0] / "report.md").read_text()
    assert "tiny-gpt2" in text and "seeds: 0, 1" in text and "B = 2" in text and "k = 2" in text
    assert "Difference vs sft" in text and "4 prompts, the held-out split of bundled" in text
    assert "With 2 seeds the intervals are wide" in text


def test_rerun_skips_done_pairs_and_refuses_other_settings(report):
    out, _ = report
    logs = []
    ablation.run_ablation(out, arms=["base", "sft"], seeds=2, steps=1, eval_limit=4, log=logs.append, **TINY)
    assert sum("skipped" in line for line in logs) == 4
    assert len(pd.read_csv(out / "results.csv")) == 2 * 2 * (2 * len(evaluate.SUMMARY_METRICS) + 2)
    with pytest.raises(ValueError, match="steps"):
        ablation.run_ablation(out, arms=["sft"], seeds=1, steps=2, eval_limit=4, log=logs.append, **TINY)


def test_conclusions_single_seed_and_significant_cases():
    summary = pd.DataFrame([
        dict(arm="hybrid", metric="sampled_semantic", mean=0.5, n_pairs=1, diff=0.1, diff_low=float("nan"),
             diff_high=float("nan"), significant=False)])
    assert "Single seed: no interval" in ablation.conclusions(summary)[0]
    summary = pd.DataFrame([
        dict(arm="hybrid", metric="sampled_semantic", mean=0.6, n_pairs=5, diff=0.1, diff_low=0.02,
             diff_high=0.18, significant=True),
        dict(arm="rl", metric="sampled_semantic", mean=0.4, n_pairs=5, diff=-0.1, diff_low=-0.3, diff_high=0.1,
             significant=False),
        dict(arm="hybrid+kl", metric="sampled_semantic", mean=0.6, n_pairs=5, diff=0.1, diff_low=0.02,
             diff_high=0.18, significant=True)])
    text = "\n".join(ablation.conclusions(summary))
    assert "**hybrid** vs sft" in text and "higher than sft" in text and "rl" not in text.split("The other")[0]
    assert "The other 1 of 3 differences are not significant" in text and "by chance alone" in text
    assert "hybrid, hybrid+kl gave identical values" in text


def test_settings_validation_and_arm_configs():
    settings = ablation.settings_for("quick", arms=["sft", "adversarial"], seeds=3, steps=2)
    assert settings["seeds"] == [0, 1, 2] and settings["steps"] == 2
    adversarial = ablation.arm_config(settings, "adversarial", 1)
    assert (adversarial.reward_source, adversarial.baseline, adversarial.seed) == ("discriminator", "ema", 1)
    assert ablation.arm_config(settings, "hybrid_loo", 0).baseline == "loo"
    with pytest.raises(ValueError, match="arm"):
        ablation.settings_for("quick", arms=["nope"])
    with pytest.raises(ValueError, match="preset"):
        ablation.settings_for("huge")
    with pytest.raises(ValueError, match="lr"):
        ablation.settings_for("quick", lr=-1.0)


def test_figures_come_from_plots(report):
    out, _ = report
    curves = ablation.arm_curves(out, ["base", "sft"])
    assert curves[0][1].empty and curves[0][0]["model"] == "tiny-gpt2"  # base: no training
    assert list(curves[1][1]["step"]) == [1]  # sft: mean over seeds by step
    assert not hasattr(ablation, "plot_metrics") and not hasattr(ablation, "_figure")


def test_eval_data_is_a_local_file_and_is_part_of_the_settings(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {w}.", "output": f"{w}."}) + "\n"
                            for w in ("hi", "bye", "yes")))
    out = tmp_path / "ablate"
    ablation.run_ablation(out, arms=["base"], seeds=1, steps=1, eval_limit=2, eval_data=data,
                          log=lambda line: None, **TINY)
    frame = pd.read_csv(out / "runs/base_seed0/eval.csv")
    assert frame["reference"].tolist() == ["hi.", "bye.", "hi.", "bye."]
    assert f"2 prompts, all rows of {data}" in (out / "report.md").read_text()
    assert ablation.eval_source(ablation.settings_for("quick")) == "bundled"
    with pytest.raises(ValueError, match="eval_data"):
        ablation.run_ablation(out, arms=["base"], seeds=1, steps=1, eval_limit=2, log=print, **TINY)
