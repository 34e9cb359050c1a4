"""Every "defined in `lab/...`" pointer of the notebooks and the README names the file that
defines what it points at; every `lab/...` path and `lab.x.y` name they mention exists."""

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "notebooks").glob("*.ipynb")) + [ROOT / "README.md", ROOT / "benchmarks" / "README.md"]
POINTER = re.compile(r"defined\s+in\s+`(lab/[\w/]+\.py)`")
TICKED = re.compile(r"`([^`]+)`")


def prose(path: Path) -> str:
    """A notebook's markdown cells, or a Markdown file's text."""
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def defined_names(file: Path) -> set[str]:
    """Top-level functions, classes and assigned names of a Python file."""
    names = set()
    for node in ast.parse(file.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def bare(token: str) -> str:
    """`lab.generator.sample(model, ...)` -> `sample`; `load_examples("factual")` -> `load_examples`."""
    return token.split("(")[0].strip().split(".")[-1]


def pointed(text: str, match: re.Match) -> tuple[list[str], str | None]:
    """The names listed inside the pointer's parenthesis (``(`a`, `b`; defined in ...)``) and the
    subject just before it (``lab.data.load_examples(...)`` in ``... (defined in ...)``)."""
    depth, start = 0, match.start()
    while start > 0:
        start -= 1
        if text[start] == ")":
            depth += 1
        elif text[start] == "(":
            if depth == 0:
                break
            depth -= 1
    spans = [(m.start(), m.end(), m.group(1)) for m in TICKED.finditer(text)]  # paired over the whole text
    inside = [s for a, b, s in spans if start < a and b <= match.start() and not s.startswith("lab/")]
    before = [s for a, b, s in spans if b <= start and not text[b:start].strip()]  # `subject` (...
    return inside, (before[-1] if before else None)


def pointers():
    for doc in DOCS:
        text = prose(doc)
        for match in POINTER.finditer(text):
            yield pytest.param(doc, text, match, id=f"{doc.name}:{match.group(1)}@{match.start()}")


@pytest.mark.parametrize("doc, text, match", list(pointers()))
def test_a_defined_in_pointer_names_the_defining_file(doc, text, match):
    file = ROOT / match.group(1)
    assert file.is_file(), f"{doc.name} points at {match.group(1)}, which does not exist"
    inside, subject = pointed(text, match)
    names = [bare(t) for t in inside] or ([bare(subject)] if subject else [])
    module = match.group(1)[:-3].replace("/", ".")
    for name in names:
        if subject and not inside and subject.split("(")[0] == module:
            continue  # the pointer names the module itself
        assert name in defined_names(file), f"{doc.name}: `{name}` is not defined in {match.group(1)}"


def test_every_lab_path_and_name_the_docs_mention_exists():
    missing = []
    for doc in DOCS:
        for token in TICKED.findall(prose(doc)):
            for path in re.findall(r"\blab/[\w/]+\.py\b", token):
                if not (ROOT / path).is_file():
                    missing.append(f"{doc.name}: {path}")
            dotted = re.fullmatch(r"(lab(?:\.\w+)+)(?:\(.*\))?", token.strip())
            if dotted and not resolves(dotted.group(1)):
                missing.append(f"{doc.name}: {dotted.group(1)}")
    assert not missing, "\n".join(sorted(set(missing)))


def resolves(dotted: str) -> bool:
    """``lab.a.b.c``: a module, or an attribute of the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False
