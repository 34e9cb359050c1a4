"""The original sketch's claims, each tested the same way in every ablation report.

The tests are decided before a run, so a verdict is not picked after seeing the numbers. Each
claim is "supported" when the 95% interval of its difference excludes 0 in the claimed
direction, "not supported" when it excludes 0 in the other direction, else "not detectable at
this budget", stated with the minimum detectable difference (MDE, :func:`lab.eval.stats.mde`):

1. *The hybrid generalises better than SFT*: ``hybrid`` minus an SFT arm on ``greedy_semantic``
   (meaning match with the held-out references), paired per seed and prompt, cluster-bootstrap
   interval; against ``sft`` (equal steps) and, where they ran, ``sft_matched`` (equal trained
   tokens) and ``sft_walltime`` (equal training wall time, measured per seed on the same machine).
2. *It is more stable than pure RL*: ``rl`` minus ``hybrid`` in the per-seed relative drop of
   distinct-2 during training (:mod:`lab.eval.diagnostics`; > 0: RL lost more variety), paired
   t-interval over seeds; the collapse flags and the reward curves' spread are shown beside it.
3. *It rewards truthfulness*: ``hybrid`` minus ``sft`` on the first factual metric the results
   hold (``mc2``, ``mc1``, ``truthfulness``; from a factual evaluation set); without one, the
   report says the claim was not measured.

The fourth, *online learning* (the loop can run on a stream for ever), is not an ablation arm:
it is a long ``--stream`` run (the README's Results).
"""

from __future__ import annotations

import math

import pandas as pd

from lab.eval import stats

FACTUAL = ("mc2", "mc1", "truthfulness")  # factual metric names, in order of preference
GENERALISATION = "greedy_semantic"
SFT_ARMS = {"sft": "equal steps", "sft_matched": "equal trained tokens", "sft_walltime": "equal training wall time"}


def factual_metric(results: pd.DataFrame) -> str | None:
    """The first of :data:`FACTUAL` that ``results`` holds (greedy before sampled), else None."""
    names = set(results["metric"])
    for name in FACTUAL:
        for decoding in ("greedy", "sampled"):
            if f"{decoding}_{name}" in names:
                return f"{decoding}_{name}"
    return None


def compare(prompts, results, arm, ref, metric, n_boot, seed) -> dict | None:
    """``arm - ref`` on ``metric``: the row of :func:`lab.eval.stats.paired_table`, None if either is missing."""
    table = stats.paired_table(prompts, results[results["arm"].isin([arm, ref])], [metric], ref, n_boot, seed)
    table = table[table["arm"] == arm]
    return None if table.empty else table.iloc[0].to_dict()


def verdict(row: dict | None, what: str, low_key="boot_low", high_key="boot_high") -> str:
    """supported / not supported / not detectable at this budget (with the MDE), in one line."""
    if row is None or row["n_seeds"] < 2:
        return f"not testable here: {what} needs both arms with at least 2 seeds"
    low, high = row[low_key], row[high_key]
    if low != low:
        low, high = row["t_low"], row["t_high"]
    numbers = f"difference {row['diff'] if row['diff'] == row['diff'] else row['t_diff']:+.3f}, 95% CI " \
              f"[{low:+.3f}, {high:+.3f}], MDE {row['mde']:.3f}"
    if low == high:
        return f"**not detectable at this budget**: the two arms gave the same values ({numbers})"
    if low > 0:
        return f"**supported** ({numbers})"
    if high < 0:
        return f"**not supported**: the opposite is significant ({numbers})"
    return f"**not detectable at this budget** ({numbers}: a true difference smaller than the MDE " \
           "is usually missed)"


def stability(per_run: pd.DataFrame) -> dict | None:
    """rl minus hybrid in the per-seed relative distinct-2 drop: the paired t-interval over seeds."""
    if per_run.empty or not {"rl", "hybrid"} <= set(per_run["arm"]):
        return None
    drop = per_run.pivot_table(index="seed", columns="arm", values="distinct_2_drop", dropna=False)
    if not {"rl", "hybrid"} <= set(drop.columns):  # too few steps to compare early and late
        return None
    both = drop[["rl", "hybrid"]].dropna()
    d = (both["rl"] - both["hybrid"]).to_numpy()
    diff, low, high = stats.mean_ci(d)
    return dict(n_seeds=len(d), diff=diff, boot_low=math.nan, boot_high=math.nan, t_diff=diff, t_low=low,
                t_high=high, mde=stats.seed_t_mde(d))


def find(prompts, results, stability_runs, reference: str, metric: str, n_boot: int, seed: int) -> dict:
    """Every claim's comparison row: ``generalisation`` ``{sft arm: row}`` (the arms of :data:`SFT_ARMS`
    that ran; ``reference`` if none did), ``stability`` a row, ``truthfulness`` ``(metric, row)``."""
    arms = set(results["arm"])
    general = {ref: compare(prompts, results, "hybrid", ref, metric, n_boot, seed) if "hybrid" in arms else None
               for ref in SFT_ARMS if ref in arms} or {reference: None}
    factual = factual_metric(results)
    truth = compare(prompts, results, "hybrid", reference, factual, n_boot, seed) \
        if factual and {"hybrid", reference} <= arms else None
    spread = {ref: components(prompts, "hybrid", ref, metric) for ref, row in general.items() if row is not None}
    return dict(generalisation=general, stability=stability(stability_runs), truthfulness=(factual, truth),
                components=spread)


def components(prompts: pd.DataFrame, arm: str, ref: str, metric: str) -> tuple[float, float, float] | None:
    """:func:`lab.eval.stats.variance_components` of ``arm - ref`` on ``metric`` (``<decoding>_<name>``)
    over the (seed, prompt) cells both answered; None with fewer than 2 seeds or prompts."""
    decoding, name = metric.split("_", 1)
    rows = prompts[(prompts["decoding"] == decoding) & prompts["arm"].isin([arm, ref])]
    wide = rows.pivot_table(index=["seed", "prompt_id"], columns="arm", values=name)
    if not {arm, ref} <= set(wide.columns):
        return None
    diff = (wide[arm] - wide[ref]).dropna().unstack("prompt_id").dropna(axis=1)  # (S, P)
    return stats.variance_components(diff.to_numpy()) if min(diff.shape) >= 2 else None


def _planned_value(settings: dict, prompts: int) -> float:
    """The plan's MDE for the preset's seeds x ``prompts``, from the pilot's variance components."""
    plan = settings["plan"]
    return stats.planned_mde(plan["sd_seed"], plan["sd_prompt"], plan["sd_cell"], len(settings["seeds"]), prompts)


def planned(settings: dict, prompts: int) -> str | None:
    """The preset's planned MDE (its ``plan``: the comparison and a pilot's :func:`lab.eval.stats.variance_components`)
    for ``len(seeds)`` x ``prompts``, in one line; None without a plan."""
    plan = settings.get("plan")
    if not plan:
        return None
    value = _planned_value(settings, prompts)
    return (f"planned MDE of {plan['arm']} - {plan['reference']} on {plan['metric']}: {value:.3f} "
            f"({len(settings['seeds'])} seeds x {prompts} prompts; the pilot's sd at the seed, prompt and cell "
            f"level: {plan['sd_seed']:.3f}, {plan['sd_prompt']:.3f}, {plan['sd_cell']:.3f}; lab.eval.stats.planned_mde)")


def realised(settings: dict, found: dict, prompts: int) -> str | None:
    """The plan's comparison as it came out, in one line: its realised MDE against the planned one and
    the target, the realised variance components against the pilot's, what twice the seeds or twice
    the prompts would give with them, and which level (seed or prompt) carries more of the standard
    error, so which of the two would narrow it; None without a plan or the comparison."""
    plan = settings.get("plan")
    if not plan or plan["arm"] != "hybrid":
        return None
    row, parts = found["generalisation"].get(plan["reference"]), found.get("components", {}).get(plan["reference"])
    if row is None or parts is None or row["mde"] != row["mde"]:
        return None
    seeds = int(row["n_seeds"])
    planned_value = _planned_value(settings, prompts)
    target = plan.get("target")
    against = "" if target is None else (f", within the target {target}" if row["mde"] <= target else
                                         f", above the target {target} by {row['mde'] - target:.3f}")
    level = "prompt" if parts[1] ** 2 / prompts > parts[0] ** 2 / seeds else "seed"  # the larger part of the SE
    return (f"realised MDE of hybrid - {plan['reference']} on {plan['metric']}: {row['mde']:.3f} ({seeds} seeds x "
            f"{int(row['n_prompts'])} prompts; planned {planned_value:.3f}{against}); its sd at the seed, prompt and "
            f"cell level: {parts[0]:.3f}, {parts[1]:.3f}, {parts[2]:.3f} (the pilot's: {plan['sd_seed']:.3f}, "
            f"{plan['sd_prompt']:.3f}, {plan['sd_cell']:.3f}); with these, {2 * seeds} seeds would give "
            f"{stats.planned_mde(*parts, 2 * seeds, prompts):.3f} and {2 * prompts} prompts "
            f"{stats.planned_mde(*parts, seeds, 2 * prompts):.3f}: the {level} level sets it")


def lines(claims: dict, reference: str, metric: str) -> list[str]:
    """The report's section on the claims (Markdown lines)."""
    factual, truth = claims["truthfulness"]
    out = ["## The sketch's three claims", ""]
    for ref, row in claims["generalisation"].items():
        out.append(f"- *The hybrid generalises better than SFT* at {SFT_ARMS.get(ref, 'equal steps')} "
                   f"(hybrid - {ref}, {metric}): " + verdict(row, "the comparison"))
    if "sft_matched" not in claims["generalisation"] and "sft_walltime" not in claims["generalisation"]:
        out.append("  (no SFT arm at matched compute or wall time ran: a hybrid win could be longer training)")
    out.append("- *It is more stable than pure RL* (rl - hybrid, relative distinct-2 drop during training, "
               "per-seed t): " + verdict(claims["stability"], "the comparison", "t_low", "t_high"))
    if factual:
        out.append(f"- *It rewards truthfulness* (hybrid - {reference}, {factual}): " + verdict(truth, "the comparison"))
    else:
        out.append("- *It rewards truthfulness*: **not measured**: the results hold no factual metric (mc1, mc2, "
                   "truthfulness); they exist only for factual evaluation rows (evaluate on a factual source, "
                   "e.g. `--data factual`).")
    out.append("- A claim \"not detectable at this budget\" is not evidence that the arms are equal: more seeds "
               "or steps (the `full` preset on a GPU) narrow the interval; the MDE says how large an effect "
               "this run could have found.")
    return out
