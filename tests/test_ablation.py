"""The ablation runner on tiny-gpt2: report files, expected rows, resume, settings checks, CLI."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from lab import __main__ as cli
from lab import evaluate
from lab.experiments import ablation, arms, claims, cost, figures, report as ablation_report
from lab.experiments.arms import ARMS
from lab.runtime import hub

TINY = dict(model="tiny-gpt2", device="cpu", prompts_per_step=2, samples_per_prompt=2, max_new_tokens=4)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate")
    logs = []
    ablation.run_ablation(out, arms=["base", "sft", "hybrid"], seeds=2, steps=1, eval_limit=4,
                          log=logs.append, n_boot=200, **TINY)
    return out, logs


def test_writes_results_summary_report_and_plots(report):
    out, logs = report
    for name in ("results.csv", "summary.csv", "report.md", "metrics.png", "quality_diversity.png",
                 "curves_reward.png", "curves_loss_sft.png", "config_sft.json", "config_base.json",
                 "ablation.json", "runs/sft_seed1/eval.csv", "runs/sft_seed0/history.csv",
                 "paired.csv", "movement.csv", "stability.csv", "hacking.csv", "curves_reward_seeds.png",
                 "hacking.png", "runs/hybrid_seed1/samples.csv"):
        assert (out / name).is_file(), name
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == ["arm", "seed", "metric", "value"]
    per_run = 2 * len(evaluate.SUMMARY_METRICS) + len(ablation.TIMES) + 2  # two decodings, times, steps, peak RSS
    assert len(results) == 3 * 2 * per_run
    assert set(results.groupby(["arm", "seed"]).size()) == {per_run}
    assert {"greedy_semantic", "sampled_distinct_2", "sampled_ppl", "train_seconds"} <= set(results["metric"])
    assert len(logs) == 1 + 3 * 2 + 1 and "done" in logs[-1]
    assert logs[0].startswith("expected wall time: ") and "cost model" in logs[0]  # printed before it starts
    assert "min left" in logs[1]
    samples = pd.read_csv(out / "runs/hybrid_seed1/samples.csv")
    assert {"step", "prompt_id", "reward", "d_pred", "completion"} <= set(samples.columns) and "prompt" not in samples
    assert samples.groupby("step")["prompt_id"].nunique().eq(2).all()  # B = 2 prompts a step, k = 2 answers each


def test_summary_has_intervals_and_paired_differences_vs_sft(report):
    out, _ = report
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["arm"]) == {"base", "sft", "hybrid"}
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
    sampled = first["decoding"] == "sampled"  # each seed samples its own answers
    assert first.loc[sampled, "completion"].tolist() != second.loc[sampled, "completion"].tolist()


def test_report_states_setup_and_does_not_overclaim(report):
    text = (report[0] / "report.md").read_text()
    assert "tiny-gpt2" in text and "seeds: 0, 1" in text and "B = 2" in text and "k = 2" in text
    assert "Difference vs sft" in text and "4 prompts, the held-out split of bundled" in text
    assert "With 2 seeds the intervals are wide" in text


def test_report_has_the_paired_stability_hacking_and_claims_sections(report):
    out, _ = report
    text = (out / "report.md").read_text()
    for heading in ("## Paired differences vs sft, per prompt and seed", "## Answer length and how far each policy moved",
                    "## Stability and collapse", "## Reward hacking: does D's score part from the true reward?",
                    "## The sketch's three claims"):
        assert heading in text, heading
    assert "| hybrid | greedy_semantic | " in text and "2 x 4 |" in text  # 2 seeds x 4 prompts, paired
    assert "95% bootstrap CI" in text and "per-seed t" in text and "MDE" in text
    assert "*The hybrid generalises better than SFT* at equal steps (hybrid - sft, greedy_semantic): " in text
    assert "(no SFT arm at matched compute or wall time ran: a hybrid win could be longer training)" in text
    assert "*It rewards truthfulness*: **not measured**" in text  # the bundled held-out rows are not factual
    assert "| hybrid | " in text.split("## Stability and collapse")[1].split("## Reward hacking")[0]
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["arm"]) == {"base", "hybrid"} and {"boot_low", "t_low", "mde", "t_mde"} <= set(paired.columns)
    moved = pd.read_csv(out / "movement.csv").set_index("arm")
    assert moved.loc["base", "changed_vs_base"] == 0 and {"greedy_words", "changed_vs_sft"} <= set(moved.columns)
    assert list(pd.read_csv(out / "hacking.csv")["arm"]) == ["hybrid"]  # the only arm that samples


def test_presets_quick_is_unchanged_standard_answers_the_claims_and_the_cost_model_fits():
    quick = ablation.ABLATION_PRESETS["quick"]
    assert (quick["seeds"], quick["steps"], quick["eval_limit"], quick["arms"]) == (2, 4, 12, ablation.QUICK_ARMS)
    standard = ablation.settings_for("standard")
    assert len(standard["seeds"]) >= 3 and standard["eval_limit"] is None  # every held-out prompt
    assert {"base", "sft", "sft_matched", "rl", "hybrid", "adversarial", "adversarial_frozen_d"} <= set(standard["arms"])
    k = ablation.arm_config(standard, "hybrid", 0).samples_per_prompt
    assert ablation.arm_steps(standard, "sft_matched") == (1 + k) * standard["steps"]
    assert ablation.arm_steps(standard, "hybrid") == standard["steps"]
    frozen = ablation.arm_config(standard, "adversarial_frozen_d", 0)
    assert frozen.freeze_discriminator_after == standard["steps"] // 4 and frozen.reward_source == "discriminator"
    assert cost.expected_minutes("quick") <= 15  # the smoke run (fp32 here; reports/cost-model/README.md)
    assert ablation.ABLATION_PRESETS["full"]["arms"] is None  # every arm, on a GPU


def test_a_rerun_refuses_an_arm_whose_steps_changed(tmp_path):
    custom = {"long_sft": arms.Arm("x", {"mode": "sft"}, steps_factor=2)}
    settings = ablation.settings_for("quick", arms=["long_sft"], custom_arms=custom, steps=3)
    assert settings["arm_definitions"]["long_sft"]["steps"] == 6
    ablation._check_resume(tmp_path, settings)
    custom = {"long_sft": arms.Arm("x", {"mode": "sft"}, steps_factor=3)}
    with pytest.raises(ValueError, match="arm 'long_sft' run with steps 6"):
        ablation._check_resume(tmp_path, ablation.settings_for("quick", arms=["long_sft"], custom_arms=custom, steps=3))


def test_rerun_skips_done_pairs_and_refuses_other_settings(report):
    out, _ = report
    logs = []
    ablation.run_ablation(out, arms=["base", "sft", "hybrid"], seeds=2, steps=1, eval_limit=4, log=logs.append,
                          n_boot=200, **TINY)
    assert sum("skipped" in line for line in logs) == 6 and logs[0].startswith("expected wall time: 0 min for 0")
    per_run = 2 * len(evaluate.SUMMARY_METRICS) + len(ablation.TIMES) + 2
    assert len(pd.read_csv(out / "results.csv")) == 3 * 2 * per_run
    assert "in which 0 of its 6 (arm, seed) runs ran (the others were in results.csv" in (out / "report.md").read_text()
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
    settings = ablation.settings_for("quick", arms=["sft", "adversarial", "hybrid_loo"], seeds=3, steps=2)
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
    curves = figures.arm_curves(out, ["base", "sft"])
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


# --- arms: one per switch, --list, --arms-file, --set -------------------------------------------
CLI_TINY = ["--model", "tiny-gpt2", "--set", "device=cpu", "--set", "prompts_per_step=2", "--set", "max_new_tokens=4"]
CUSTOM = """
fast_lr:
  description: hybrid at a 4x learning rate
  mode: hybrid
  lr: 2E-3
critic_k3:
  baseline: critic
  samples_per_prompt: "3"
"""


def _cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_built_in_arm_and_a_custom_one_writes_rows_in_one_tiny_run(tmp_path, capsys):
    """Issue 11's acceptance: a 1-step, 1-seed ablation over every arm writes each one's rows."""
    arms_file = tmp_path / "arms.yaml"
    arms_file.write_text(CUSTOM)
    out = tmp_path / "all"
    code, text, err = _cli(["ablate", "--out", str(out), "--arms", *ARMS, "fast_lr", "--arms-file", str(arms_file),
                            "--steps", "1", "--seeds", "1", "--limit", "2", *CLI_TINY,
                            "--set", "larger_d.discriminator_model=tiny-gpt2"], capsys)
    assert code == 0, err
    results = pd.read_csv(out / "results.csv")
    assert set(results["arm"]) == {*ARMS, "fast_lr"} and set(results["seed"]) == {0}
    log = (out / "ablate.log").read_text()  # the folder keeps what the command printed
    assert log.startswith("expected wall time:") and "ablation done in" in log
    assert all(line in text for line in log.splitlines())
    per_run = 2 * len(evaluate.SUMMARY_METRICS) + len(ablation.TIMES) + 2  # times, steps, peak memory
    assert set(results.groupby("arm").size()) == {per_run}  # every arm: one full set of rows
    config = {arm: json.loads((out / f"config_{arm}.json").read_text()) for arm in (*ARMS, "fast_lr")}
    for arm, spec in ARMS.items():  # each arm ran the changes it names; the --set fields hold for all
        for key, value in (spec.changes or {}).items():
            if not isinstance(value, arms.Derived):
                assert config[arm][key] == value, (arm, key)
        assert (config[arm]["max_new_tokens"], config[arm]["prompts_per_step"]) == (4, 2)
    assert config["larger_d"]["discriminator_model"] == "tiny-gpt2"  # --set ARM.key
    assert config["curriculum"]["lambda_warmup_steps"] == 1  # derived: the run's steps
    assert {"rouge", "bleu", "repetition", "length", "semantic"} <= set(config["reward_multi"]["reward_weights"])
    assert config["fast_lr"]["lr"] == 2e-3 and config["sft"]["lr"] == 5e-4
    report = (out / "report.md").read_text()
    for arm, spec in ARMS.items():
        assert f"| {arm} | {spec.description} |" in report
    assert "| hybrid_ppo | " in report and "loss_type=ppo, ppo_epochs=2 |" in report
    assert "| fast_lr | hybrid at a 4x learning rate | mode=hybrid, lr=0.002 |" in report
    assert "preset's config, with --set device=cpu, prompts_per_step=2, max_new_tokens=4, model=tiny-gpt2" in report


def test_list_prints_every_arm_its_description_and_changes(tmp_path, capsys):
    code, text, _ = _cli(["ablate", "--list"], capsys)
    assert code == 0
    for name, arm in ARMS.items():
        assert name in text and arm.description in text
        assert arms.format_changes(arm.changes) in text
    assert "mode=hybrid, baseline=group, scale_rewards=true" in text and "preset < --set" in text
    arms_file = tmp_path / "arms.yaml"
    arms_file.write_text(CUSTOM)
    code, text, _ = _cli(["ablate", "--list", "--arms-file", str(arms_file)], capsys)
    assert code == 0 and "fast_lr" in text and "baseline=critic, samples_per_prompt=3" in text


def test_arms_file_is_read_by_field_type_and_runs_with_or_instead_of_built_ins(tmp_path):
    path = tmp_path / "arms.yaml"
    path.write_text(CUSTOM)
    custom = arms.read_arms_file(path)
    assert custom["fast_lr"] == arms.Arm("hybrid at a 4x learning rate", {"mode": "hybrid", "lr": 0.002})
    path.write_text("long:\n  mode: sft\n  steps_factor: 2.5\n")
    assert arms.read_arms_file(path)["long"].steps(4) == 10
    path.write_text("long:\n  mode: sft\n  steps_factor: many\n")
    with pytest.raises(ValueError, match="steps_factor='many'"):
        arms.read_arms_file(path)
    path.write_text(CUSTOM)
    assert custom["critic_k3"].changes == {"baseline": "critic", "samples_per_prompt": 3}
    assert "arms.yaml" in custom["critic_k3"].description  # a default description
    alone = ablation.settings_for("quick", arms=["critic_k3"], custom_arms=custom)
    assert alone["arms"] == ["critic_k3"] and ablation.arm_config(alone, "critic_k3", 0).samples_per_prompt == 3
    beside = ablation.settings_for("quick", custom_arms=custom)  # default: the preset's arms + the file's
    assert beside["arms"] == [*ablation.QUICK_ARMS, "fast_lr", "critic_k3"]
    assert ablation.settings_for("quick", arms=["all"], custom_arms=custom)["arms"] == [*ARMS, *custom]


@pytest.mark.parametrize("body, message", [
    ("fast:\n  lrr: 1e-3\n", "arm 'fast': unknown config field 'lrr'"),
    ("fast:\n  lr: quick\n", "arm 'fast': lr='quick': expected a number"),
    ("fast:\n  baseline: median\n", "arm 'fast': baseline='median' is not valid"),
    ("sft:\n  lr: 1e-3\n", "arm 'sft': 'sft' is a built-in arm"),
    ("my.arm:\n  lr: 1e-3\n", "arm 'my.arm': a name is"),
    ("fast:\n  seed: 3\n", "arm 'fast': the seed is set per run by --seeds"),
    ("fast: 3\n", "arm 'fast': expected a mapping"),
    ("- a\n- b\n", "must map arm names"),
])
def test_a_bad_arms_file_is_one_error_line_naming_the_arm(tmp_path, capsys, body, message):
    path = tmp_path / "arms.yaml"
    path.write_text(body)
    code, _, err = _cli(["ablate", "--list", "--arms-file", str(path)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_custom_arm_whose_combination_is_invalid_fails_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "arms.yaml"
    path.write_text("one_sample:\n  baseline: loo\n  samples_per_prompt: 1\n")
    code, _, err = _cli(["ablate", "--out", str(tmp_path / "x"), "--arms", "one_sample", "--arms-file", str(path),
                         *CLI_TINY], capsys)
    assert code == 2 and "arm 'one_sample': baseline='loo'" in err and not (tmp_path / "x").exists()


def test_set_reads_values_by_type_and_refuses_a_conflict_with_an_arm(tmp_path, capsys):
    assert arms.parse_set("lr=2E-4") == (None, "lr", 2e-4)
    assert arms.parse_set("scale_rewards=yes") == (None, "scale_rewards", True)
    assert arms.parse_set("hybrid.kl_coef=.1") == ("hybrid", "kl_coef", 0.1)
    common, per_arm = arms.split_sets([arms.parse_set("lr=1e-3"), arms.parse_set("larger_d.lr=2e-3")])
    assert common == {"lr": 1e-3} and per_arm == {"larger_d": {"lr": 2e-3}}
    for text, message in (("lr", "expected key=value"), ("lrr=1", "unknown config field 'lrr'"),
                          ("seed=1", "the seed is set per run"), ("lr=fast", "expected a number")):
        with pytest.raises(ValueError, match=message):
            arms.parse_set(text)
    # --set holds for every arm: an arm that changes the same field is a conflict, not silently resolved
    with pytest.raises(ValueError, match="--set baseline='loo' conflicts with arm 'hybrid_group'"):
        ablation.settings_for("quick", arms=["sft", "hybrid_group"], baseline="loo")
    settings = ablation.settings_for("quick", arms=["sft", "hybrid"], baseline="loo", lr=1e-3)
    assert ablation.arm_config(settings, "hybrid", 0).baseline == "loo"
    assert ablation.arm_config(settings, "sft", 0).lr == 1e-3  # preset < --set
    settings = ablation.settings_for("quick", arms=["hybrid+kl"], arm_sets={"hybrid+kl": {"kl_coef": 0.2}})
    assert ablation.arm_config(settings, "hybrid+kl", 0).kl_coef == 0.2  # the arm < --set ARM.key
    with pytest.raises(ValueError, match="not in this run"):
        ablation.settings_for("quick", arms=["sft"], arm_sets={"hybrid": {"lr": 1.0}})
    with pytest.raises(ValueError, match="arm 'base' is not trained"):
        ablation.settings_for("quick", arms=["base"], arm_sets={"base": {"lr": 1.0}})
    out = str(tmp_path / "x")
    code, _, err = _cli(["ablate", "--out", out, "--arms", "sft", "rl", "--set", "mode=hybrid", *CLI_TINY], capsys)
    assert code == 2 and "conflicts with arm 'sft'" in err and "--set sft.mode=VALUE" in err
    code, _, err = _cli(["ablate", "--out", out, "--arms", "sft", "--set", "model=gpt2", *CLI_TINY], capsys)
    assert code == 2 and "model is set twice" in err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ablate", "--out", out, "--set", "lr=fast"])
    assert exit_.value.code == 2
    code, _, err = _cli(["ablate", "--arms", "sft"], capsys)
    assert code == 2 and "--out" in err


def test_derived_changes_follow_the_experiment():
    settings = ablation.settings_for("quick", arms=["curriculum", "larger_d", "reward_multi"], steps=7,
                                     model="tiny-gpt2")
    changes = {arm: d["changes"] for arm, d in settings["arm_definitions"].items()}
    assert changes["curriculum"]["lambda_warmup_steps"] == 7
    assert changes["larger_d"]["discriminator_model"] == "smollm2-135m"  # the bundled next size up
    assert changes["reward_multi"]["reward_weights"] == {"semantic": 0.7, "perplexity": 0.3, **arms.EXTRA_REWARDS}
    assert arms.next_size({"model": "gpt2"}, 1) == "gpt2-medium"
    assert arms.next_size({"model": "openai-community/gpt2-medium"}, 1) == "gpt2-large"
    with pytest.raises(ValueError, match="--set larger_d.discriminator_model=NAME"):
        ablation.settings_for("quick", arms=["larger_d"], model="Qwen/Qwen2.5-0.5B")
    settings = ablation.settings_for("quick", arms=["larger_d"], model="Qwen/Qwen2.5-0.5B",
                                     arm_sets={"larger_d": {"discriminator_model": "tiny-gpt2"}})
    assert settings["arm_definitions"]["larger_d"]["changes"]["discriminator_model"] == "tiny-gpt2"


def test_an_arm_whose_model_is_offline_is_skipped_with_a_reason_or_refused_when_named(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "hub_reachable", lambda *a: False)
    custom = {"big_d": arms.Arm("a Hub-only critic", {"reward_source": "mix",
                                                      "discriminator_model": "someone/not-cached-7b"})}
    settings = ablation.settings_for("quick", arms=["sft", "big_d"], custom_arms=custom, model="tiny-gpt2")
    skipped = ablation._unavailable_arms(settings, named=[])
    assert list(skipped) == ["big_d"] and "Hub is unreachable" in skipped["big_d"]
    assert "**big_d**: Model 'someone/not-cached-7b' cannot be loaded" in "\n".join(
        ablation_report._skipped({"skipped": skipped}, ["sft"]))
    with pytest.raises(ValueError, match="arm 'big_d': .* --set big_d.discriminator_model=NAME"):
        ablation._unavailable_arms(settings, named=["big_d"])
    monkeypatch.setitem(ablation.ABLATION_PRESETS["quick"], "arms", ["base"])  # a cheap default
    logs = []
    ablation.run_ablation(tmp_path, custom_arms=custom, seeds=1, steps=1, eval_limit=2, log=logs.append, **TINY)
    assert logs[0].startswith("big_d: skipped, Model 'someone/not-cached-7b'")
    assert set(pd.read_csv(tmp_path / "results.csv")["arm"]) == {"base"}
    assert "- **big_d**: Model 'someone/not-cached-7b' cannot be loaded" in (tmp_path / "report.md").read_text()
    ablation.run_ablation(tmp_path, arms=["base"], seeds=1, steps=1, eval_limit=2, log=logs.append, **TINY)
    assert "big_d" in json.loads((tmp_path / "ablation.json").read_text())["skipped"]  # a later --arms run keeps it


def test_presets_name_their_default_arms_and_a_rerun_refuses_a_changed_arm_not_a_respelled_one(tmp_path):
    assert ablation.settings_for("quick")["arms"] == ablation.QUICK_ARMS
    assert ablation.settings_for("full")["arms"] == list(ARMS)
    custom = {"fast_lr": arms.Arm("x", {"lr": 1e-3})}
    ablation._check_resume(tmp_path, ablation.settings_for("quick", arms=["fast_lr"], custom_arms=custom))
    custom = {"fast_lr": arms.Arm("x", {"lr": 2e-3})}
    with pytest.raises(ValueError, match="arm 'fast_lr' run with changes"):
        ablation._check_resume(tmp_path, ablation.settings_for("quick", arms=["fast_lr"], custom_arms=custom))
    spelled_out = {"fast_lr": arms.Arm("x", {"lr": 1e-3, "train_discriminator": "auto"})}  # a default, spelled out
    ablation._check_resume(tmp_path, ablation.settings_for("quick", arms=["fast_lr"], custom_arms=spelled_out))


def test_learning_curves_evaluate_every_n_steps_without_changing_the_training(tmp_path):
    with_curves, without = tmp_path / "curves", tmp_path / "plain"
    options = dict(arms=["base", "hybrid"], seeds=1, steps=2, eval_limit=3, log=lambda line: None,
                   discriminator_warmup_steps=0, n_boot=100, **TINY)
    ablation.run_ablation(with_curves, curve_every=1, **options)
    ablation.run_ablation(without, **options)
    curve = pd.read_csv(with_curves / "runs" / "hybrid_seed0" / "curve.csv")
    assert curve["step"].tolist() == [1, 2] and curve["greedy_semantic"].between(-1, 1).all()
    assert not (with_curves / "runs" / "base_seed0" / "curve.csv").exists()  # untrained: its one evaluation
    trained = [pd.read_csv(folder / "runs" / "hybrid_seed0" / "history.csv") for folder in (with_curves, without)]
    assert trained[0]["loss"].tolist() == pytest.approx(trained[1]["loss"].tolist())  # forked streams: same training
    learning = pd.read_csv(with_curves / "learning_curves.csv")
    assert set(learning["arm"]) == {"base", "hybrid"} and (with_curves / "learning_greedy_semantic.png").is_file()
    assert ablation.settings_for("calibrate")["curve_every"] == 10


def test_a_run_stopped_by_a_signal_is_not_recorded_as_finished(tmp_path, monkeypatch):
    from lab.trainer import HybridTrainer

    original = HybridTrainer.run

    def stopped(self, steps, **kwargs):  # as SIGTERM does: the run ends after its first step
        history = original(self, 1, **kwargs)
        self.stop_reason = "SIGTERM"
        return history

    monkeypatch.setattr(HybridTrainer, "run", stopped)
    logs = []
    out = ablation.run_ablation(tmp_path, arms=["base", "sft"], seeds=1, steps=3, eval_limit=2, log=logs.append,
                                n_boot=50, **TINY)
    assert out is None and "sft seed 0: stopped by SIGTERM after 1 steps, not recorded" in logs[-1]
    assert set(pd.read_csv(tmp_path / "results.csv")["arm"]) == {"base"}  # a rerun redoes sft


def test_the_wall_time_matched_sft_arm_trains_as_long_as_the_hybrid_did_at_its_seed(tmp_path):
    logs = []
    ablation.run_ablation(tmp_path, arms=["sft", "hybrid", "sft_walltime"], seeds=1, steps=2, eval_limit=2,
                          log=logs.append, n_boot=50, **TINY)
    results = pd.read_csv(tmp_path / "results.csv").set_index(["arm", "metric"])["value"]
    steps = int(results[("sft_walltime", "steps")])
    assert results[("sft", "steps")] == results[("hybrid", "steps")] == 2
    assert steps == ablation.time_matched_steps(tmp_path, ablation.settings_for(
        "quick", ["sft", "hybrid", "sft_walltime"], 1, 2, 2, **TINY), "sft_walltime", 0)
    def stepping(arm):  # on a CPU: CPU seconds, whatever else runs beside it; less the setup (loading)
        return results[(arm, "train_cpu_seconds")] - results[(arm, "setup_cpu_seconds")]

    sft_step = stepping("sft") / 2
    assert abs(steps * sft_step - stepping("hybrid")) <= sft_step  # the same time in training steps
    assert 0 < results[("sft", "setup_cpu_seconds")] < results[("sft", "train_cpu_seconds")]
    assert 0 < results[("sft", "setup_seconds")] < results[("sft", "train_seconds")]
    assert 0 < results[("sft", "eval_cpu_seconds")] <= 1.2 * results[("sft", "eval_seconds")]
    assert len(pd.read_csv(tmp_path / "runs/sft_walltime_seed0/history.csv")) == steps
    report_text = (tmp_path / "report.md").read_text()
    assert f"sft_walltime: steps by seed {steps}" in report_text and "equal training wall time" in report_text


def test_the_wall_time_matched_arm_needs_its_hybrid_and_sft_first(tmp_path):
    with pytest.raises(ValueError, match=r"list both before it \(--arms sft hybrid sft_walltime\)"):
        ablation.settings_for("quick", ["sft_walltime", "hybrid", "sft"], **TINY)
    settings = ablation.settings_for("quick", ["sft", "hybrid", "sft_walltime"], **TINY)
    pd.DataFrame([dict(arm=arm, seed=0, metric=metric, value=10.0) for arm in ("sft", "hybrid")
                  for metric in ("train_seconds", "steps")]).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ValueError, match="runs recorded before 2026-12-07 lack them: remove their rows"):
        ablation.time_matched_steps(tmp_path, settings, "sft_walltime", 0)  # a folder from before CPU seconds


def test_the_claims_preset_plans_its_mde_before_it_runs():
    settings = ablation.settings_for("claims")
    assert len(settings["seeds"]) >= 5 and settings["eval_limit"] is None
    assert {"base", "sft", "sft_walltime", "rl", "hybrid", "hybrid_no_d", "adversarial",
            "adversarial_frozen_d"} <= set(settings["arms"])
    assert ablation.arm_config(settings, "hybrid", 0).discriminator_used  # the default loop, with D
    line = claims.planned(settings, 126)
    assert line.startswith("planned MDE of hybrid - sft_walltime on greedy_semantic: 0.0")
    assert float(line.split(": ")[1].split()[0]) <= 0.03  # the target for this comparison


def test_the_claims_report_states_the_realised_mde_against_the_plan_and_says_what_would_narrow_it():
    rng = np.random.default_rng(0)
    effect = rng.normal(0, 0.15, 40)  # (P,) the difference varies by prompt, hardly by seed
    rows = [dict(decoding="greedy", arm=arm, seed=seed, prompt_id=p, semantic=0.7 + (arm == "hybrid") * effect[p]
                 + rng.normal(0, 0.02)) for arm in ("hybrid", "sft_walltime") for seed in range(3) for p in range(40)]
    prompts = pd.DataFrame(rows)
    parts = claims.components(prompts, "hybrid", "sft_walltime", "greedy_semantic")
    assert parts[1] > 0.1 > parts[0]  # the prompts carry the spread
    assert claims.components(prompts, "hybrid", "sft", "greedy_semantic") is None  # an arm that did not run
    settings = ablation.settings_for("claims")
    found = {"generalisation": {"sft_walltime": dict(mde=0.05, n_seeds=3, n_prompts=40)},
             "components": {"sft_walltime": parts}}
    line = claims.realised(settings, found, 40)
    assert line.startswith("realised MDE of hybrid - sft_walltime on greedy_semantic: 0.050 (3 seeds x 40 prompts; "
                           "planned 0.0") and "above the target 0.03 by 0.020" in line
    twice = re.search(r"with these, 6 seeds would give (\d\.\d+) and 80 prompts (\d\.\d+): the prompt level "
                      r"sets it$", line)
    assert float(twice[2]) < float(twice[1])  # more prompts would narrow it, more seeds hardly
    assert claims.realised({**settings, "plan": None}, found, 40) is None


def test_the_atlas_pairs_every_arm_with_the_default_hybrid(tmp_path):
    logs = []
    ablation.run_ablation(tmp_path, "atlas", arms=["sft", "hybrid", "hybrid_no_d"], seeds=2, steps=1, eval_limit=4,
                          log=logs.append, n_boot=50, **TINY)
    frame = pd.read_csv(tmp_path / "atlas.csv").set_index("arm")
    assert list(frame.index) == ["hybrid", "sft", "hybrid_no_d"]  # the reference first, with its own means
    assert frame.loc["hybrid", "greedy_semantic"] >= 0 and frame.loc["hybrid", "greedy_semantic_low"] != \
        frame.loc["hybrid", "greedy_semantic_low"]  # no interval against itself
    row = frame.loc["hybrid_no_d"]
    assert row["greedy_semantic_low"] <= row["greedy_semantic"] <= row["greedy_semantic_high"]
    assert row["greedy_semantic_mde"] >= 0 and row["seconds_per_step"] > 0 and row["peak_rss_mb"] > 100
    assert "greedy_mc2" in frame.columns  # half the held-out prompts are factual: truthfulness per arm
    table = (tmp_path / "atlas.md").read_text()
    assert '| <a id="atlas-hybrid_no_d"></a>`hybrid_no_d` | the D-free hybrid' in table
    assert "greedy semantic vs hybrid" in table
    assert (tmp_path / "atlas.png").stat().st_size > 10_000  # the forest plot
    assert ablation.settings_for("atlas")["arms"] == list(arms.ARMS)  # every built-in arm
    assert cost.expected_minutes("atlas", shards=2) <= 180  # the budget on this 2-core machine, 2 shards


def test_the_atlas_seconds_a_step_leave_out_setup_and_read_cpu_seconds_on_a_cpu():
    from lab.experiments import atlas

    rows = [dict(arm=arm, seed=seed, metric=metric, value=value)
            for arm, seed, times in (("hybrid", 0, (50, 10, 25, 5, 12)), ("hybrid", 1, (90, 10, 45, 5, 12)),
                                     ("base", 0, (0, 0, 0, 0, 0)))
            for metric, value in zip(("train_seconds", "setup_seconds", "train_cpu_seconds", "setup_cpu_seconds",
                                      "steps"), times)]
    results = pd.DataFrame(rows)
    cpu, wall = atlas.step_seconds(results), atlas.step_seconds(results, on_cpu=False)
    assert cpu["hybrid"] == pytest.approx((20 / 12 + 40 / 12) / 2)  # (train - setup) / steps, mean over seeds
    assert wall["hybrid"] == pytest.approx((40 / 12 + 80 / 12) / 2)  # on a GPU: wall seconds
    assert list(cpu.index) == ["hybrid", "base"] and cpu.isna()["base"]  # an untrained arm has no step
    old = results[~results["metric"].str.contains("cpu")]  # runs from before CPU seconds were recorded
    assert atlas.step_seconds(old)["hybrid"] == pytest.approx(wall["hybrid"])
    mixed = results[~(results["metric"].str.contains("cpu") & (results["seed"] == 1))]  # one seed without them
    assert atlas.step_seconds(mixed)["hybrid"] == pytest.approx((20 / 12 + 80 / 12) / 2)
    one_seed = pd.Series({"arm": "sft", "greedy_semantic": 0.01, "greedy_semantic_low": float("nan")})
    assert atlas._cell(one_seed, "greedy_semantic") == "+0.010 (one seed: no interval)"


def test_the_budget_table_says_where_an_arm_clearly_left_base_and_where_it_flattens():
    from lab.experiments.curves import budget

    rows = [dict(arm="base", seed=s, step=0, greedy_semantic=0.5) for s in (0, 1, 2)]
    for s, noise in ((0, -0.01), (1, 0.0), (2, 0.01)):
        for step, value in ((10, 0.5), (20, 0.62), (30, 0.70), (40, 0.71), (50, 0.70), (60, 0.71)):
            rows.append(dict(arm="sft", seed=s, step=step, greedy_semantic=value + noise * (step > 10)))
    table = budget(pd.DataFrame(rows)).set_index("step")
    assert not table.loc[10, "clear"] and table.loc[20, "clear"]  # +0.12 with a spread of 0.01: clear
    assert abs(table.loc[30, "gain_vs_base"] - 0.20) < 1e-9 and table.loc[30, "seeds"] == 3
    assert list(table.index[table["flat"]]) == [30, 40, 50, 60]  # within 0.02 of the last three points' mean


def test_shards_share_one_folder_by_seed_and_the_last_writes_the_whole_report(tmp_path):
    logs = []
    ablation.run_ablation(tmp_path, arms=["base", "sft"], seeds=2, steps=1, eval_limit=2, log=logs.append,
                          n_boot=50, shard=(2, 2), **TINY)
    assert "shard 2/2: seeds [1]" in logs
    assert set(map(tuple, pd.read_csv(tmp_path / "results.csv")[["arm", "seed"]].to_numpy().tolist())) == \
        {("base", 1), ("sft", 1)}
    ablation.run_ablation(tmp_path, arms=["base", "sft"], seeds=2, steps=1, eval_limit=2, log=logs.append,
                          n_boot=50, shard=(1, 2), **TINY)
    results = pd.read_csv(tmp_path / "results.csv")
    assert set(results["seed"]) == {0, 1} and len(results.drop_duplicates(["arm", "seed"])) == 4
    assert set(pd.read_csv(tmp_path / "summary.csv")["n_seeds"]) == {2}  # the report counts both shards' seeds
    assert not list(tmp_path.glob("ablation.json.*"))  # written whole, no partial file left
