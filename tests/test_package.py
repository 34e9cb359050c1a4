"""The package's shape: every module and folder reachable lazily, few modules at the top, and no
lab file past the size of one concept."""

import importlib
import pkgutil
from pathlib import Path

import lab

LAB = Path(lab.__file__).parent


def test_every_module_and_folder_is_exposed_lazily():
    found = {m.name for m in pkgutil.iter_modules([str(LAB)]) if not m.name.startswith("_")}
    assert found == set(lab._MODULES) | set(lab._FOLDERS)
    for name in found:
        assert getattr(lab, name) is importlib.import_module(f"lab.{name}")
    for folder in lab._FOLDERS:
        package = importlib.import_module(f"lab.{folder}")
        for module in pkgutil.iter_modules(package.__path__):
            assert getattr(package, module.name) is importlib.import_module(f"lab.{folder}.{module.name}")


def test_the_top_of_lab_holds_at_most_15_modules():
    top = [p for p in LAB.glob("*.py")]
    assert len(top) <= 15, sorted(p.name for p in top)


def test_no_lab_file_is_past_400_lines():
    sizes = {str(p.relative_to(LAB)): len(p.read_text().splitlines()) for p in LAB.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
