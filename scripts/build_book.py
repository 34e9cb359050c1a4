"""The notebooks, readable without running them: ``make book``.

Executes every ``notebooks/NN_*.ipynb`` in order with nbconvert (quick mode when the caller
sets ``LAB_QUICK=1``, as ``make book`` does), writes each as ``OUT/NN_*.html`` with its outputs,
and ``OUT/index.html`` listing them in notebook order with their titles, goals, the time each
took and its kernel's peak resident memory (also in ``OUT/times.json``: per notebook ``seconds``,
``cpu_seconds`` (the kernel's CPU time: on a busy machine, close to what the wall time would be on
a quiet one with one thread), ``peak_mib``, the mode and the machine), and each executed
notebook's figures as ``OUT/figures/NN_*-<n>.png`` and its printed outputs as
``OUT/outputs/NN_*.txt``. The notebooks in the repository are only read: they stay without
outputs.

    python scripts/build_book.py --out build/book            # execute all (what `make book` runs)
    python scripts/build_book.py --out build/book 03 05      # only notebooks 03 and 05 (index: all)
    python scripts/build_book.py --out build/book --no-execute   # the text alone, in seconds

A notebook that fails is still written (its outputs up to the failing cell, the traceback
included) and marked in the index; the script then exits with status 1.
"""

from __future__ import annotations

import argparse
import html
import json
import multiprocessing
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def notebook_paths(folder: Path = NOTEBOOKS) -> list[Path]:
    """The numbered notebooks of ``folder``, in notebook order (``00_...`` first)."""
    return sorted(folder.glob("[0-9][0-9]_*.ipynb"))


def describe(path: Path) -> dict:
    """``name``, ``title`` (the first ``# `` heading) and ``goal`` (the first sentence of the
    ``**Goal.**`` paragraph) of a notebook, read from its JSON without executing it."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), path.stem)
    paragraph = re.search(r"\*\*Goal\.\*\*\s*(.+?)(?:\n\s*\n|$)", text, re.DOTALL)
    goal = " ".join(paragraph.group(1).split()) if paragraph else ""
    goal = re.split(r"(?<=[.!?])\s+(?=[A-Z*`])", goal)[0]  # its first sentence
    if goal.endswith(":"):  # a paragraph that introduces a list
        goal = goal[:-1] + "."
    return {"name": path.stem, "title": title, "goal": goal, "page": f"{path.stem}.html"}


def inline_markdown(text: str) -> str:
    """HTML-escaped ``text`` with markdown's `code`, **bold** and *emphasis* rendered."""
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def index_html(entries: list[dict], mode: str) -> str:
    """The index page: one list item per notebook, in the given order. An entry may carry
    ``seconds`` (execution time) and ``error`` (why it failed)."""
    items = []
    for e in entries:
        note = []
        if e.get("seconds") is not None:
            note.append(f"executed in {e['seconds']:.0f} s" + (f", peak RAM {e['peak_mib']:.0f} MiB"
                                                                if e.get("peak_mib") else ""))
        if e.get("error"):
            note.append(f"<strong>failed</strong>: {html.escape(e['error'])}")
        link = (f'<a href="{html.escape(e["page"])}">{html.escape(e["title"])}</a>' if e.get("built", True)
                else html.escape(e["title"]) + " (not built)")
        extra = f' <span class="note">({"; ".join(note)})</span>' if note else ""
        items.append(f'  <li>{link}{extra}<br><span class="goal">{inline_markdown(e["goal"])}</span></li>')
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>LoRA-GAN Lab: the notebooks</title>",
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.4}"
        "li{margin-bottom:.8em}.goal{color:#444}.note{color:#777;font-size:90%}</style>",
        "</head>", "<body>", "<h1>LoRA-GAN Lab: the notebooks</h1>",
        f"<p>Each page is a notebook with its outputs, executed in {html.escape(mode)}. Read them in this "
        "order; to run one yourself, open it from <code>notebooks/</code> in JupyterLab or Colab "
        "(see README.md).</p>",
        "<ol start=\"0\">", *items, "</ol>", "</body>", "</html>", ""])


def render(path: Path, out_dir: Path, execute: bool = True, timeout: int = 900) -> str | None:
    """Write ``out_dir/<name>.html``; with ``execute``, run the notebook first (in its own
    folder, as nbval does). Returns None, or the error that stopped the execution."""
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CellExecutionError, ExecutePreprocessor

    nb = nbformat.read(path, as_version=4)
    error = None
    if execute:
        runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=True)
        try:
            runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
        except CellExecutionError as exc:  # keep the outputs so far, traceback included
            error = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
    body, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / f"{path.stem}.html").write_text(body, encoding="utf-8")
    return error


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where there is none)."""
    info = Path("/proc/cpuinfo")
    found = re.search(r"^model name\s*:\s*(.+)$", info.read_text(), re.MULTILINE) if info.exists() else None
    return found.group(1).strip() if found else platform.processor()


def save_figures(page: str, stem: str, folder: Path) -> list[Path]:
    """Write each PNG figure of an executed notebook's HTML page (its text) as ``folder/<stem>-<n>.png``
    (n from 1, in page order), so a report can show a run's figures without the page."""
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"', page)
    paths = [folder / f"{stem}-{n}.png" for n in range(1, len(found) + 1)]
    for path, data in zip(paths, found):
        path.write_bytes(base64.b64decode("".join(data.split())))
    return paths


def save_outputs(page: str, stem: str, folder: Path) -> Path:
    """Write the printed (text) outputs of an executed notebook's HTML page (its text), cell by cell,
    as ``folder/<stem>.txt``: the numbers a reader should see, small enough to keep."""
    found = re.findall(r'data-mime-type="text/plain"[^>]*>\s*<pre>(.*?)</pre>', page, re.DOTALL)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.txt"
    path.write_text("\n\n".join(html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for text in found) + "\n")
    return path


def _measured(path: Path, out_dir: Path, execute: bool, timeout: int, results) -> None:
    """:func:`render` in a process of its own, so that its kernel (its only child) is the one
    ``RUSAGE_CHILDREN`` measures: puts ``(error, peak MiB, CPU seconds)`` of the kernel."""
    error = render(path, out_dir, execute, timeout)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    results.put((error, usage.ru_maxrss / 1024 if execute else None,
                 usage.ru_utime + usage.ru_stime if execute else None))


def build(out_dir: Path, only: list[str] = (), execute: bool = True, timeout: int = 900,
          folder: Path = NOTEBOOKS) -> list[dict]:
    """Render the notebooks (those whose name starts with one of ``only``; all when empty)
    and write the index of all of them; returns the index entries."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in notebook_paths(folder):
        entry = describe(path)
        entry["built"] = (out_dir / entry["page"]).exists()
        if not only or any(path.stem.startswith(prefix) for prefix in only):
            start = time.perf_counter()
            print(f"{'executing' if execute else 'converting'} {path.name} ...", flush=True)
            context = multiprocessing.get_context("fork")
            results = context.Queue()
            worker = context.Process(target=_measured, args=(path, out_dir, execute, timeout, results))
            worker.start()
            entry["error"], entry["peak_mib"], entry["cpu_seconds"] = results.get()
            worker.join()
            entry["seconds"] = time.perf_counter() - start if execute else None
            if execute:
                page = out_dir / entry["page"]
                text = page.read_text(encoding="utf-8")
                save_figures(text, page.stem, out_dir / "figures")
                save_outputs(text, page.stem, out_dir / "outputs")
            entry["built"] = True
            print(f"  {'FAILED: ' + entry['error'] if entry['error'] else 'ok'}"
                  + (f" in {entry['seconds']:.0f} s ({entry['cpu_seconds']:.0f} s of CPU), "
                     f"peak {entry['peak_mib']:.0f} MiB" if execute else ""), flush=True)
        entries.append(entry)
    quick = os.environ.get("LAB_QUICK", "0").lower() in ("1", "true", "yes")
    mode = ("quick mode (LAB_QUICK=1)" if quick else "full mode") if execute else "no mode: not executed"
    (out_dir / "index.html").write_text(index_html(entries, mode), encoding="utf-8")
    if execute:
        measured = ("seconds", "cpu_seconds", "peak_mib", "error")
        times = {e["name"]: {k: e.get(k) for k in measured} for e in entries if "seconds" in e}
        earlier = json.loads((out_dir / "times.json").read_text()) if (out_dir / "times.json").exists() else {}
        if earlier.get("mode") == mode:  # a partial rebuild keeps the other notebooks' measurements
            times = {**earlier["notebooks"], **times}
        (out_dir / "times.json").write_text(json.dumps(
            dict(mode=mode, machine=f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}",
                 threads=os.environ.get("OMP_NUM_THREADS"), notebooks=dict(sorted(times.items()))), indent=2) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="notebook name prefixes, e.g. 03 05 (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="output folder")
    parser.add_argument("--no-execute", action="store_true", help="convert without running (no outputs)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    entries = build(args.out, args.only, not args.no_execute, args.timeout)
    failed = [e["name"] for e in entries if e.get("error")]
    print(f"wrote {args.out / 'index.html'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
