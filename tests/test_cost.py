"""The ablation's cost model: its refit recovers the constants that made a folder's seconds, from
the runs that had a core to themselves, and the expected minutes follow the constants."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from lab.experiments import cost
from lab.experiments.settings import arm_config, settings_for

spec = importlib.util.spec_from_file_location("fit_cost", Path(__file__).parents[1] / "scripts" / "fit_cost.py")
fit_cost = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit_cost)

TRUE = {"setup": 20.0, "sft_per_prompt": 0.6, "sampled_per_token": 0.07, "discriminator_per_token": 0.016}
EVAL_SCALE = 1.6


def _folder(tmp_path, settings):
    """An ablation folder whose runs took the CPU seconds :data:`TRUE` gives; ``rl`` seed 1 ran beside
    other work (twice the wall seconds, the same CPU seconds); ``rl`` seed 2 was recorded before
    runs had CPU seconds."""
    runs = [("base", 0, 0), ("sft", 0, 40), ("rl", 0, 40), ("hybrid", 0, 40), ("sft_walltime", 0, 216),
            ("hybrid_no_d", 0, 40), ("adversarial", 0, 40), ("hybrid", 1, 40), ("rl", 1, 40), ("rl", 2, 40)]
    rows = []
    for arm, seed, steps in runs:
        config = arm_config(settings, arm, seed)
        train = sum(TRUE[k] * v for k, v in cost.train_terms(config, steps).items()) if steps else 0.0
        evaluation = 2 * cost.decoding_seconds(settings, config) * EVAL_SCALE
        wall = 2 if (arm, seed) == ("rl", 1) else 1.02
        times = {"train_seconds": wall * train, "eval_seconds": wall * evaluation, "steps": steps,
                 "train_cpu_seconds": train, "setup_cpu_seconds": TRUE["setup"] if steps else 0.0,
                 "eval_cpu_seconds": evaluation, "greedy_semantic": 0.7}
        if (arm, seed) == ("rl", 2):
            del times["train_cpu_seconds"], times["setup_cpu_seconds"], times["eval_cpu_seconds"]
        rows += [dict(arm=arm, seed=seed, metric=m, value=v) for m, v in times.items()]
    (tmp_path / "ablation.json").write_text(json.dumps(settings))
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)


def test_the_fit_recovers_the_constants_from_the_runs_cpu_seconds(tmp_path):
    _folder(tmp_path, settings_for("claims"))
    constants, table = cost.fit(tmp_path)
    runs = set(zip(table["arm"], table["seed"]))
    assert ("rl", 1) in runs and ("rl", 2) not in runs  # beside other work: CPU seconds; none recorded: out
    assert "base" not in set(table["arm"])  # evaluation only
    assert len(table) == 8
    for name, value in TRUE.items():
        assert constants[name] == pytest.approx(value, rel=1e-6)
    for name in cost.EVAL_TERMS:
        assert constants[name] == pytest.approx(cost.COST[name] * EVAL_SCALE, rel=0.01)
    assert (table["train_fitted"] - table["train_seconds"]).abs().max() < 1.0


def test_the_script_prints_the_constants_and_writes_the_runs_it_used(tmp_path, capsys):
    _folder(tmp_path, settings_for("claims"))
    assert fit_cost.main([str(tmp_path), "--table", str(tmp_path / "fit.csv")]) == 0
    printed = capsys.readouterr().out
    assert "8 runs: adversarial 0, hybrid 0, hybrid 1," in printed and "discriminator_per_token: 0.016" in printed
    assert "train seconds: fitted within 0% of measured" in printed
    assert len(pd.read_csv(tmp_path / "fit.csv")) == 8


def test_a_folder_without_cpu_seconds_is_one_clear_error(tmp_path):
    _folder(tmp_path, settings_for("claims"))
    results = pd.read_csv(tmp_path / "results.csv")
    results[~results["metric"].str.endswith("cpu_seconds")].to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(ValueError, match="no trained run with its CPU seconds"):
        cost.fit(tmp_path)


def test_expected_seconds_follow_the_constants(monkeypatch):
    settings = settings_for("claims")
    hybrid, no_d = cost.expected_seconds(settings, "hybrid"), cost.expected_seconds(settings, "hybrid_no_d")
    monkeypatch.setitem(cost.COST, "discriminator_per_token", cost.COST["discriminator_per_token"] + 0.01)
    steps = settings["steps"]
    sampled = arm_config(settings, "hybrid", 0).samples_per_step * arm_config(settings, "hybrid", 0).max_new_tokens
    assert cost.expected_seconds(settings, "hybrid") - hybrid == pytest.approx(0.01 * steps * sampled)
    assert cost.expected_seconds(settings, "hybrid_no_d") == no_d  # nothing reads its discriminator
    assert cost.expected_seconds(settings, "sft_walltime") == cost.expected_seconds(settings, "hybrid")  # matched


def test_shards_split_a_presets_minutes_by_seed():
    one, two = cost.expected_minutes("claims"), cost.expected_minutes("claims", shards=2)
    assert one / 2 < two < one  # 3 of 5 seeds on the longer shard, and its own untrained greedy pass
    assert cost.expected_minutes("atlas", shards=2) == pytest.approx(cost.expected_minutes("atlas") / 2, rel=0.02)


def test_the_constants_reproduce_the_runs_they_were_fitted_on():
    """COST is the fit of reports/cost-model/fit-claims-2026-12-07.csv (its runs' CPU seconds)."""
    table = pd.read_csv(Path(__file__).parents[1] / "reports" / "cost-model" / "fit-claims-2026-12-07.csv")
    assert len(table) >= 8
    training = sum(table[term] * cost.COST[term] for term in cost.TRAIN_TERMS)
    assert training.sum() == pytest.approx(table["train_seconds"].sum(), rel=0.05)
    settings = settings_for("claims")
    decodings = 2 * cost.decoding_seconds(settings, arm_config(settings, "hybrid", 0))
    assert decodings == pytest.approx(table["eval_seconds"].median(), rel=0.05)
