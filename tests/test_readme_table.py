"""The README's idea -> switch -> arm -> notebook table is true: each notebook a row cites has a
code cell that runs the idea (names one of the row's config keys or arms); a row whose idea a
notebook meets only in an exercise says "exercise"."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TICK = re.compile(r"`([^`]+)`")


def rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Experiments: every idea of the sketch is a switch", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.search(r"\d\d", cells[3]) and cells[0] != "idea":
            yield pytest.param(cells, id=cells[0][:40])


def names(cells) -> set[str]:
    """Config keys, values and arm names the switch and arm columns name."""
    found = set()
    for token in TICK.findall(cells[1] + " " + cells[2]):
        for part in re.split(r"[=/ ,]+", token.replace("--set", " ").replace("--", " ")):
            part = part.strip("*.()")
            if len(part) > 2:
                found.add(part.split(".")[-1] if part.startswith("lab.") else part)
    return found


def code(number: str) -> str:
    notebook = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("cells", list(rows()))
def test_each_cited_notebook_runs_the_idea(cells):
    wanted = names(cells)
    assert wanted, cells
    for number in re.findall(r"\b(\d\d)\b(?! *\(exercise)", cells[3]):
        assert any(name in code(number) for name in wanted), f"notebook {number} runs none of {sorted(wanted)}"
