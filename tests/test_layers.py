"""``lab``'s imports run only downward, in the layer order that ``lab/__init__.py`` draws: no
import cycle, no lower layer importing a higher one, and no ``lab`` import tucked inside a
function except where the module imported needs an optional heavy dependency."""

import ast
from pathlib import Path

import lab

LAB = Path(lab.__file__).parent
# Lowest first. A module belongs to the layer of its longest matching prefix; a module may import
# its own layer (without cycles) and every layer below.
LAYERS = [
    ["lab.core"],
    ["lab.readers", "lab.runtime", "lab.fast"],
    ["lab.config"],
    ["lab.data", "lab.models"],
    ["lab.signals", "lab.rewards", "lab.generator", "lab.losses", "lab.discriminator", "lab.warm_start",
     "lab.advantages"],
    ["lab.variants", "lab.objective"],
    ["lab.trainer", "lab.checkpoint"],
    ["lab.evaluate", "lab.eval"],
    ["lab.ui"],
    ["lab.experiments", "lab.integrations"],
    ["lab.ui.widgets", "lab.ui.controls"],  # the playground: an app on top, its what-if runs an ablation
    ["lab.__main__"],
]
# Imported inside functions on purpose: each needs an optional dependency (trl, ipywidgets) that a
# plain run must not need installed.
LAZY_OK = {"lab.integrations.trl", "lab.ui.widgets", "lab.ui.controls"}
# The CLI imports a command's modules when that command runs, so that `--help` answers at once.
LAZY_IMPORTERS = {"lab.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(LAB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    matches = [(len(prefix), i) for i, names in enumerate(LAYERS) for prefix in names
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer of tests/test_layers.py: add it"
    return max(matches)[1]


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(lab module imported, inside a function?, line)`` for each lab import of ``path``."""
    tree, found = ast.parse(path.read_text()), []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.split(".")[0] == "lab":
                for alias in child.names:
                    candidate = f"{child.module}.{alias.name}"
                    target = candidate if (LAB.parent / candidate.replace(".", "/")).with_suffix(".py").exists() \
                        or (LAB.parent / candidate.replace(".", "/")).is_dir() else child.module
                    found.append((target, nested, child.lineno))
            elif isinstance(child, ast.Import):
                found.extend((a.name, nested, child.lineno) for a in child.names if a.name.split(".")[0] == "lab")
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = {module_name(p): p for p in LAB.rglob("*.py") if p != LAB / "__init__.py"}  # lab itself: no layer
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_no_lower_layer_imports_a_higher_one():
    wrong = [f"{name}:{line} imports {target}" for name, found in GRAPH.items() for target, _, line in found
             if target != "lab" and layer(target) > layer(name)]
    assert not wrong, "\n".join(wrong)


def test_no_lab_import_inside_a_function_but_optional_dependencies():
    wrong = [f"{name}:{line} imports {target} inside a function" for name, found in GRAPH.items()
             for target, nested, line in found
             if nested and name not in LAZY_IMPORTERS and target not in LAZY_OK]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    edges = {name: {t for t, _, _ in found if t in MODULES and t != name} for name, found in GRAPH.items()}

    def cycle_from(start):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges.get(node, ()):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [cycle_from(name) for name in edges]
    cycles = [" -> ".join(c) for c in cycles if c]
    assert not cycles, "\n".join(cycles[:5])
