"""Refit the ablation's cost model to an ablation folder's measured runs.

    python scripts/fit_cost.py reports/claims-2026-12-06 [--table FILE]

Prints the fitted constants next to :data:`lab.experiments.cost.COST` and writes the table of
runs it used (each run's terms, measured and fitted CPU seconds) to ``--table``
(:func:`lab.experiments.cost.fit`). Copy the constants into ``COST`` and record the fit in
reports/cost-model/README.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.experiments import cost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="an ablation's report folder (ablation.json, results.csv)")
    parser.add_argument("--table", type=Path, help="write the runs used, with measured and fitted seconds, here")
    args = parser.parse_args(argv)
    constants, table = cost.fit(args.folder)
    print(f"{len(table)} runs: {', '.join(f'{a} {s}' for a, s in zip(table['arm'], table['seed']))}")
    for name, value in constants.items():
        print(f"{name:>24}: {value:.4g} (was {cost.COST[name]:.4g})")
    for column in ("train", "eval"):
        error = (table[f"{column}_fitted"] / table[f"{column}_seconds"] - 1).abs()
        print(f"{column} seconds: fitted within {error.max():.0%} of measured (median {error.median():.0%})")
    if args.table:
        table.round(4).to_csv(args.table, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
