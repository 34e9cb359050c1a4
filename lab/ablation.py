"""Ablation: does the hybrid beat plain SFT? Arms x seeds on one budget, one honest report.

The arms (one per switch: :data:`lab.arms.ARMS`, ``ablate --list``; custom ones from
``--arms-file``) and how ``--set`` layers under them are in :mod:`lab.arms`; a preset names the
arms it runs by default (``quick``: the 9 its wall time was measured with; ``full``: all).
Every trained arm runs through :class:`lab.trainer.HybridTrainer` with the same steps, the
same ``B`` prompts a step and (where it samples) the same ``k`` samples a prompt; the
``sft`` arm trains on the same ``B`` reference answers a step. ``base`` is the untrained
model. Each (arm, seed) is evaluated on the same prompts (:func:`lab.evaluate.heldout`: the
held-out split of the config's ``dataset``, or all rows of the file given as ``eval_data``;
greedy and sampled with the seed), and :mod:`lab.stats` turns the per-seed values into
intervals and paired differences vs ``sft``. ``run_ablation`` writes to ``out``:

- ``results.csv``: long format, one row per arm, seed and metric (``arm, seed, metric, value``);
  metrics are ``<decoding>_<metric>`` (``sampled_semantic``) plus ``train_seconds``, ``eval_seconds``;
- ``summary.csv``: :func:`lab.stats.summarize_results` (mean, 95% CI, paired difference vs sft);
- ``metrics.png``, ``quality_diversity.png``, ``curves_reward.png``, ``curves_loss_sft.png``
  (:func:`lab.plots.plot_metrics`, :func:`~lab.plots.plot_quality_diversity`, :func:`~lab.plots.plot_curves`);
- ``report.md`` (with each arm's description and config changes), ``config_<arm>.json``,
  ``ablation.json`` (the settings, each arm's changes as run), and
  ``runs/<arm>_seed<n>/`` (``eval.csv`` per prompt, ``history.csv``).

An (arm, seed) already in ``results.csv`` is skipped, so an interrupted run continues, and
``--seeds`` can grow later (the other settings must stay the same). The command line is
``python -m lab ablate`` (:mod:`lab.__main__`).
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import os
import platform
import time
from pathlib import Path

import pandas as pd

from lab import arms as arm_registry, evaluate, plots, stats
from lab.arms import ARMS, Arm
from lab.config import HybridConfig

QUICK_ARMS = ["base", "sft", "rl", "hybrid", "hybrid+kl", "hybrid+entropy", "hybrid_disc_baseline",
              "hybrid_loo", "adversarial"]  # the arms its 8.4 min were measured with

ABLATION_PRESETS = {
    # 2-core CPU, bundled SmolLM2-135M: 8.4 min wall measured on a quiet machine (2026-11-25)
    "quick": {"seeds": 2, "steps": 4, "eval_limit": 12, "arms": QUICK_ARMS,
              "config": {"model": "auto", "prompts_per_step": 4, "samples_per_prompt": 2,
                         "max_new_tokens": 16, "lr": 5e-4}},
    # a GPU: 5 seeds, longer runs, the whole held-out split
    "full": {"seeds": 5, "steps": 100, "eval_limit": None, "arms": None,  # None: every built-in arm
             "config": {"model": "auto", "prompts_per_step": 8, "samples_per_prompt": 4,
                        "max_new_tokens": 48, "lr": 2e-4}},
}
REFERENCE = "sft"
KEY_METRICS = ("greedy_semantic", "greedy_rouge_l", "sampled_semantic", "sampled_ppl",
               "sampled_distinct_2", "sampled_self_bleu")
UNPAIRED = ("greedy_disc", "sampled_disc", "train_seconds", "eval_seconds")  # each arm's own critic; timings
MEANING = {  # what a HIGHER value means (no metric here is simply "better")
    "semantic": "closer in meaning to the reference", "rouge_l": "more word overlap with the reference",
    "bleu": "more n-gram overlap with the reference", "ppl": "less typical text for the base model",
    "distinct_1": "more varied words across answers", "distinct_2": "more varied word pairs across answers",
    "self_bleu": "answers more alike across prompts (mode collapse)", "words": "longer answers",
    "repetition": "more repeated phrases (loops)", "disc": "the arm's own critic likes the answer more",
}


def settings_for(preset: str = "quick", arms=None, seeds: int | None = None, steps: int | None = None,
                 eval_limit: int | None = None, eval_data: str | None = None,
                 eval_columns: dict[str, str] | None = None, *, custom_arms: dict[str, Arm] | None = None,
                 arm_sets: dict[str, dict] | None = None, **config) -> dict:
    """The ablation's settings: a preset with overrides. ``config``: HybridConfig fields set for
    every arm (``--set key=value``); ``custom_arms``: arms beside the built-in ones (``--arms-file``);
    ``arm_sets``: ``{arm: {field: value}}`` (``--set ARM.key=value``). Layers and the conflict
    rule: :mod:`lab.arms`. ``arms``: names, or ``all`` (every built-in and custom arm); default:
    the preset's arms plus the custom ones. ``eval_data``: evaluate on this source or local file
    (``eval_columns``: its column names) instead of the held-out split of ``config["dataset"]``."""
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
    if n_seeds < 1 or (steps is not None and steps < 1):
        raise ValueError("--seeds and --steps must be at least 1")
    for key in config:
        arm_registry.check_field(key, f"--set {key}")
    settings = {"preset": preset, "arms": arms, "seeds": list(range(n_seeds)),
                "steps": base["steps"] if steps is None else steps,
                "eval_limit": base["eval_limit"] if eval_limit is None else eval_limit,
                "eval_data": None if eval_data is None else str(eval_data), "eval_columns": eval_columns,
                "config": {**base["config"], **config}, "set": dict(config)}
    HybridConfig.from_dict(settings["config"])  # validate now, not after an hour
    settings["arm_definitions"] = arm_registry.define(arms, registry, settings["config"], settings["steps"],
                                                      config, arm_sets)
    return settings


def arm_config(settings: dict, arm: str, seed: int) -> HybridConfig:
    """The HybridConfig of one (arm, seed); ``base`` keeps the generation settings only."""
    changes = settings["arm_definitions"][arm]["changes"]
    return HybridConfig.from_dict({**settings["config"], **(changes or {}), "seed": seed})


def _check_resume(out: Path, settings: dict) -> dict:
    """Refuse to mix results from different steps / prompts / configs in one folder."""
    path = out / "ablation.json"
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("steps", "eval_limit", "eval_data", "eval_columns", "config"):
            if old.get(key) != settings[key]:
                raise ValueError(f"{out} holds an ablation with {key}={old.get(key)!r}, not {settings[key]!r}; "
                                 "use another --out, or the same settings to continue it")
        defined = old.get("arm_definitions", {})
        for arm, definition in settings["arm_definitions"].items():
            if arm in defined and defined[arm]["changes"] != definition["changes"]:
                raise ValueError(f"{out} holds arm {arm!r} run with changes {defined[arm]['changes']!r}, not "
                                 f"{definition['changes']!r}; use another --out, or another name for the new arm")
        settings = {**settings, "arms": list(dict.fromkeys(old["arms"] + settings["arms"])),
                    "seeds": sorted(set(old["seeds"]) | set(settings["seeds"])),
                    "arm_definitions": {**defined, **settings["arm_definitions"]}}
    path.write_text(json.dumps(settings, indent=2) + "\n")
    return settings


def _metric_rows(arm: str, seed: int, frame: pd.DataFrame, train_s: float, eval_s: float) -> list[dict]:
    table = evaluate.summarize(frame).drop(columns="n")
    rows = [dict(arm=arm, seed=seed, metric=f"{decoding}_{metric}", value=value)
            for decoding, values in table.iterrows() for metric, value in values.items()]
    return rows + [dict(arm=arm, seed=seed, metric="train_seconds", value=train_s),
                   dict(arm=arm, seed=seed, metric="eval_seconds", value=eval_s)]


def eval_source(settings: dict) -> str:
    """The source the ablation evaluates on: ``eval_data``, else the config's ``dataset``."""
    return settings.get("eval_data") or HybridConfig.from_dict(settings["config"]).dataset


def _examples(settings: dict, config: HybridConfig, tokenizer) -> list:
    return evaluate.heldout(settings["eval_limit"], eval_source(settings),
                            tokenizer if config.chat_template else None, settings.get("eval_columns"))


def _unavailable_arms(settings: dict, named: list[str]) -> dict[str, str]:
    """``{arm: why}`` for the arms whose model cannot be loaded; raises for the common model or
    for an arm in ``named``."""
    missing = arm_registry.unavailable(HybridConfig.from_dict(settings["config"]))
    if missing:
        raise ValueError(missing[1])
    skipped = {}
    for arm in settings["arms"]:
        missing = arm_registry.unavailable(arm_config(settings, arm, 0))
        if missing and arm in named:
            raise ValueError(f"arm {arm!r}: {missing[1]} Leave the arm out, or choose its model with "
                             f"--set {arm}.{missing[0]}=NAME")
        if missing:
            skipped[arm] = missing[1]
    return skipped


def run_ablation(out: str | Path, preset: str = "quick", arms=None, seeds: int | None = None,
                 steps: int | None = None, eval_limit: int | None = None, log=print,
                 eval_data: str | None = None, eval_columns: dict[str, str] | None = None,
                 custom_arms: dict[str, Arm] | None = None, arm_sets: dict[str, dict] | None = None,
                 **config) -> pd.DataFrame:
    """Run the arms x seeds (skipping those already in ``out/results.csv``), write the report
    folder, return the summary (:func:`lab.stats.summarize_results`). Arguments: :func:`settings_for`.

    An arm whose model cannot be loaded here (``larger_d``'s Hub model offline) is an error when
    ``arms`` names it, and is skipped, with the reason in the log and the report, when it came
    from the preset's arms or ``all``."""
    from lab import models
    from lab.trainer import HybridTrainer

    settings = settings_for(preset, arms, seeds, steps, eval_limit, eval_data, eval_columns,
                            custom_arms=custom_arms, arm_sets=arm_sets, **config)
    settings["skipped"] = _unavailable_arms(settings, named=[a for a in arms or [] if a != "all"])
    for arm, reason in settings["skipped"].items():
        log(f"{arm}: skipped, {reason}")
    settings["arms"] = [a for a in settings["arms"] if a not in settings["skipped"]]
    if not settings["arms"]:
        raise ValueError("every arm of this run was skipped (see above); nothing to run")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, settings)
    results_path = out / "results.csv"
    done = set()
    if results_path.exists():
        done = set(map(tuple, pd.read_csv(results_path)[["arm", "seed"]].drop_duplicates().to_numpy().tolist()))
    for arm in settings["arms"]:
        arm_config(settings, arm, settings["seeds"][0]).save(out / f"config_{arm}.json")
    started, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    jobs = [(arm, seed) for seed in settings["seeds"] for arm in settings["arms"]]
    base, base_greedy, examples = None, None, None
    for i, (arm, seed) in enumerate(jobs, 1):
        if (arm, seed) in done:
            log(f"[{i}/{len(jobs)}] {arm} seed {seed}: already in results.csv, skipped")
            continue
        config = arm_config(settings, arm, seed)
        folder = out / "runs" / f"{arm}_seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        t0, cpu0 = time.perf_counter(), time.process_time()
        if settings["arm_definitions"][arm]["changes"] is None:  # base: the untrained model
            if base is None:
                base = models.load(config.model, config.device, verbose=False)
            model, tokenizer = base
            examples = examples or _examples(settings, config, tokenizer)
            options = dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                           top_p=config.top_p, max_prompt_tokens=config.max_prompt_tokens, seed=seed)
            if base_greedy is None:  # greedy answers of the untrained model are the same for every seed
                base_greedy = evaluate.evaluate_model(model, tokenizer, examples, ("greedy",), **options)
            sampled = evaluate.evaluate_model(model, tokenizer, examples, ("sampled",), **options)
            frame, train_s = pd.concat([base_greedy, sampled], ignore_index=True), 0.0
        else:
            trainer = HybridTrainer(config, verbose=False)
            trainer.run(settings["steps"], progress=False)
            train_s = time.perf_counter() - t0
            examples = examples or _examples(settings, config, trainer.tokenizer)
            frame = evaluate.evaluate_trainer(trainer, examples)
            trainer.history.to_csv(folder / "history.csv", index=False)
            del trainer
            gc.collect()
        eval_s = time.perf_counter() - t0 - train_s
        frame.to_csv(folder / "eval.csv", index=False)
        rows = pd.DataFrame(_metric_rows(arm, seed, frame, train_s, eval_s))
        rows.to_csv(results_path, mode="a", header=not results_path.exists(), index=False)
        sem = rows.set_index("metric")["value"].get("sampled_semantic", math.nan)
        log(f"[{i}/{len(jobs)}] {arm} seed {seed}: train {train_s:.0f}s, eval {eval_s:.0f}s, "
            f"CPU {time.process_time() - cpu0:.0f}s, sampled semantic {sem:.3f} | "
            f"elapsed {time.perf_counter() - started:.0f}s")
    results = pd.read_csv(results_path)
    summary = stats.summarize_results(results, REFERENCE, unpaired=UNPAIRED)
    summary.to_csv(out / "summary.csv", index=False)
    write_plots(out, results, summary)
    elapsed = time.perf_counter() - started
    write_report(out, json.loads((out / "ablation.json").read_text()), results, summary,
                 dict(elapsed_s=elapsed, cpu_s=time.process_time() - cpu_start,
                      load=(load_start, os.getloadavg()[0])))
    log(f"ablation done in {elapsed / 60:.1f} min: {out / 'report.md'}")
    return summary


# --- figures (drawn by lab.plots) ----------------------------------------------------------
def arm_curves(out: Path, arms) -> list[tuple[dict, pd.DataFrame]]:
    """Per arm, ``(config, history averaged over seeds by step)`` from ``out``; an arm without
    histories (``base``) gets an empty one, so every arm keeps its colour."""
    runs = []
    for arm in arms:
        histories = [pd.read_csv(p) for p in sorted((out / "runs").glob(f"{arm}_seed*/history.csv"))]
        mean = pd.concat(histories).groupby("step").mean(numeric_only=True).reset_index() if histories \
            else pd.DataFrame()
        runs.append((json.loads((out / f"config_{arm}.json").read_text()), mean))
    return runs


def write_plots(out: Path, results: pd.DataFrame, summary: pd.DataFrame) -> None:
    arms = list(dict.fromkeys(results["arm"]))
    plots.save(plots.plot_metrics(summary, KEY_METRICS), out / "metrics.png")
    plots.save(plots.plot_quality_diversity(results), out / "quality_diversity.png")
    curves = arm_curves(out, arms)
    for metric in ("reward", "loss_sft"):
        plots.save(plots.plot_curves(curves, metric, labels=arms), out / f"curves_{metric}.png")


# --- the report ----------------------------------------------------------------------------
def _md_table(frame: pd.DataFrame) -> str:
    head = ["", *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(i), *map(str, row)]) + " |" for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join(lines)


def _cell(mean, low, high, diff=False) -> str:
    fmt = "{:+.3f}" if diff else "{:.3f}"
    if mean != mean:
        return "n/a"
    if low != low:
        return fmt.format(mean) + " (no CI)"
    if diff:
        return f"{fmt.format(mean)} [{low:+.3f}, {high:+.3f}]"
    return f"{fmt.format(mean)} ± {(high - low) / 2:.3f}"


def conclusions(summary: pd.DataFrame, metrics=KEY_METRICS, reference: str = REFERENCE) -> list[str]:
    """Plain sentences on which differences vs ``reference`` are significant, never more."""
    rows = summary[(summary["arm"] != reference) & summary["metric"].isin(metrics) & (summary["n_pairs"] > 0)]
    if rows.empty:
        return [f"- No arm can be compared with {reference}: the {reference} arm is missing."]
    if rows["n_pairs"].max() < 2:
        return ["- Single seed: no interval. No difference can be called significant; "
                "run at least 3 seeds (`--seeds 3`) to get confidence intervals."]
    sig, n = rows[rows["significant"]], len(rows)
    n_seeds = int(rows["n_pairs"].max())
    lines = []
    for _, r in sig.iterrows():
        name = r["metric"].split("_", 1)[1]
        side = "higher" if r["diff"] > 0 else "lower"
        lines.append(f"- **{r['arm']}** vs {reference}, {r['metric']}: {r['diff']:+.3f} (95% CI {r['diff_low']:+.3f} "
                     f"to {r['diff_high']:+.3f}): {side} than {reference}; a higher {name} means "
                     f"{MEANING.get(name, name)}.")
    if sig.empty:
        lines.append(f"- None of the {n} differences vs {reference} on the key metrics is significant at 95%: "
                     "every interval includes 0. This run cannot tell the arms apart. That is what a small "
                     "budget gives; it is not evidence that the arms are equal.")
    else:
        lines.append(f"- The other {n - len(sig)} of {n} differences are not significant (their intervals include 0).")
        lines.append(f"- With {n} comparisons at 95% and no correction for multiple comparisons, about "
                     f"{0.05 * n:.1f} would come out significant by chance alone: treat a lone significant "
                     "difference as a hint to re-test with more seeds, not as a finding.")
    same: dict[tuple, list[str]] = {}
    means = summary[summary["metric"].isin(metrics)].pivot(index="arm", columns="metric", values="mean")
    for arm, row in means.round(6).iterrows():
        same.setdefault(tuple(row.fillna(-1)), []).append(arm)
    for arms in (a for a in same.values() if len(a) > 1):
        lines.append(f"- {', '.join(arms)} gave identical values on every key metric: at this budget, "
                     "what sets them apart did not change a single answer.")
    if n_seeds < 5:
        t = stats.sps.t.ppf(0.975, n_seeds - 1)
        lines.append(f"- With {n_seeds} seeds the intervals are wide (t = {t:.1f} for {n_seeds - 1} degree(s) "
                     "of freedom), so most differences are not significant; more seeds and steps narrow them.")
    return lines


def _machine() -> str:
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.platform()}, {os.cpu_count()} CPU cores{gpu}, torch {torch.__version__}"


def _arms_table(settings: dict, arms: list[str]) -> str:
    """Markdown: each arm's description and config changes (what it really ran)."""
    defined = settings.get("arm_definitions", {})
    rows = [(arm, defined.get(arm, {}).get("description", ""),
             arm_registry.format_changes(defined.get(arm, {}).get("changes"))) for arm in arms]
    return "\n".join(["| arm | description | config changes |", "|---|---|---|",
                      *(f"| {a} | {d} | {c.replace('|', '/')} |" for a, d, c in rows)])


def _skipped(settings: dict, arms: list[str]) -> list[str]:
    skipped = {a: why for a, why in settings.get("skipped", {}).items() if a not in arms}
    if not skipped:
        return []
    return ["Skipped (their model cannot be loaded here):", "",
            *(f"- **{arm}**: {why}" for arm, why in skipped.items()), ""]


def write_report(out: Path, settings: dict, results: pd.DataFrame, summary: pd.DataFrame, timing: dict) -> None:
    """``out/report.md``: setup, results table, differences vs sft, plain conclusions."""
    from lab.models import resolve

    cfg = HybridConfig.from_dict(settings["config"])  # the experiment's setting; arms change it below
    n_prompts = int(pd.read_csv(next((out / "runs").glob("*/eval.csv"))).query("decoding == 'greedy'").shape[0])
    seeds = sorted(results["seed"].unique().tolist())
    mean = summary.pivot(index="arm", columns="metric", values="mean")
    arms = list(dict.fromkeys(results["arm"]))
    cells = {(r.arm, r.metric): (r.mean, r.ci_low, r.ci_high, r.diff, r.diff_low, r.diff_high, r.significant)
             for r in summary.itertuples()}
    metrics = [m for m in KEY_METRICS if m in mean.columns]
    table = pd.DataFrame({m: [_cell(*cells[(a, m)][:3]) for a in arms] for m in metrics}, index=arms)
    diffs = pd.DataFrame({m: [_cell(*cells[(a, m)][3:6], diff=True) + (" *" if cells[(a, m)][6] else "")
                              for a in arms if a != REFERENCE] for m in metrics},
                         index=[a for a in arms if a != REFERENCE])
    load = timing["load"]
    compute = results[results["metric"].isin(["train_seconds", "eval_seconds"])]["value"].sum()
    text = [
        "# Ablation: does the hybrid beat plain SFT?", "",
        f"Written by `python -m lab ablate` on {datetime.datetime.now():%Y-%m-%d %H:%M}.", "",
        "## Setup", "",
        f"- model: {resolve(cfg.model).name}; arms: {', '.join(arms)} (what each changes: below)",
        f"- every arm: the `{settings['preset']}` preset's config"
        + (f", with --set {', '.join(f'{k}={v}' for k, v in settings.get('set', {}).items())}"
           if settings.get("set") else ""),
        f"- seeds: {', '.join(map(str, seeds))} (n = {len(seeds)}); steps per trained arm: {settings['steps']}",
        f"- B = {cfg.prompts_per_step} prompts a step, k = {cfg.samples_per_prompt} samples a prompt "
        f"(sft trains on the same B reference answers a step); lr {cfg.lr}; {cfg.max_new_tokens} new tokens",
        f"- evaluation: {n_prompts} prompts, {evaluate.describe_source(eval_source(settings), cfg.dataset)}; "
        "greedy and sampled "
        f"(temperature {cfg.temperature}, top-p {cfg.top_p}, seeded with the run's seed)",
        f"- machine: {_machine()}; load average {load[0]:.1f} at start, {load[1]:.1f} at the end",
        f"- wall time of this invocation: {timing['elapsed_s'] / 60:.1f} min (CPU time "
        f"{timing['cpu_s'] / 60:.1f} min); training + evaluation time "
        f"summed over all (arm, seed): {compute / 60:.1f} min", "",
        "## Arms", "", _arms_table(settings, arms), "", *_skipped(settings, arms),
        "## Results (mean over seeds ± half-width of the 95% CI)", "", _md_table(table), "",
        f"## Difference vs {REFERENCE} (paired over seeds; [95% CI]; * = the interval excludes 0)", "",
        _md_table(diffs), "",
        "## What this shows", "", *conclusions(summary), "",
        "## How to read it", "",
        "Each number is first averaged over the held-out prompts of one run, then over seeds. "
        "The interval is a t-interval over seeds, and the difference vs sft is paired by seed "
        "(same data order, initial adapter and sampling seed): the seed, not the prompt, is the "
        "unit of replication, because every prompt of a run is answered by the same trained model. "
        "Higher values mean: " + "; ".join(f"{k}: {v}" for k, v in MEANING.items()) + ". "
        "`ppl` is exp(mean NLL) of the answers under the base model; `words` counts words (lower-cased `\\w+` runs, as every word statistic of lab.metrics). "
        "`disc` (in summary.csv) is each arm's own critic, so it is not compared across arms.", "",
        "Files: results.csv, summary.csv, metrics.png, quality_diversity.png, curves_reward.png, "
        "curves_loss_sft.png, config_<arm>.json, runs/<arm>_seed<n>/ (eval.csv, history.csv).", "",
    ]
    (out / "report.md").write_text("\n".join(text))

