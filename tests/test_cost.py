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
    """An ablation folder whose runs took the seconds :data:`TRUE` gives; ``rl`` seed 1 ran beside other
    work (half a core) and took twice as long."""
    runs = [("base", 0, 0), ("sft", 0, 40), ("rl", 0, 40), ("hybrid", 0, 40), ("sft_walltime", 0, 216),
            ("hybrid_no_d", 0, 40), ("adversarial", 0, 40), ("hybrid", 1, 40), ("rl", 1, 40)]
    rows, lines = [], []
    for arm, seed, steps in runs:
        config = arm_config(settings, arm, seed)
        train = sum(TRUE[k] * v for k, v in cost.train_terms(config, steps).items()) if steps else 0.0
        evaluation = 2 * cost.decoding_seconds(settings, config) * EVAL_SCALE
        contended = (arm, seed) == ("rl", 1)
        train, evaluation = (2 * train, 2 * evaluation) if contended else (train, evaluation)
        rows += [dict(arm=arm, seed=seed, metric=m, value=v) for m, v in
                 (("train_seconds", train), ("eval_seconds", evaluation), ("steps", steps), ("greedy_semantic", 0.7))]
        cpu = (train + evaluation) * (0.5 if contended else 0.96)
        lines.append(f"[1/9] {arm} seed {seed}: train {train:.0f}s, eval {evaluation:.0f}s, CPU {cpu:.0f}s, "
                     "sampled semantic 0.700 | elapsed 1s, about 1 min left")
    (tmp_path / "ablation.json").write_text(json.dumps(settings))
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "ablate.log").write_text("expected wall time: 1 min\n" + "\n".join(lines) + "\n")


def test_the_fit_recovers_the_constants_from_the_runs_that_had_a_core(tmp_path):
    _folder(tmp_path, settings_for("claims"))
    constants, table = cost.fit(tmp_path)
    assert ("rl", 1) not in set(zip(table["arm"], table["seed"]))  # half a core: not a measurement of the work
    assert "base" not in set(table["arm"])  # evaluation only
    assert len(table) == 7
    for name, value in TRUE.items():
        assert constants[name] == pytest.approx(value, rel=0.02, abs=0.02)  # rounded seconds in the log
    for name in cost.EVAL_TERMS:
        assert constants[name] == pytest.approx(cost.COST[name] * EVAL_SCALE, rel=0.01)
    assert (table["train_fitted"] - table["train_seconds"]).abs().max() < 1.0


def test_the_script_prints_the_constants_and_writes_the_runs_it_used(tmp_path, capsys):
    _folder(tmp_path, settings_for("claims"))
    assert fit_cost.main([str(tmp_path), "--table", str(tmp_path / "fit.csv")]) == 0
    printed = capsys.readouterr().out
    assert "7 runs: adversarial 0, hybrid 0, hybrid 1," in printed and "discriminator_per_token: 0.016" in printed
    assert "train seconds: fitted within 0% of measured" in printed
    assert len(pd.read_csv(tmp_path / "fit.csv")) == 7


def test_a_folder_without_a_quiet_run_is_one_clear_error(tmp_path):
    _folder(tmp_path, settings_for("claims"))
    with pytest.raises(ValueError, match="no trained run ran on a core of its own"):
        cost.fit(tmp_path, quiet=0.99)


def test_expected_seconds_follow_the_constants(monkeypatch):
    settings = settings_for("claims")
    hybrid, no_d = cost.expected_seconds(settings, "hybrid"), cost.expected_seconds(settings, "hybrid_no_d")
    monkeypatch.setitem(cost.COST, "discriminator_per_token", cost.COST["discriminator_per_token"] + 0.01)
    steps = settings["steps"]
    sampled = arm_config(settings, "hybrid", 0).samples_per_step * arm_config(settings, "hybrid", 0).max_new_tokens
    assert cost.expected_seconds(settings, "hybrid") - hybrid == pytest.approx(0.01 * steps * sampled)
    assert cost.expected_seconds(settings, "hybrid_no_d") == no_d  # nothing reads its discriminator
    assert cost.expected_seconds(settings, "sft_walltime") == cost.expected_seconds(settings, "hybrid")  # matched
