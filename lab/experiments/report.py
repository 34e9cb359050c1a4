"""The ablation's report: setup, per-seed results, the paired per-prompt statistics, how far each
arm moved, stability and collapse, reward hacking, and a verdict on each of the original sketch's
three claims.

:func:`gather` reads an ablation folder (``results.csv`` and every run's ``eval.csv``,
``history.csv``, ``samples.csv``), computes the tables (:mod:`lab.eval.stats`,
:mod:`lab.eval.diagnostics`), writes them as CSV beside the report and draws the figures;
:func:`write_report` writes ``report.md`` (:func:`sections`: the evidence's part of it).
:mod:`lab.experiments.ablation` runs the arms, then calls both.

The claims and their tests: :mod:`lab.experiments.claims`.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
from pathlib import Path

import pandas as pd
import torch

from lab import evaluate
from lab.experiments import arms as arm_registry
from lab.eval import diagnostics
from lab.experiments import claims, figures
from lab.ui import plots
from lab.eval import stats
from lab.config import HybridConfig
from lab.models import resolve

PAIRED_METRICS = ("greedy_semantic", "greedy_rouge_l", "sampled_semantic", "sampled_ppl", "sampled_distinct_2",
                  "sampled_self_bleu", "greedy_words")
REFERENCE = "sft"
KEY_METRICS = ("greedy_semantic", "greedy_rouge_l", "sampled_semantic", "sampled_ppl",
               "sampled_distinct_2", "sampled_self_bleu")
MEANING = {  # what a HIGHER value means (no metric here is simply "better")
    "semantic": "closer in meaning to the reference", "rouge_l": "more word overlap with the reference",
    "bleu": "more n-gram overlap with the reference", "ppl": "less typical text for the base model",
    "distinct_1": "more varied words across answers", "distinct_2": "more varied word pairs across answers",
    "self_bleu": "answers more alike across prompts (mode collapse)", "words": "longer answers",
    "repetition": "more repeated phrases (loops)", "disc": "the arm's own critic likes the answer more",
}


def eval_source(settings: dict) -> str:
    """The source the ablation evaluates on: ``eval_data``, else the config's ``dataset``."""
    return settings.get("eval_data") or HybridConfig.from_dict(settings["config"]).dataset


def gather(out: Path, results: pd.DataFrame, reference: str = "sft", metric: str = claims.GENERALISATION,
           n_boot: int = 2000, seed: int = 0) -> dict:
    """Compute every table (written as ``paired.csv``, ``movement.csv``, ``stability.csv``,
    ``hacking.csv``) and draw ``curves_reward_seeds.png`` and ``hacking.png``; returns them."""
    out = Path(out)
    arms = list(dict.fromkeys(results["arm"]))
    prompts = diagnostics.per_prompt(out, results)
    metrics = [m for m in (*PAIRED_METRICS, *(f"{d}_{f}" for f in claims.FACTUAL for d in ("greedy", "sampled")))
               if m in set(results["metric"])]
    paired = stats.paired_table(prompts, results, metrics, reference, n_boot, seed)
    runs = diagnostics.read_runs(out, arms)
    stability_runs, stability = diagnostics.stability_table(runs, results, metric)
    hacking_runs, hacking = diagnostics.hacking_table(runs)
    moved = diagnostics.movement(prompts, results, reference=reference)
    for name, table in (("paired", paired), ("movement", moved), ("stability", stability),
                        ("stability_runs", stability_runs), ("hacking", hacking), ("hacking_runs", hacking_runs)):
        table.to_csv(out / f"{name}.csv", index=False)
    histories = {arm: [r["history"] for r in seeds.values() if r["history"] is not None]
                 for arm, seeds in runs.items()}
    plots.save(figures.plot_seed_bands(histories, "reward", labels=arms), out / "curves_reward_seeds.png")
    plots.save(figures.plot_hacking(diagnostics.hacking_curves(runs), labels=arms), out / "hacking.png")
    found = claims.find(prompts, results, stability_runs, reference, metric, n_boot, seed)
    return dict(paired=paired, movement=moved, stability=stability, stability_runs=stability_runs,
                hacking=hacking, hacking_runs=hacking_runs, claims=found, reference=reference, metric=metric)


# --- Markdown --------------------------------------------------------------------------------
def _f(value, fmt="{:.3f}") -> str:
    return "n/a" if value is None or value != value else fmt.format(value)


def _ci(low, high) -> str:
    return "n/a" if low != low else f"[{low:+.3f}, {high:+.3f}]"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def sections(found: dict) -> list[str]:
    """The report's Markdown lines for :func:`gather`'s tables."""
    ref, paired = found["reference"], found["paired"]
    lines = [f"## Paired differences vs {ref}, per prompt and seed", "",
             "Each arm minus the reference on the same held-out prompts and seeds. **Bootstrap**: a cluster "
             "bootstrap that draws seeds, then prompts (one draw shared by the drawn seeds, as every seed "
             "answers the same prompts), with a small-sample t stretch (lab.eval.stats.paired_bootstrap); "
             "**per-seed t**: the t-interval over the seeds' mean differences, as in the table above. The "
             "bootstrap uses every prompt, so it is usually much narrower; with few seeds, the t-interval "
             "is wide by construction (t = 4.3 for 3 seeds). **MDE**: the difference this design detects with "
             "80% power, (t_{df,0.975} + t_{df,0.80}) x SE, SE the bootstrap's standard error (per-seed t "
             "SE where a metric has no per-prompt value: distinct-n). * = the bootstrap interval excludes 0.", ""]
    rows = [[r.arm, r.metric, _f(r.diff, "{:+.3f}") + (" *" if r.significant else ""), _ci(r.boot_low, r.boot_high),
             _f(r.t_diff, "{:+.3f}") + " " + _ci(r.t_low, r.t_high), _f(r.mde),
             f"{r.n_seeds} x {r.n_prompts}" if r.n_prompts else f"{r.n_seeds} seeds (set-level)"]
            for r in paired.itertuples()]
    lines += _table(["arm", "metric", "diff", "95% bootstrap CI", "per-seed t: diff [95% CI]", "MDE",
                     "seeds x prompts"], rows) if rows else ["(no arm to compare with the reference)"]
    moved = found["movement"]
    lines += ["", "## Answer length and how far each policy moved", "",
              "Words per answer (greedy, sampled), and the share of greedy answers that differ from the untrained "
              f"model's (`base`) and from {ref}'s at the same seed (what everything but SFT changed), mean over seeds.",
              ""]
    lines += _table(["arm", "greedy words", "sampled words", "changed vs base", f"changed vs {ref}"],
                    [[r.arm, _f(r.greedy_words, "{:.1f}"), _f(r.sampled_words, "{:.1f}"),
                      _f(r.changed_vs_base, "{:.0%}"), _f(r.changed_vs_sft, "{:.0%}")] for r in moved.itertuples()])
    lines += ["", *stability_lines(found["stability"]), "", *hacking_lines(found["hacking"]), "",
              *claims.lines(found["claims"], ref, found["metric"]), ""]
    return lines


def stability_lines(table: pd.DataFrame) -> list[str]:
    t = diagnostics.THRESHOLDS
    lines = ["## Stability and collapse", "",
             "Per arm over its seeds: the reward curve's spread across seeds (standard deviation per step, mean "
             "over steps), the late-window reward (last fifth of the steps; mean ± sd over seeds), the seeds "
             f"flagged for collapse (distinct-2 of the samples down > {t['distinct_drop']:.0%}, self-BLEU up > "
             f"{t['self_bleu_rise']:.2f}, response length changed > {t['length_drift']:.0%}, first vs last fifth "
             "of training; lab.eval.diagnostics), and the worst seed (lowest held-out greedy semantic) with its "
             "held-out values. Figure: curves_reward_seeds.png (mean over seeds, band: range over seeds).", ""]
    trained = table
    if trained.empty:
        return lines + ["(no trained arm)"]
    rows = []
    for r in trained.to_dict("records"):
        flags = "n/a (samples nothing)" if "collapse" not in r or r["collapse"] != r["collapse"] else \
            f"{int(r['collapse'])}/{r['seeds']} (d2 {int(r['distinct_drop'])}, sb {int(r['self_bleu_rise'])}, " \
            f"len {int(r['length_drift'])})"
        worst = "n/a" if r.get("worst_seed", math.nan) != r.get("worst_seed", math.nan) else \
            f"seed {int(r['worst_seed'])}: sem {_f(r.get('worst_greedy_semantic'))}, " \
            f"d2 {_f(r.get('worst_sampled_distinct_2'))}, words {_f(r.get('worst_greedy_words'), '{:.1f}')}"
        rows.append([r["arm"], _f(r["curve_sd"]), f"{_f(r['reward_late'])} ± {_f(r['reward_late_sd'])}", flags, worst])
    return lines + _table(["arm", "reward spread", "late reward", "collapse flags", "worst seed (held-out)"], rows)


def hacking_lines(table: pd.DataFrame) -> list[str]:
    lines = ["## Reward hacking: does D's score part from the true reward?", "",
             "From each run's samples.csv: per step, the discriminator's pre-update score (on samples it has not "
             "trained on) against the true reward: their correlation and their gap (D - reward), early (first "
             "fifth of the steps) vs late (last fifth). A run is flagged when D's score rises, the gap rises and D "
             "over-rates the late samples (each one-sided p < 0.05; lab.eval.diagnostics). The generator chases D's "
             "score in `adversarial` (D keeps learning online) and `adversarial_frozen_d` (D frozen after a "
             "quarter of the run); in the other arms D is only a baseline. Figure: hacking.png.", ""]
    if table.empty:
        return lines + ["(no run logged samples with D's score)"]
    rows = [[r.arm, f"{_f(r.corr_early, '{:+.2f}')} -> {_f(r.corr_late, '{:+.2f}')}",
             f"{_f(r.gap_early, '{:+.3f}')} -> {_f(r.gap_late, '{:+.3f}')}", _f(r.d_slope, "{:+.4f}"),
             _f(r.reward_slope, "{:+.4f}"), f"{int(r.hacking)}/{r.seeds}"] for r in table.itertuples()]
    flagged = [f"{r.arm} ({int(r.hacking)} of {r.seeds} seeds)" for r in table.itertuples() if r.hacking]
    summary = ("- D's score rose while the true reward did not keep up in: " + ", ".join(flagged) + ".") if flagged \
        else "- No run shows D's score rising away from the true reward."
    return lines + _table(["arm", "corr(D, reward) early -> late", "gap early -> late", "D slope / step",
                           "reward slope / step", "seeds flagged"], rows) + ["", summary]


# --- the whole report ----------------------------------------------------------------------------
def _md_table(frame: pd.DataFrame) -> str:
    rows = [[str(i), *map(str, row)] for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join(_table(["", *map(str, frame.columns)], rows))


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
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.platform()}, {os.cpu_count()} CPU cores{gpu}, torch {torch.__version__}"


def _arms_table(settings: dict, arms: list[str]) -> str:
    """Markdown: each arm's description and config changes (what it really ran)."""
    defined = settings.get("arm_definitions", {})
    rows = [(arm, defined.get(arm, {}).get("description", ""),
             arm_registry.format_changes(defined.get(arm, {}).get("changes"))
             + (f"; {defined[arm]['steps']} steps" if "steps" in defined.get(arm, {}) else "")) for arm in arms]
    return "\n".join(["| arm | description | config changes |", "|---|---|---|",
                      *(f"| {a} | {d} | {c.replace('|', '/')} |" for a, d, c in rows)])


def _skipped(settings: dict, arms: list[str]) -> list[str]:
    skipped = {a: why for a, why in settings.get("skipped", {}).items() if a not in arms}
    if not skipped:
        return []
    return ["Skipped (their model cannot be loaded here):", "",
            *(f"- **{arm}**: {why}" for arm, why in skipped.items()), ""]


def _steps_by_seed(results: pd.DataFrame, arm: str) -> str:
    rows = results[(results["arm"] == arm) & (results["metric"] == "steps")]
    return ", ".join(f"{int(v)}" for v in rows["value"]) or "n/a"


def write_report(out: Path, settings: dict, results: pd.DataFrame, summary: pd.DataFrame, timing: dict,
                 found: dict | None = None) -> None:
    """``out/report.md``: setup, results table, differences vs sft, plain conclusions, and
    (``found``: :func:`lab.experiments.report.gather`) the paired per-prompt table, answer length and policy
    movement, stability and collapse, reward hacking and the verdict on the sketch's three claims."""
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
    realised = claims.realised(settings, found["claims"], n_prompts) if found else None
    resumed = "" if timing.get("ran", 0) == timing.get("jobs", 0) else (
        f", in which {timing['ran']} of its {timing['jobs']} (arm, seed) runs ran (the others were in results.csv "
        "already: an earlier invocation or another shard)")
    compute = results[results["metric"].isin(["train_seconds", "eval_seconds"])]["value"].sum()
    text = [
        "# Ablation: does the hybrid beat plain SFT?", "",
        f"Written by `python -m lab ablate` on {datetime.datetime.now():%Y-%m-%d %H:%M}.", "",
        "## Setup", "",
        f"- model: {resolve(cfg.model).name}; arms: {', '.join(arms)} (what each changes: below)",
        f"- every arm: the `{settings['preset']}` preset's config"
        + (f", with --set {', '.join(f'{k}={v}' for k, v in settings.get('set', {}).items())}"
           if settings.get("set") else ""),
        f"- seeds: {', '.join(map(str, seeds))} (n = {len(seeds)}); steps per trained arm: {settings['steps']}"
        + "".join(f", {a}: {d['steps']}" for a, d in settings.get("arm_definitions", {}).items()
                  if "steps" in d and a in arms),
        *(f"- {a}: steps by seed {_steps_by_seed(results, a)} ({d['description']})"
          for a, d in settings.get("arm_definitions", {}).items() if "match_time" in d and a in arms),
        *([f"- {claims.planned(settings, n_prompts)} (stated before the run)"] if settings.get("plan") else []),
        *([f"- {realised}"] if realised else []),
        f"- B = {cfg.prompts_per_step} prompts a step, k = {cfg.samples_per_prompt} samples a prompt "
        f"(sft trains on the same B reference answers a step); lr {cfg.lr}; {cfg.max_new_tokens} new tokens",
        f"- evaluation: {n_prompts} prompts, {evaluate.describe_source(eval_source(settings), cfg.dataset)}; "
        "greedy and sampled "
        f"(temperature {cfg.temperature}, top-p {cfg.top_p}, seeded with the run's seed)",
        f"- machine: {_machine()}; load average {load[0]:.1f} at start, {load[1]:.1f} at the end",
        f"- wall time of this invocation: {timing['elapsed_s'] / 60:.1f} min (CPU time "
        f"{timing['cpu_s'] / 60:.1f} min){resumed}; training + evaluation time "
        f"summed over all (arm, seed): {compute / 60:.1f} min", "",
        "## Arms", "", _arms_table(settings, arms), "", *_skipped(settings, arms),
        "## Results (mean over seeds ± half-width of the 95% CI)", "", _md_table(table), "",
        f"## Difference vs {REFERENCE} (per-seed paired t; [95% CI]; * = the interval excludes 0)", "",
        _md_table(diffs), "",
        "## What this shows", "", *conclusions(summary), "",
        *(sections(found) if found else []),
        "## How to read it", "",
        "Each number is first averaged over the held-out prompts of one run, then over seeds. "
        "The interval is a t-interval over seeds, and the difference vs sft is paired by seed "
        "(same data order, initial adapter and sampling seed): the seed, not the prompt, is the "
        "unit of replication, because every prompt of a run is answered by the same trained model. "
        "The paired per-prompt table keeps that: its bootstrap resamples whole seeds (a lucky run stays one "
        "draw) and, within them, the prompts, so it also uses how consistently an arm differs prompt by prompt. "
        "Higher values mean: " + "; ".join(f"{k}: {v}" for k, v in MEANING.items()) + ". "
        "`ppl` is exp(mean NLL) of the answers under the base model; `words` counts words (lower-cased `\\w+` runs, as every word statistic of lab.core.ngrams). "
        "`disc` (in summary.csv) is each arm's own critic, so it is not compared across arms.", "",
        "Files: results.csv, summary.csv, paired.csv, movement.csv, stability.csv, stability_runs.csv, "
        "hacking.csv, hacking_runs.csv, metrics.png, quality_diversity.png, curves_reward.png, "
        "curves_reward_seeds.png, curves_loss_sft.png, hacking.png, config_<arm>.json, "
        "runs/<arm>_seed<n>/ (eval.csv per prompt, history.csv per step, samples.csv per sample).", "",
    ]
    (out / "report.md").write_text("\n".join(text))

