"""An ablation's settings: the presets (arms, seeds, steps, held-out prompts, the common config),
:func:`settings_for` (a preset with the command line's overrides, validated before anything runs)
and each (arm, seed)'s config and steps. :mod:`lab.experiments.ablation` runs them."""

from __future__ import annotations

from lab.config import HybridConfig
from lab.data import data_dir
from lab.experiments import arms as arm_registry
from lab.experiments.arms import ARMS, Arm

QUICK_ARMS = ["base", "sft", "rl", "hybrid", "hybrid+kl", "hybrid_loo", "adversarial"]
STANDARD_ARMS = ["base", "sft", "sft_matched", "rl", "hybrid", "hybrid_loo", "adversarial",
                 "adversarial_frozen_d"]  # claims 1-3 (hybrid_loo: its lower-variance baseline), item 4
CLAIMS_ARMS = ["base", "sft", "rl", "hybrid", "sft_walltime", "hybrid_no_d", "adversarial",
               "adversarial_frozen_d"]  # sft_walltime after the hybrid and sft runs it matches

ABLATION_PRESETS = {
    # the CI-sized smoke run (its measured wall time: reports/quick-*/report.md)
    "quick": {"seeds": 2, "steps": 4, "eval_limit": 12, "arms": QUICK_ARMS,
              "config": {"model": "auto", "prompts_per_step": 4, "samples_per_prompt": 2,
                         "max_new_tokens": 16, "lr": 5e-4}},
    # the arms that answer the sketch's three claims and the hacking question, 3 seeds, every held-out
    # prompt; the data mixes the bundled instructions with the bundled factual questions (half each),
    # so one run measures generalisation and truthfulness (mc1/mc2 on the factual ones). Sized by the
    # power calculation of lab.eval.stats.mde; fp32 and a discriminator trained in every arm, as its
    # committed report was made (sizing and times: reports/cost-model/README.md)
    "standard": {"seeds": 3, "steps": 14, "eval_limit": None, "arms": STANDARD_ARMS,
                 "config": {"model": "auto", "dataset": "bundled:0.5,factual:0.5", "dtype": "float32",
                            "train_discriminator": "always",
                            "prompts_per_step": 4, "samples_per_prompt": 2,
                            "max_new_tokens": 20, "lr": 5e-4}},
    # the budget calibration (issue 24): held-out greedy quality every 10 steps of SFT and the default
    # hybrid, 3 seeds: where SFT leaves the base model and where the curves flatten
    "calibrate": {"seeds": 3, "steps": 120, "eval_limit": 40, "curve_every": 10, "arms": ["base", "sft", "hybrid"],
                  "config": {"model": "auto", "dtype": "float32", "prompts_per_step": 4, "samples_per_prompt": 2,
                             "max_new_tokens": 16, "lr": 5e-4}},
    # the seed's claims (issue 24) at the calibrated budget (reports/calibrate-2026-12-06: SFT clearly above
    # base from ~30 steps on the bundled data; 40 here, as half the rows are factual), every held-out prompt,
    # SFT at equal steps, tokens and wall time; "plan": the pilot's variance components of hybrid - sft
    # (greedy semantic per prompt, reports/gan-default-2026-12-06: seed sd 0.000 from 3 seeds, floored
    # at 0.01; prompt 0.000 and cell 0.052 over 12 prompts) for the planned MDE printed before it runs,
    # and the target for it (the report states the realised MDE against both)
    "claims": {"seeds": 5, "steps": 40, "eval_limit": None, "arms": CLAIMS_ARMS,
               "config": {"model": "auto", "dataset": "bundled:0.5,factual:0.5", "dtype": "float32",
                          "prompts_per_step": 4, "samples_per_prompt": 2, "max_new_tokens": 16, "lr": 5e-4},
               "plan": {"arm": "hybrid", "reference": "sft_walltime", "metric": "greedy_semantic",
                        "sd_seed": 0.01, "sd_prompt": 0.0, "sd_cell": 0.052, "target": 0.03}},
    # the results atlas (issue 24 item 3): every built-in arm against the default hybrid (lab.experiments.atlas),
    # 2 seeds, 16 held-out prompts (8 instructions, 8 factual), sized by the cost model to <= 3 hours on this
    # 2-core machine as two shards (ablate --shard 1/2 and 2/2, one a core)
    "atlas": {"seeds": 2, "steps": 12, "eval_limit": 16, "arms": None, "atlas": True,
              "config": {"model": "auto", "dataset": "bundled:0.5,factual:0.5", "dtype": "float32",
                         "prompts_per_step": 4, "samples_per_prompt": 2, "max_new_tokens": 16, "lr": 5e-4},
              "arm_sets": {"stream_replay": {"stream": str(data_dir() / "train.jsonl")}}},  # the mix is no file
    # a GPU: 5 seeds, longer runs, the whole held-out split
    "full": {"seeds": 5, "steps": 100, "eval_limit": None, "arms": None,  # None: every built-in arm
             "config": {"model": "auto", "prompts_per_step": 8, "samples_per_prompt": 4,
                        "max_new_tokens": 48, "lr": 2e-4}},
}


def settings_for(preset: str = "quick", arms=None, seeds: int | None = None, steps: int | None = None,
                 eval_limit: int | None = None, eval_data: str | None = None,
                 eval_columns: dict[str, str] | None = None, *, custom_arms: dict[str, Arm] | None = None,
                 arm_sets: dict[str, dict] | None = None, curve_every: int | None = None, **config) -> dict:
    """The ablation's settings: a preset with overrides. ``config``: HybridConfig fields set for
    every arm (``--set key=value``); ``custom_arms``: arms beside the built-in ones (``--arms-file``);
    ``arm_sets``: ``{arm: {field: value}}`` (``--set ARM.key=value``). Layers and the conflict
    rule: :mod:`lab.experiments.arms`. ``arms``: names, or ``all`` (every built-in and custom arm); default:
    the preset's arms plus the custom ones. ``eval_data``: evaluate on this source or local file
    (``eval_columns``: its column names) instead of the held-out split of ``config["dataset"]``.
    ``curve_every``: evaluate each trained arm's greedy answers every N steps too (a learning curve
    per run, ``curve.csv``; default: the preset's, 0 for none)."""
    if preset not in ABLATION_PRESETS:
        raise ValueError(f"Unknown ablation preset {preset!r}; choose {', '.join(ABLATION_PRESETS)}")
    base = ABLATION_PRESETS[preset]
    registry = {**ARMS, **(custom_arms or {})}
    if not arms:
        arms = [*(base.get("arms") or ARMS), *(custom_arms or {})]
    arms = list(dict.fromkeys(a for name in arms for a in (registry if name == "all" else [name])))
    unknown = [a for a in arms if a not in registry]
    if unknown:
        raise ValueError(f"Unknown arm(s) {unknown}; known arms: {', '.join(registry)} (or all)")
    n_seeds = base["seeds"] if seeds is None else seeds
    if n_seeds < 1 or (steps is not None and steps < 1) or (curve_every or 0) < 0:
        raise ValueError("--seeds and --steps must be at least 1, --curve-every at least 0")
    for key in config:
        arm_registry.check_field(key, f"--set {key}")
    settings = {"preset": preset, "arms": arms, "seeds": list(range(n_seeds)),
                "steps": base["steps"] if steps is None else steps,
                "eval_limit": base["eval_limit"] if eval_limit is None else eval_limit,
                "eval_data": None if eval_data is None else str(eval_data), "eval_columns": eval_columns,
                "config": {**base["config"], **config}, "set": dict(config),
                "curve_every": base.get("curve_every", 0) if curve_every is None else curve_every,
                **{key: base[key] for key in ("plan", "atlas") if key in base}}
    HybridConfig.from_dict(settings["config"])  # validate now, not after an hour
    settings["arm_definitions"] = arm_registry.define(arms, registry, settings["config"], settings["steps"],
                                                      config, {**{a: v for a, v in base.get("arm_sets", {}).items() if a in arms},
                                                               **(arm_sets or {})})
    return settings


def arm_config(settings: dict, arm: str, seed: int) -> HybridConfig:
    """The HybridConfig of one (arm, seed); ``base`` keeps the generation settings only."""
    changes = settings["arm_definitions"][arm]["changes"]
    return HybridConfig.from_dict({**settings["config"], **(changes or {}), "seed": seed})


def arm_steps(settings: dict, arm: str) -> int:
    """The steps ``arm`` trains: the experiment's, or its own (``sft_matched``: (1 + k)x); for an arm
    that matches another's wall time, the experiment's (its real steps: :func:`time_matched_steps`)."""
    return settings["arm_definitions"][arm].get("steps", settings["steps"])
