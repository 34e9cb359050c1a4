"""The package exposes every submodule, and no lab file grows past the size of one concept."""

import importlib
import pkgutil
from pathlib import Path

import lab

LAB = Path(lab.__file__).parent


def test_every_submodule_is_exposed_lazily():
    found = {m.name for m in pkgutil.iter_modules([str(LAB)]) if not m.name.startswith("_")}
    assert found == set(lab._SUBMODULES)
    for name in found:
        assert getattr(lab, name) is importlib.import_module(f"lab.{name}")


def test_no_lab_file_is_past_about_400_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in LAB.glob("*.py")}
    assert max(sizes.values()) <= 420, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
