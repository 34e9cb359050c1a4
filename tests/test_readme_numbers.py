"""Every number the README quotes from a report appears in that committed report."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def test_results_table_matches_the_committed_quick_report():
    report = (ROOT / "reports/quick-2026-11-26/report.md").read_text()
    rows = [line for line in _section("Results").splitlines() if re.match(r"\| [a-z_+]+ \| \d", line)]
    assert len(rows) == 9
    for row in rows:
        assert row in report, row  # the row exactly as the report prints it


def test_claims_and_benchmark_numbers_come_from_their_files():
    report = (ROOT / "reports/quick-2026-11-26/report.md").read_text()
    for text in ("-0.003, 95% CI [-0.043, +0.033], MDE 0.048", "-0.035, 95% CI [-0.224, +0.153], MDE 0.209"):
        assert text in report.replace("difference ", ""), text
    bench = json.loads((ROOT / "reports/bench-2026-11-26/bench.json").read_text())
    section = _section("Benchmark")
    for key in ("naive_samples_per_s", "trl_samples_per_s", "kit_samples_per_s", "kit_rl_samples_per_s"):
        assert f"{bench[key]:.3f}" in section, key
    for key, digits in (("speedup_samples_per_s", 2), ("speedup_vs_trl", 2), ("rl_speedup_vs_trl", 2),
                        ("resident_param_ratio", 2)):
        assert f"{bench[key]:.{digits}f}" in section, key
