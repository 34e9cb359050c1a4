"""Paired differences of an ablation's arms against any one of them (the report compares with sft).

    python scripts/paired_vs.py reports/gan-default-2026-12-06 hybrid_no_d

writes ``OUT/paired_vs_<reference>.csv``: per arm and key metric, the per-prompt paired difference
with its cluster-bootstrap 95% interval and MDE (:func:`lab.eval.stats.paired_table`), and prints
the greedy rows.
"""

import sys
from pathlib import Path

import pandas as pd

from lab.eval import diagnostics, stats
from lab.experiments.report import KEY_METRICS


def main(out: str, reference: str, n_boot: int = 2000) -> pd.DataFrame:
    folder = Path(out)
    results = pd.read_csv(folder / "results.csv")
    if reference not in set(results["arm"]):
        raise SystemExit(f"{folder} has no arm {reference!r}; its arms: {', '.join(dict.fromkeys(results['arm']))}")
    table = stats.paired_table(diagnostics.per_prompt(folder, results), results, KEY_METRICS, reference, n_boot)
    table.to_csv(folder / f"paired_vs_{reference}.csv", index=False)
    return table


if __name__ == "__main__":
    table = main(sys.argv[1], sys.argv[2])
    shown = table[table["metric"].str.startswith("greedy_")]
    print(shown[["arm", "metric", "n_seeds", "n_prompts", "diff", "boot_low", "boot_high", "mde", "significant"]]
          .round(4).to_string(index=False))
