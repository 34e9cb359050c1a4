"""Every number the README quotes from a report appears in that committed report."""

import functools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
STANDARD = ROOT / "reports/standard-2026-11-26"
QUICK = ROOT / "reports/quick-2026-11-26"
CLAIMS = ROOT / "reports/claims-2026-12-06"
ATLAS = ROOT / "reports/atlas-2026-12-07"
BENCH = ROOT / "reports/bench-2026-11-26-rounds/bench.json"
CLAIM = re.compile(r"(difference|MDE|CI) \[?([+-]?\d+\.\d+)(?:, ([+-]?\d+\.\d+)\])?")


def _paired_text(path: Path) -> str:
    """A paired_vs_*.csv's rows as the README quotes them: ``diff [low, high], MDE m``."""
    import pandas as pd

    return "\n".join(f"{r.arm} {r.metric} {r.diff:+.3f} [{r.boot_low:+.3f}, {r.boot_high:+.3f}], MDE {r.mde:.3f}"
                     for r in pd.read_csv(path).itertuples())


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _atlas_section() -> str:
    return README[README.index("### The results atlas"):README.index("## Reliability")]


def test_results_table_is_the_committed_standard_report():
    report = (STANDARD / "report.md").read_text()
    arms = json.loads((STANDARD / "ablation.json").read_text())["arms"]
    standard = _section("Results")[:_section("Results").index("\n### ")]  # the claims run has its own table
    rows = [line for line in standard.splitlines() if re.match(r"\| [a-z_+]+ \| \d", line)]
    assert len(rows) == len(arms) == 8
    for row in rows:
        assert row in report, row  # the row exactly as the report prints it
    assert "the `standard` preset's config" in report  # made by `python -m lab ablate --preset standard`


def test_claim_numbers_come_from_the_reports():
    reports = {name: (folder / "report.md").read_text().replace("difference ", "")
               for name, folder in (("standard", STANDARD), ("quick", QUICK), ("claims", CLAIMS))}
    reports["claims vs hybrid"] = _paired_text(CLAIMS / "paired_vs_hybrid.csv")
    bullets = re.findall(r"^- \*.*?(?=\n\n|\n- |\Z)", _section("Results"), flags=re.M | re.S)
    claims = [" ".join(b.split()) for b in bullets]  # each bullet with its wrapped lines
    assert len(claims) >= 3
    for line in claims:
        numbers = [n for match in CLAIM.finditer(line) for n in match.groups()[1:] if n]
        assert all(any(n in text for text in reports.values()) for n in numbers), line


def test_benchmark_numbers_come_from_its_json():
    bench = json.loads(BENCH.read_text())
    section = _section("Benchmark")
    for key in ("naive_samples_per_s", "trl_samples_per_s", "kit_samples_per_s", "kit_rl_samples_per_s"):
        assert f"{bench[key]:.3f}" in section, key
    for key, digits in (("speedup_samples_per_s", 2), ("speedup_vs_trl", 2), ("rl_speedup_vs_trl", 2),
                        ("resident_param_ratio", 2)):
        assert f"{bench[key]:.{digits}f}" in section, key


@pytest.mark.parametrize("title, path", [
    ("**The real step, measured (2026-12-06).**", "reports/bench-2026-12-06/bench.json"),
    ("**The same on the Intel Xeon, fp32 and bf16 (2026-12-07).**", "reports/bench-2026-12-07-xeon/bench-fp32.json"),
    ("**bf16** (`dtype: auto`", "reports/bench-2026-12-07-xeon/bench-bf16.json")])
def test_the_real_step_benchmark_numbers_come_from_their_json(title, path):
    bench = json.loads((ROOT / path).read_text())
    start = README.index(title)
    ends = [README.find(mark, start + len(title)) for mark in ("\n\n", "**bf16**")]  # the paragraph's fp32 part
    text = README[start:min(end for end in ends if end > 0)]  # or its bf16 part
    for side in ("naive", "trl", "kit", "kit_fast", "kit_rl"):
        assert f"{bench[f'{side}_samples_per_s']:.3f}" in text, side
    for key in ("speedup_samples_per_s", "speedup_vs_trl", "fast_speedup_vs_trl", "rl_speedup_vs_trl"):
        assert f"{bench[key]:.2f}x" in text, key


def test_the_discriminator_comparison_comes_from_its_reports():
    folder = ROOT / "reports/gan-default-2026-12-06"
    import pandas as pd

    paired = pd.read_csv(folder / "paired_vs_hybrid_no_d.csv").set_index(["arm", "metric"])
    section = README[README.index("### Does reading the discriminator help?"):README.index("## Reliability")]
    for arm in ("sft", "hybrid", "mix", "hybrid_critic_cold"):
        row = paired.loc[(arm, "greedy_semantic")]
        quoted = f"{row['diff']:+.3f} [{row['boot_low']:+.3f}, {row['boot_high']:+.3f}], MDE {row['mde']:.3f}"
        assert quoted in section, (arm, quoted)
    base = pd.read_csv(folder / "paired.csv").set_index(["arm", "metric"]).loc[("base", "greedy_semantic")]
    assert f"{base['diff']:+.3f} [{base['boot_low']:+.3f}, {base['boot_high']:+.3f}]" in section
    assert "--steps 60" in section and json.loads((folder / "ablation.json").read_text())["steps"] == 60


def test_the_budget_table_comes_from_the_calibration():
    import pandas as pd

    budget = pd.read_csv(ROOT / "reports/calibrate-2026-12-06/budget.csv")
    section = README[README.index("### The training budget"):README.index("## Reliability")]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 7
    for line in rows:
        step = int(line.split("|")[1])
        for arm in ("sft", "hybrid"):
            r = budget[(budget["arm"] == arm) & (budget["step"] == step)].iloc[0]
            cell = f"{r['gain_vs_base']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]" + (" clear" if r["clear"] else "") \
                + (", flat" if r["flat"] else "")
            assert f" {cell} |" in line, (step, arm, cell)


def test_the_online_run_numbers_come_from_its_files():
    import pandas as pd

    folder = ROOT / "reports/online-2026-12-06"
    curve = pd.read_csv(folder / "curve.csv").set_index(["split", "step"])["greedy_semantic"]
    summary = json.loads((folder / "summary.json").read_text())
    section = README[README.index("### Online learning"):README.index("### The seed's claims")]
    for split in ("bundled", "factual"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {split} held-out"))
        for step in (0, 20, 60, 100, 120, 140, 160, 200):
            assert f"{curve[(split, step)]:.3f}" in row, (split, step)
    assert f"{summary['rss_early_mb']:.0f} to {summary['rss_late_mb']:.0f} MiB" in section
    assert f"+{summary['rss_growth_pct']:.1f}%" in section and f"{summary['rss_peak_mb']:.0f} MiB" in section
    assert summary["last_new_row_step"] == 126 and summary["history_rows_max"] == 21


def test_the_claims_runs_quoted_come_from_its_results():
    import pandas as pd

    results = pd.read_csv(ROOT / "reports/claims-2026-12-06/results.csv")
    value = results[results["seed"] == 0].set_index(["arm", "metric"])["value"]
    section = README[README.index("### The seed's claims at the calibrated budget"):README.index("## Reliability")]
    stepping = value[("hybrid", "train_cpu_seconds")] - value[("hybrid", "setup_cpu_seconds")]
    assert f"{value[('sft_walltime', 'steps')]:.0f} SFT steps against the hybrid's {value[('hybrid', 'steps')]:.0f}" \
        in " ".join(section.split())
    assert f"steps took {stepping:.0f} s of CPU" in " ".join(section.split())
    runs = results.pivot_table(index=["arm", "seed"], columns="metric", values="value")
    matched = runs.loc["sft_walltime", "steps"]
    assert f"{matched.min():.0f} to {matched.max():.0f} steps over the five seeds" in " ".join(section.split())


def test_the_claims_answers_come_from_its_report():
    import pandas as pd

    report = (CLAIMS / "report.md").read_text()
    quoted = report + "\n" + _paired_text(CLAIMS / "paired_vs_hybrid.csv")
    text = README[README.index("### The seed's claims at the calibrated budget"):README.index("### The results atlas")]
    section = " ".join(text.split())
    table = [line for line in text.splitlines() if re.match(r"\| [a-z_]+ \| \d\.\d{3} ± ", line)]
    assert len(table) == 8 and all(line in report for line in table)  # the report's rows, as printed
    for diff, low, high in re.findall(r"([+-]\d\.\d{3}),? (?:95% CI )?\[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]", section):
        assert diff in quoted and f"[{low}, {high}]" in quoted, (diff, low, high)
    realised = re.search(r"realised MDE of hybrid - sft_walltime on greedy_semantic: (\S+) .*planned (\S+), above the "
                         r"target 0.03 by (\S+)\); its sd at the seed, prompt and cell level: (\S+), (\S+), (\S+) "
                         r"\(.*\); with these, 10 seeds would give (\S+) and 252 prompts (\S+): the prompt level "
                         r"sets it", report)
    mde, planned, miss, sd_seed, sd_prompt, sd_cell, seeds, prompts = realised.groups()
    assert f"The realised MDE, {mde}, misses the target 0.03 (planned {planned}) by {miss}" in section
    assert f"(prompt-level sd {sd_prompt}, seed {sd_seed}, cell {sd_cell})" in section
    assert f"twice the seeds would give {seeds}, twice the prompts {prompts}" in section
    drop = pd.read_csv(CLAIMS / "stability_runs.csv").groupby("arm")["distinct_2_drop"].mean()
    assert f"lost {100 * drop['hybrid']:.1f}% of their distinct-2" in section
    assert f"samples none, {100 * drop['rl']:.1f}%" in section


def test_the_atlas_table_is_the_committed_atlas():
    import pandas as pd

    table = [line for line in (ATLAS / "atlas.md").read_text().splitlines() if line.startswith("|")]
    section = _atlas_section()
    assert [line for line in section.splitlines() if line.startswith("|")] == table
    runs = pd.read_csv(ATLAS / "results.csv")[["arm", "seed"]].drop_duplicates()
    assert len(table) == 2 + 44 and len(runs) == 88  # header, rule, the hybrid and 43 arms (larger_d: not offline)
    assert f"All {len(runs)} runs are committed" in " ".join(section.split())
    assert all((ATLAS / "runs" / f"{arm}_seed{seed}" / "eval.csv").exists()
               for arm, seed in runs.itertuples(index=False))


def test_each_notebook_link_to_the_atlas_finds_its_row():
    linked = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        linked |= set(re.findall(r"\(\.\./README\.md#atlas-([\w+]+)\)", text))
    missing = sorted(arm for arm in linked if f'<a id="atlas-{arm}"></a>' not in README)
    assert not missing, f"notebooks link atlas rows the README lacks: {missing}"
    assert len(linked) >= 41  # every arm a notebook section teaches (not base, aux_d)


def test_the_atlas_findings_come_from_its_files():
    import pandas as pd

    frame, results = pd.read_csv(ATLAS / "atlas.csv"), pd.read_csv(ATLAS / "results.csv")
    arms = frame[frame["arm"] != "hybrid"]
    section = " ".join(_atlas_section().split())
    cpu = results[results["metric"].isin(["train_cpu_seconds", "eval_cpu_seconds"])]["value"].sum() / 60
    assert f"{cpu:.0f} min of CPU in all, {cpu / 2:.0f} min a core" in section
    assert f"the median MDE on greedy semantic is {arms['greedy_semantic_mde'].median():.3f}" in section
    for metric in ("greedy_semantic", "greedy_rouge_l", "greedy_mc2", "sampled_distinct_2"):
        clear = arms[(arms[f"{metric}_low"] > 0) | (arms[f"{metric}_high"] < 0)]
        assert all(f"`{row.arm}` ({getattr(row, metric):+.3f})" in section for row in clear.itertuples())
    steps = frame.set_index("arm")["seconds_per_step"]
    assert (f"SFT {steps['sft']:.1f} s a step, the hybrid {steps['hybrid']:.1f}, the D-free hybrid "
            f"{steps['hybrid_no_d']:.1f}") in section
    assert f"up to {steps.max():.1f} (`{steps.idxmax()}`)" in section

    @functools.cache
    def greedy(arm, seed):
        answers = pd.read_csv(ATLAS / "runs" / f"{arm}_seed{seed}" / "eval.csv")
        return answers[answers["decoding"] == "greedy"]["completion"].fillna("").tolist()

    def same(a, b):
        return sum(x == y for seed in (0, 1) for x, y in zip(greedy(a, seed), greedy(b, seed)))

    unchanged = {same(arm, "hybrid") for arm in ("hybrid+kl", "hybrid+entropy", "no_clip")}
    assert len(unchanged) == 1 and f"`no_clip`, {unchanged.pop()} of the 32 greedy answers" in section
    family = ["grpo", "dr_grpo", "bnpo", "dapo", "gspo"]
    least = min(same(a, b) for i, a in enumerate(family) for b in family[i + 1:])
    assert f"same greedy answer as each other on at least {least} of 32" in section
    norms = pd.concat(pd.read_csv(ATLAS / "runs" / f"hybrid_seed{seed}" / "history.csv")["grad_norm"]
                      for seed in (0, 1))
    assert f"above 1 in {(norms > 1).sum()} of its {len(norms)} steps" in section
