"""The measured times and peak RAM at the top of each notebook and in the README's notebook table
are the ones reports/book-2026-12-06 recorded (scripts/notebook_times.py writes them)."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "reports" / "book-2026-12-06"
spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "scripts" / "notebook_times.py")
times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(times)


def test_each_notebook_states_the_times_its_report_measured():
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    stale = [p.name for p in notebooks if not times.stamp(p, REPORT, check=True)]
    assert not stale, f"run: python scripts/notebook_times.py {REPORT.relative_to(ROOT)}"


def test_the_readme_notebook_table_states_the_same_times():
    quick, full = (json.loads((REPORT / f"{mode}.json").read_text())["notebooks"] for mode in ("quick", "full"))
    table = re.finditer(r"^\| `(\d\d_\w+)` \|.*$", (ROOT / "README.md").read_text(), re.M)
    rows = {m.group(1): m.group(0) for m in table}
    assert len(rows) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    for name, row in rows.items():
        assert times.measured(quick.get(name)) in row and times.measured(full.get(name)) in row, name


def test_durations_and_sizes_read_as_a_person_would_write_them():
    assert [times.duration(s) for s in (9.4, 119, 125, 1091)] == ["9 s", "119 s", "2 min", "18 min"]
    assert [times.memory(m) for m in (850.2, 1024, 11686)] == ["850 MiB", "1.0 GiB", "11.4 GiB"]
    assert times.measured(None) == "not measured yet"
    run = {"seconds": 200, "cpu_seconds": 90, "peak_mib": 2048}
    assert times.measured(run) == "3 min (90 s of CPU), peak RAM 2.0 GiB"
    assert times.measured({**run, "machine": "a 2-core Intel Xeon"}).endswith("2.0 GiB, on a 2-core Intel Xeon")
