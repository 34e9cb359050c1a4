"""Ablation: does the hybrid beat plain SFT? Arms x seeds on one budget, one honest report.

The arms (one per switch: :data:`lab.experiments.arms.ARMS`, ``ablate --list``; custom ones from
``--arms-file``) and how ``--set`` layers under them are in :mod:`lab.experiments.arms`; a preset
(:mod:`lab.experiments.settings`) names the arms it runs by default (``quick``: 7, the CI smoke
test; ``standard`` and ``claims``: the arms that answer the sketch's claims, ``claims`` with SFT at
matched wall time and a planned MDE; ``calibrate``: learning curves; ``atlas``: every arm beside
the hybrid, :mod:`lab.experiments.atlas`; ``full``: all, for a GPU; measured times: the README and
``reports/``). ``ablate`` prints the expected wall time first (:mod:`lab.experiments.cost`, a
documented cost model) and refines it after each run.
Every trained arm runs through :class:`lab.trainer.HybridTrainer` with the same steps (an arm's
``steps_factor`` changes its own: ``sft_matched`` trains (1 + k)x, the hybrid's trained tokens), the
same ``B`` prompts a step and (where it samples) the same ``k`` samples a prompt; the
``sft`` arm trains on the same ``B`` reference answers a step. ``base`` is the untrained
model. Each (arm, seed) is evaluated on the same prompts (:func:`lab.evaluate.heldout`: the
held-out split of the config's ``dataset``, or all rows of the file given as ``eval_data``;
greedy and sampled with the seed), and :mod:`lab.eval.stats` turns the per-seed values into
intervals and paired differences vs ``sft``. ``run_ablation`` writes to ``out``:

- ``results.csv``: long format, one row per arm, seed and metric (``arm, seed, metric, value``);
  metrics are ``<decoding>_<metric>`` (``sampled_semantic``) plus ``train_seconds``, ``eval_seconds``;
- ``summary.csv``: :func:`lab.eval.stats.summarize_results` (mean, 95% CI, paired difference vs sft);
- ``paired.csv`` (per arm and metric: mean paired difference vs sft per prompt and seed, cluster-bootstrap
  and per-seed t intervals, MDE), ``movement.csv``, ``stability.csv``, ``hacking.csv`` (and their
  ``*_runs.csv``), ``curves_reward_seeds.png``, ``hacking.png``: :mod:`lab.experiments.report`;
- ``metrics.png``, ``quality_diversity.png``, ``curves_reward.png``, ``curves_loss_sft.png``
  (:func:`lab.experiments.figures.plot_metrics`, :func:`~lab.experiments.figures.plot_quality_diversity`, :func:`~lab.experiments.figures.plot_curves`);
- ``report.md`` (:func:`lab.experiments.report.write_report`; with each arm's description and config changes), ``config_<arm>.json``,
  ``ablation.json`` (the settings, each arm's changes as run), and
  ``runs/<arm>_seed<n>/`` (``eval.csv`` per prompt, ``history.csv``, ``samples.csv``: every sampled
  response with its reward and the critic's pre-update score).

An (arm, seed) already in ``results.csv`` is skipped, so an interrupted run continues, and
``--seeds`` can grow later (the other settings must stay the same). The command line is
``python -m lab ablate`` (:mod:`lab.__main__`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from pathlib import Path

import pandas as pd

from lab import evaluate, models
from lab.experiments import arms as arm_registry
from lab.experiments import atlas, claims, figures, report
from lab.experiments.cost import COST_NOTE, expected_jobs, heldout_size
from lab.eval import stats
from lab.experiments.report import KEY_METRICS, REFERENCE, conclusions, eval_source, write_report  # noqa: F401 (conclusions)
from lab.experiments.arms import Arm
from lab.experiments.curves import LearningCurve
from lab.experiments.settings import (ABLATION_PRESETS, CLAIMS_ARMS, QUICK_ARMS, STANDARD_ARMS,  # noqa: F401
                                      arm_config, arm_steps, settings_for)
from lab.config import HybridConfig
from lab.runtime.memory import PeakMemory
from lab.trainer import HybridTrainer

TIMES = ("train_seconds", "setup_seconds", "train_cpu_seconds", "setup_cpu_seconds", "eval_seconds", "eval_cpu_seconds")
UNPAIRED = ("greedy_disc", "sampled_disc", *TIMES, "steps", "peak_rss_mb")  # own critic; cost


def time_matched_steps(out: Path, settings: dict, arm: str, seed: int) -> int:
    """The steps at which ``arm`` (``match_time``: another arm) trains as long as that arm did at ``seed``:
    ``its seconds in training steps / sft's seconds a step`` (each run's training seconds less its setup:
    loading models costs the first run of a process more than the next), from the ``sft`` and target
    runs of the same seed in ``results.csv``. On a CPU the seconds are the runs' CPU seconds
    (``*_cpu_seconds``): with one torch thread, each run's wall time on a core of its own, whatever
    else shared the machine while it ran (wall seconds measured beside other work gave SFT 216 steps
    at one seed of the claims run where CPU seconds give 169, and would have given a third of them at
    the next); on a GPU, wall seconds."""
    target = settings["arm_definitions"][arm]["match_time"]
    on_cpu = _on_cpu(arm_config(settings, arm, seed))
    train, setup = ("train_cpu_seconds", "setup_cpu_seconds") if on_cpu else ("train_seconds", "setup_seconds")
    results = pd.read_csv(out / "results.csv") if (out / "results.csv").exists() else pd.DataFrame(
        columns=["arm", "seed", "metric", "value"])
    values = results[results["seed"] == seed].pivot_table(index="arm", columns="metric", values="value")
    needed = [train, setup, "steps"]
    if any(name not in values.index for name in (target, "sft")) or any(m not in values for m in needed) \
            or values.loc[[target, "sft"], needed].isna().any().any():
        raise ValueError(f"arm {arm!r} needs the {target!r} and 'sft' runs of seed {seed} in {out} first, with "
                         f"their {train} and {setup} (runs recorded before 2026-12-07 lack them: remove their "
                         "rows from results.csv, and the same command reruns them)")
    sft, matched = values.loc["sft"], values.loc[target]
    per_step = (sft[train] - sft[setup]) / sft["steps"]
    return max(1, int(round((matched[train] - matched[setup]) / per_step)))


def _on_cpu(config: HybridConfig) -> bool:
    """Whether ``config`` runs on the CPU (its runs are then timed in CPU seconds)."""
    return models.pick_device(config.device).type == "cpu"


def _same_run(settings: dict, old, new) -> bool:
    """Whether two change lists give the same config (a change spelled out at its default is no change)."""
    if old is None or new is None:
        return old is new
    def resolved(changes):
        return HybridConfig.from_dict({**settings["config"], **changes}).to_dict()
    return resolved(old) == resolved(new)


def _check_resume(out: Path, settings: dict) -> dict:
    """Refuse to mix results from different steps / prompts / configs in one folder."""
    path = out / "ablation.json"
    if path.exists():
        old = json.loads(path.read_text())
        for key in ("steps", "eval_limit", "eval_data", "eval_columns", "config", "curve_every"):
            if old.get(key, 0 if key == "curve_every" else None) != settings[key]:  # folders from before curves
                raise ValueError(f"{out} holds an ablation with {key}={old.get(key)!r}, not {settings[key]!r}; "
                                 "use another --out, or the same settings to continue it")
        defined = old.get("arm_definitions", {})
        for arm, definition in settings["arm_definitions"].items():
            if arm in defined and not _same_run(settings, defined[arm]["changes"], definition["changes"]):
                raise ValueError(f"{out} holds arm {arm!r} run with changes {defined[arm]['changes']!r}, not "
                                 f"{definition['changes']!r}; use another --out, or another name for the new arm")
            if arm in defined and defined[arm].get("steps") != definition.get("steps"):
                raise ValueError(f"{out} holds arm {arm!r} run with steps {defined[arm].get('steps')!r}, not "
                                 f"{definition.get('steps')!r}; use another --out, or another name for the new arm")
        ran = list(dict.fromkeys(old["arms"] + settings["arms"]))
        skipped = {**old.get("skipped", {}), **settings.get("skipped", {})}  # a run of other --arms keeps them
        settings = {**settings, "arms": ran, "seeds": sorted(set(old["seeds"]) | set(settings["seeds"])),
                    "arm_definitions": {**defined, **settings["arm_definitions"]},
                    "skipped": {arm: why for arm, why in skipped.items() if arm not in ran}}
    partial = path.with_name(f"{path.name}.{os.getpid()}")  # shards may write it at once: whole files only
    partial.write_text(json.dumps(settings, indent=2) + "\n")
    os.replace(partial, path)
    return settings


def _metric_rows(arm: str, seed: int, frame: pd.DataFrame, times: dict, steps: int, peak: float) -> list[dict]:
    table = evaluate.summarize(frame).drop(columns="n")
    rows = [dict(arm=arm, seed=seed, metric=f"{decoding}_{metric}", value=value)
            for decoding, values in table.iterrows() for metric, value in values.items()]
    return rows + [dict(arm=arm, seed=seed, metric=name, value=value)
                   for name, value in (*times.items(), ("steps", steps), ("peak_rss_mb", peak))]


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
                 n_boot: int = 2000, curve_every: int | None = None, shard: tuple[int, int] | None = None,
                 **config) -> pd.DataFrame | None:
    """Run the arms x seeds (skipping those already in ``out/results.csv``), write the report
    folder, return the summary (:func:`lab.eval.stats.summarize_results`); a run that SIGINT or
    SIGTERM stops is not recorded and the ablation returns None at once (a rerun continues). Arguments: :func:`settings_for`;
    ``n_boot``: bootstrap resamples of the paired statistics (:mod:`lab.experiments.report`).
    ``shard=(k, n)``: run only the seeds ``s`` with ``s % n == k - 1``, so that ``n`` processes (one a
    core) share one folder: each appends its runs to ``results.csv`` and writes the report from all
    the runs there when it ends, so the last to end writes the whole report.

    An arm whose model cannot be loaded here (``larger_d``'s Hub model offline) is an error when
    ``arms`` names it, and is skipped, with the reason in the log and the report, when it came
    from the preset's arms or ``all``."""
    settings = settings_for(preset, arms, seeds, steps, eval_limit, eval_data, eval_columns,
                            custom_arms=custom_arms, arm_sets=arm_sets, curve_every=curve_every, **config)
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
    jobs = [(arm, seed) for seed in settings["seeds"] if shard is None or seed % shard[1] == shard[0] - 1
            for arm in settings["arms"]]
    if shard is not None:
        log(f"shard {shard[0]}/{shard[1]}: seeds {sorted({seed for _, seed in jobs})}")
    expected = expected_jobs(settings, [job for job in jobs if job not in done])
    log(f"expected wall time: {sum(expected.values()) / 60:.0f} min for {len(expected)} of {len(jobs)} (arm, seed) "
        f"runs ({COST_NOTE}); refined after each run")
    if settings.get("plan"):
        log(claims.planned(settings, heldout_size(settings["eval_limit"], eval_source(settings),
                                                   tuple(sorted((settings["eval_columns"] or {}).items())))[0]))
    base, base_greedy, examples, pace = None, None, None, [0.0, 0.0]  # pace: seconds spent, expected
    for i, (arm, seed) in enumerate(jobs, 1):
        if (arm, seed) in done:
            log(f"[{i}/{len(jobs)}] {arm} seed {seed}: already in results.csv, skipped")
            continue
        config = arm_config(settings, arm, seed)
        folder = out / "runs" / f"{arm}_seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        t0, cpu0, memory = time.perf_counter(), time.process_time(), PeakMemory()
        if settings["arm_definitions"][arm]["changes"] is None:  # base: the untrained model
            if base is None:
                base = models.load(config.model, config.device, config.dtype, verbose=False)
            model, tokenizer = base
            examples = examples or _examples(settings, config, tokenizer)
            options = dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                           top_p=config.top_p, max_prompt_tokens=config.max_prompt_tokens, seed=seed)
            if base_greedy is None:  # greedy answers of the untrained model are the same for every seed
                base_greedy = evaluate.evaluate_model(model, tokenizer, examples, ("greedy",), **options)
            sampled = evaluate.evaluate_model(model, tokenizer, examples, ("sampled",), **options)
            frame, steps = pd.concat([base_greedy, sampled], ignore_index=True), 0
            times = dict.fromkeys(TIMES[:4], 0.0)  # no training, no setup
        else:
            trainer = HybridTrainer(config, verbose=False)
            times = dict(setup_seconds=time.perf_counter() - t0, setup_cpu_seconds=time.process_time() - cpu0)
            examples = examples or _examples(settings, config, trainer.tokenizer)
            curve = LearningCurve(examples, settings["curve_every"])
            steps = time_matched_steps(out, settings, arm, seed) if "match_time" in settings["arm_definitions"][arm] \
                else arm_steps(settings, arm)
            trainer.run(steps, progress=False, callbacks=[memory, *([curve] if curve.every else [])])
            if trainer.stop_reason is not None:  # SIGINT / SIGTERM mid-run: not a finished run, so not recorded
                log(f"[{i}/{len(jobs)}] {arm} seed {seed}: stopped by {trainer.stop_reason} after "
                    f"{trainer.step_count} steps, not recorded; the same command continues from it")
                return None
            times.update(train_seconds=time.perf_counter() - t0 - curve.seconds,  # the curve's evaluations
                         train_cpu_seconds=time.process_time() - cpu0 - curve.cpu_seconds)  # are not training
            if curve.rows:
                pd.DataFrame(curve.rows).to_csv(folder / "curve.csv", index=False)
            frame = evaluate.evaluate_trainer(trainer, examples)
            trainer.history.to_csv(folder / "history.csv", index=False)
            samples = trainer.samples  # fresh samples: reward and D's pre-update score (lab.eval.diagnostics)
            if not samples.empty:  # the prompt as a number: its text is in the training data
                samples.insert(1, "prompt_id", pd.factorize(samples.pop("prompt"))[0])
                samples.to_csv(folder / "samples.csv", index=False)
            del trainer
            gc.collect()
        train_s = times["train_seconds"]
        eval_s = time.perf_counter() - t0 - train_s
        frame.to_csv(folder / "eval.csv", index=False)
        memory()  # after its evaluation too
        times.update(eval_seconds=eval_s, eval_cpu_seconds=time.process_time() - cpu0 - times["train_cpu_seconds"])
        rows = pd.DataFrame(_metric_rows(arm, seed, frame, times, steps, memory.peak))
        rows.to_csv(results_path, mode="a", header=not results_path.exists(), index=False)
        sem = rows.set_index("metric")["value"].get("sampled_semantic", math.nan)
        pace[0], pace[1] = pace[0] + time.perf_counter() - t0, pace[1] + expected.pop((arm, seed))
        left = sum(expected.values()) * (pace[0] / pace[1] if pace[1] > 0 else 1.0)  # at the pace so far
        log(f"[{i}/{len(jobs)}] {arm} seed {seed}: train {train_s:.0f}s, eval {eval_s:.0f}s, "
            f"CPU {time.process_time() - cpu0:.0f}s, sampled semantic {sem:.3f} | "
            f"elapsed {time.perf_counter() - started:.0f}s, about {left / 60:.0f} min left")
    results = pd.read_csv(results_path)
    summary = stats.summarize_results(results, REFERENCE, unpaired=UNPAIRED)
    summary.to_csv(out / "summary.csv", index=False)
    figures.write_all(out, results, summary, KEY_METRICS)
    found = report.gather(out, results, REFERENCE, n_boot=n_boot)
    if settings.get("atlas"):
        atlas.write(out, results, json.loads((out / "ablation.json").read_text())["arm_definitions"], n_boot,
                    on_cpu=_on_cpu(HybridConfig.from_dict(settings["config"])))
    elapsed = time.perf_counter() - started
    write_report(out, json.loads((out / "ablation.json").read_text()), results, summary,
                 dict(elapsed_s=elapsed, cpu_s=time.process_time() - cpu_start,
                      load=(load_start, os.getloadavg()[0]), ran=len(jobs) - len(done & set(jobs)), jobs=len(jobs)),
                 found)
    log(f"ablation done in {elapsed / 60:.1f} min: {out / 'report.md'}")
    return summary
