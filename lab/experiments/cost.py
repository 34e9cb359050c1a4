"""The ablation's cost model: the expected wall seconds of an (arm, seed) before it runs, and the
refit of its constants to an ablation's measured runs.

Work scales with the prompts of an SFT step, the samples x new tokens of a sampling step
(sampling, scoring and the policy update; the discriminator's update and scores on top where the
run reads it) and the prompts x new tokens of an evaluation, which also has a fixed cost (scorers,
the critic), plus each factual prompt's multiple-choice and truthfulness scoring. The constants are
seconds of one torch thread with the bundled SmolLM2-135M in fp32 on this project's 2-core machine,
fitted to measured runs by :func:`fit` (``python scripts/fit_cost.py REPORT``; the fits and their
conditions: reports/cost-model/README.md). On another model or a GPU the estimate is a rough guide,
which the ablation's log refines after each run from the pace so far.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
from scipy.optimize import nnls

from lab import evaluate
from lab.config import HybridConfig
from lab.experiments.report import eval_source
from lab.experiments.settings import arm_config, arm_steps, settings_for

COST = {"setup": 0.9, "sft_per_prompt": 0.605, "sampled_per_token": 0.0502, "discriminator_per_token": 0.0167,
        "eval_fixed": 8.78, "eval_per_token": 0.0306, "eval_factual_per_prompt": 2.83}
COST_NOTE = "cost model of lab.experiments.cost.COST, fitted on a 2-core CPU with SmolLM2-135M"
TRAIN_TERMS = ("setup", "sft_per_prompt", "sampled_per_token", "discriminator_per_token")
EVAL_TERMS = ("eval_fixed", "eval_per_token", "eval_factual_per_prompt")


@functools.lru_cache(maxsize=8)
def heldout_size(limit: int | None, source: str, columns) -> tuple[int, int]:
    """(prompts an evaluation answers, factual ones among them: rows with wrong answers to score);
    the rows the ablation evaluates, read without a tokenizer."""
    rows = evaluate.heldout(limit, source, columns=dict(columns) or None)
    return len(rows), sum(bool(e.incorrect) for e in rows)


def train_terms(config: HybridConfig, steps: int) -> dict[str, float]:
    """What one run's training does, per constant of :data:`TRAIN_TERMS`: its training seconds are
    the sum of each term times its constant. A KL penalty or PPO's second pass costs x1.15 a sample."""
    sft = config.prompts_per_step if config.mode in ("sft", "hybrid") else 0
    tokens = 0.0
    if config.mode != "sft":
        passes = config.loss_type != "reinforce" and (config.ppo_epochs > 1 or config.ppo_minibatches > 1)
        extra = 1.15 if config.kl_coef > 0 or passes else 1.0
        sequences = config.samples_per_step * (2 if config.mode == "selfplay" else 1)
        tokens = sequences * config.max_new_tokens * extra
    critic = tokens if config.discriminator_used else 0.0
    return {"setup": 1.0, "sft_per_prompt": steps * sft, "sampled_per_token": steps * tokens,
            "discriminator_per_token": steps * critic}


def decoding_seconds(settings: dict, config: HybridConfig, cost: dict = COST) -> float:
    """Expected seconds of one decoding of the held-out prompts (greedy or sampled) with its scoring;
    a factual prompt's choices are scored once a run, so half of that cost falls on each decoding."""
    prompts, factual = heldout_size(settings["eval_limit"], eval_source(settings),
                                    tuple(sorted((settings["eval_columns"] or {}).items())))
    return cost["eval_fixed"] + cost["eval_per_token"] * prompts * config.max_new_tokens \
        + cost["eval_factual_per_prompt"] * factual / 2


def expected_seconds(settings: dict, arm: str, share_base_greedy: bool = False) -> float:
    """Expected wall seconds of one (arm, seed): training (:func:`train_terms` x :data:`COST`) and
    two decodings of the evaluation, plus one greedy decoding per learning-curve point; the untrained
    model's greedy answers are shared by its seeds. An arm matching another's wall time trains that
    arm's expected seconds."""
    config = arm_config(settings, arm, 0)
    decoding = decoding_seconds(settings, config)
    if settings["arm_definitions"][arm]["changes"] is None:  # base: evaluation only
        return decoding * (1 if share_base_greedy else 2)
    curves = arm_steps(settings, arm) // settings["curve_every"] if settings.get("curve_every") else 0
    target = settings["arm_definitions"][arm].get("match_time", arm)
    terms = train_terms(arm_config(settings, target, 0), arm_steps(settings, target))
    return sum(COST[name] * value for name, value in terms.items()) + (2 + curves) * decoding


def expected_jobs(settings: dict, jobs) -> dict[tuple, float]:
    """``{(arm, seed): expected seconds}`` of ``jobs`` run in this order in one invocation."""
    expected, base_seen = {}, False
    for arm, seed in jobs:
        untrained = settings["arm_definitions"][arm]["changes"] is None
        expected[(arm, seed)] = expected_seconds(settings, arm, share_base_greedy=untrained and base_seen)
        base_seen = base_seen or untrained
    return expected


def expected_minutes(preset: str, shards: int = 1, **overrides) -> float:
    """Expected wall minutes of a whole preset (:func:`expected_seconds` summed over arms x seeds); with
    ``shards`` processes side by side (``ablate --shard K/N``, one a core), the longest shard's."""
    settings = settings_for(preset, **overrides)
    return max(sum(expected_jobs(settings, [(a, s) for s in settings["seeds"][k::shards]
                                            for a in settings["arms"]]).values()) for k in range(shards)) / 60


def fit(out: Path) -> tuple[dict, pd.DataFrame]:
    """Refit :data:`COST` to the CPU seconds of the trained runs of the ablation folder ``out`` (with
    one torch thread, a run's wall seconds on a core of its own, whatever else shared the machine):
    ``setup`` as the runs' median setup seconds (loading: the first run of a process pays more), the
    per-step constants by non-negative least squares on each run's seconds in training steps (a term
    no run exercises keeps its value); the evaluation constants scaled by the median ratio of measured to
    expected evaluation seconds (the runs of one ablation evaluate the same prompts, so only the scale
    of the three is measured). Runs recorded before 2026-12-07 have no CPU seconds and are left out.
    Returns (the constants, a table per run: its terms, measured and fitted seconds)."""
    out = Path(out)
    settings = json.loads((out / "ablation.json").read_text())
    results = pd.read_csv(out / "results.csv")
    measured = ["train_cpu_seconds", "setup_cpu_seconds", "eval_cpu_seconds", "steps"]
    wide = results[results["metric"].isin(measured)].pivot_table(index=["arm", "seed"], columns="metric",
                                                                   values="value")
    rows = []
    for (arm, seed), run in wide.iterrows():
        if settings["arm_definitions"][arm]["changes"] is None or run.isna().any() or len(run) < len(measured):
            continue  # base: no training (its greedy answers may be shared); or no CPU seconds recorded
        config, steps = arm_config(settings, arm, seed), int(run["steps"])
        curves = steps // settings["curve_every"] if settings.get("curve_every") else 0
        rows.append({"arm": arm, "seed": seed, **train_terms(config, steps),
                     "setup_seconds": run["setup_cpu_seconds"], "train_seconds": run["train_cpu_seconds"],
                     "eval_seconds": run["eval_cpu_seconds"],
                     "eval_expected": (2 + curves) * decoding_seconds(settings, config)})
    if not rows:
        raise ValueError(f"{out}: no trained run with its CPU seconds in results.csv (recorded from 2026-12-07 on)")
    table = pd.DataFrame(rows)
    used_terms = [t for t in TRAIN_TERMS[1:] if table[t].any()]  # setup is measured, not fitted
    stepping = table["train_seconds"] - table["setup_seconds"]
    solution, _ = nnls(table[used_terms].to_numpy(float), stepping.to_numpy(float))
    constants = {**COST, "setup": float(table["setup_seconds"].median()), **dict(zip(used_terms, solution.tolist()))}
    scale = float((table["eval_seconds"] / table["eval_expected"]).median())
    constants.update({t: COST[t] * scale for t in EVAL_TERMS})
    table["train_fitted"] = sum(table[t] * constants[t] for t in TRAIN_TERMS)  # setup's term is 1
    table["eval_fitted"] = table["eval_expected"] * scale
    return constants, table.drop(columns="eval_expected")
