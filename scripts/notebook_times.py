"""Each notebook's measured times and peak RAM, written at its top from a book report.

``make book`` (quick mode) and ``LAB_QUICK=0 make book`` (full mode) record every notebook's wall
time and its kernel's peak memory in ``times.json``; a report folder keeps both as ``quick.json``
and ``full.json``. This script writes one "**Measured**" paragraph into the first cell of every
notebook from them (replacing the previous one), pointing at the report's expected results:

    python scripts/notebook_times.py reports/book-2026-12-06           # rewrite the paragraphs
    python scripts/notebook_times.py reports/book-2026-12-06 --check   # exit 1 where one differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
MARK = "**Measured**"


def duration(seconds: float) -> str:
    """``48 s`` below two minutes, else ``12 min``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def memory(mib: float) -> str:
    """``850 MiB`` below 1 GiB, else ``2.1 GiB``."""
    return f"{mib:.0f} MiB" if mib < 1024 else f"{mib / 1024:.1f} GiB"


def measured(run: dict | None) -> str:
    """``4 min (3 min of CPU), peak RAM 2.1 GiB`` for one notebook's entry of a times file, with
    ``, on MACHINE`` where the entry ran on another machine than the file names."""
    if not run or run.get("seconds") is None:
        return "not measured yet"
    cpu = f" ({duration(run['cpu_seconds'])} of CPU)" if run.get("cpu_seconds") else ""
    where = f", on {run['machine']}" if run.get("machine") else ""
    return f"{duration(run['seconds'])}{cpu}, peak RAM {memory(run['peak_mib'])}{where}"


def paragraph(name: str, report: Path) -> str:
    """The "**Measured**" paragraph of notebook ``name`` from ``report``'s quick.json and full.json."""
    quick, full = (json.loads((report / f"{mode}.json").read_text()) for mode in ("quick", "full"))
    link = f"../{report.relative_to(ROOT).as_posix()}/README.md#{name}"
    return (f"{MARK} ({full['machine']}; {full['conditions']}): quick mode (`LAB_QUICK=1`) "
            f"{measured(quick['notebooks'].get(name))}; full mode {measured(full['notebooks'].get(name))}. "
            f"What the full mode shows, with its figures: [{report.name}]({link}).")


def stamp(path: Path, report: Path, check: bool = False) -> bool:
    """Write (or with ``check`` only compare) the paragraph in ``path``'s first markdown cell;
    True when it was already as written."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    text = "".join(cell["source"])
    want = paragraph(path.stem, report)
    kept = re.sub(rf"\n\n{re.escape(MARK)}[^\n]*(?:\n(?!\n)[^\n]*)*", "", text)
    new = kept.rstrip("\n") + "\n\n" + want
    if new == text or check:
        return new == text
    cell["source"] = new.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a report folder with quick.json and full.json")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 where a notebook differs")
    args = parser.parse_args(argv)
    report = args.report.resolve()
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    stale = [p.name for p in notebooks if not stamp(p, report, args.check)]
    if args.check and stale:
        print("not as measured:", ", ".join(stale))
        return 1
    print(f"{'checked' if args.check else 'stamped'} {len(notebooks)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
