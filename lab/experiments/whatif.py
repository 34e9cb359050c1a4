"""A what-if with a verdict: two configs, a few seeds, the paired difference on held-out prompts.

"What if I double lambda?" One run of each config says little: seeds move a small run more than
most knobs do. :func:`what_if` trains both configs as the two custom arms ``a`` and ``b`` of a
small ablation (:func:`lab.experiments.ablation.run_ablation`: the same seeds, data order and
held-out prompts for both; resumable in its folder), then compares ``b`` with ``a`` prompt by
prompt over the seeds (:func:`lab.eval.stats.paired_table`): the difference, its 95% interval, the
minimum detectable difference (MDE) at that budget, and a verdict. :func:`expected_minutes` is the
ablation's cost model, said before anything runs. The playground's What-if tab calls both.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from lab.config import HybridConfig
from lab.eval import diagnostics, stats
from lab.experiments import ablation, cost
from lab.experiments.arms import Arm

METRICS = ("greedy_semantic", "greedy_rouge_l")


DATA = ("dataset", "dataset_columns", "chat_template")  # both sides' data: trained on and evaluated on


def _arms(a: HybridConfig, b: HybridConfig) -> dict[str, Arm]:
    return {name: Arm(f"what-if side {name}", {k: v for k, v in config.to_dict().items() if k not in ("seed", *DATA)})
            for name, config in (("a", a), ("b", b))}


def _settings(a: HybridConfig, b: HybridConfig, steps: int, seeds: int, eval_limit: int) -> dict:
    return ablation.settings_for("quick", **_options(a, b, steps, seeds, eval_limit))


def _options(a: HybridConfig, b: HybridConfig, steps: int, seeds: int, eval_limit: int) -> dict:
    """The ablation's arguments: the two sides as custom arms, their common data for every arm (held-out
    prompts from its held-out split)."""
    changed = [name for name in DATA if getattr(a, name) != getattr(b, name)]
    if changed:
        raise ValueError(f"a what-if compares two ways of training on the same data; {', '.join(changed)} differ: "
                         "evaluate each dataset with its own ablation (python -m lab ablate --dataset ...)")
    return dict(arms=["a", "b"], seeds=seeds, steps=steps, eval_limit=eval_limit, custom_arms=_arms(a, b),
                **{name: getattr(a, name) for name in DATA})


def expected_minutes(a: HybridConfig, b: HybridConfig, steps: int = 20, seeds: int = 2, eval_limit: int = 12) -> float:
    """Expected wall minutes of :func:`what_if` on this machine type (the ablation's cost model)."""
    settings = _settings(a, b, steps, seeds, eval_limit)
    jobs = [(arm, seed) for seed in settings["seeds"] for arm in settings["arms"]]
    return sum(cost.expected_jobs(settings, jobs).values()) / 60


def verdict(row: pd.Series) -> str:
    """One line: ``b - a`` with its interval and MDE, and what it means.

    >>> verdict(pd.Series(dict(metric="greedy_semantic", diff=0.05, boot_low=0.01, boot_high=0.09, mde=0.04,
    ...                        significant=True)))
    'greedy_semantic: b - a = +0.050 [+0.010, +0.090], MDE 0.040: b is better'
    """
    low, high = row["boot_low"], row["boot_high"]
    if low != low:
        low, high = row["t_low"], row["t_high"]
    if row["significant"]:
        meaning = "b is better" if row["diff"] > 0 else "a is better"
    elif low == high:
        meaning = "both sides gave the same answers"
    else:
        meaning = f"no difference this budget can detect (it sees {row['mde']:.3f} or more)"
    return f"{row['metric']}: b - a = {row['diff']:+.3f} [{low:+.3f}, {high:+.3f}], MDE {row['mde']:.3f}: {meaning}"


def what_if(a: HybridConfig, b: HybridConfig, steps: int = 20, seeds: int = 2, eval_limit: int = 12,
            out: str | Path | None = None, log=print, n_boot: int = 1000) -> pd.DataFrame:
    """Train ``a`` and ``b`` for ``steps`` steps with seeds ``0 .. seeds - 1`` and evaluate both on
    ``eval_limit`` held-out prompts; returns :func:`lab.eval.stats.paired_table` of ``b`` vs ``a``
    on :data:`METRICS` with a ``verdict`` column. ``out``: the ablation folder (default: a new
    temporary one; the same folder continues an interrupted comparison)."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="lab-what-if-"))
    ablation.run_ablation(out, "quick", log=log, n_boot=n_boot, **_options(a, b, steps, seeds, eval_limit))
    results = pd.read_csv(out / "results.csv")
    table = stats.paired_table(diagnostics.per_prompt(out, results), results, METRICS, reference="a", n_boot=n_boot)
    return table.assign(verdict=[verdict(row) for _, row in table.iterrows()])
