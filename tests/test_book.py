"""scripts/build_book.py (``make book``): titles and order of the index, the HTML pages (checked
without executing the kit's notebooks), and the time and kernel memory of an executed one."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)


def test_notebooks_are_described_in_notebook_order():
    entries = [book.describe(p) for p in book.notebook_paths()]
    numbers = [int(e["name"][:2]) for e in entries]
    assert numbers[:8] == list(range(8)) and numbers == sorted(set(numbers))  # 00-07 first, then any later one
    for e in entries:
        assert e["title"].startswith(e["name"][:2] + " · "), e["title"]  # "03 · The discriminator: ..."
        assert e["goal"] and e["goal"].endswith((".", "!", "?")), e["name"]
        assert e["page"] == e["name"] + ".html"


def test_index_links_every_page_in_order_and_escapes_text():
    entries = [{"name": "00_a", "title": "00 · A <b>", "goal": "Learn `x<y` & *B*.", "page": "00_a.html"},
               {"name": "01_b", "title": "01 · B", "goal": "Then B.", "page": "01_b.html", "seconds": 12.3,
                "error": "KeyError: 'x'"},
               {"name": "02_c", "title": "02 · C", "goal": "", "page": "02_c.html", "built": False}]
    page = book.index_html(entries, "quick mode (LAB_QUICK=1)")
    assert page.index('href="00_a.html"') < page.index('href="01_b.html"')
    assert "00 · A &lt;b&gt;" in page and "Learn <code>x&lt;y</code> &amp; <em>B</em>." in page
    assert "executed in 12 s" in page and "failed" in page and "KeyError: &#x27;x&#x27;" in page
    assert 'href="02_c.html"' not in page and "02 · C (not built)" in page


def test_build_without_executing_writes_pages_and_index(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for path in book.notebook_paths()[:2]:
        (notebooks / path.name).write_text(path.read_text())
    (notebooks / "scratch.ipynb").write_text(book.notebook_paths()[0].read_text())  # not numbered: left out
    out = tmp_path / "book"
    entries = book.build(out, execute=False, folder=notebooks)
    assert [e["name"] for e in entries] == [p.stem for p in book.notebook_paths()[:2]]
    index = (out / "index.html").read_text()
    for e in entries:
        page = (out / e["page"]).read_text()
        assert "<html" in page and "Goal." in page
        assert f'href="{e["page"]}"' in index
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.html", *(e["page"] for e in entries)])
    for path in book.notebook_paths():  # the repository's notebooks stay without outputs
        cells = json.loads(path.read_text())["cells"]
        assert all(c.get("outputs", []) == [] and c.get("execution_count") is None
                   for c in cells if c["cell_type"] == "code"), path.name


def test_an_executed_notebook_records_its_time_and_its_kernels_peak_memory(tmp_path):
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Memory\n\n**Goal.** Hold 300 MB for a moment."),
                nbformat.v4.new_code_cell("block = bytearray(300 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])"),
                nbformat.v4.new_code_cell("import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
                                          "import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()\nprint('a < b')")]
    nbformat.write(nb, notebooks / "00_memory.ipynb")
    entries = book.build(tmp_path / "book", folder=notebooks)
    times = json.loads((tmp_path / "book" / "times.json").read_text())
    assert entries[0]["error"] is None and times["notebooks"]["00_memory"]["seconds"] > 0
    assert times["notebooks"]["00_memory"]["peak_mib"] >= 300  # the kernel's, not this process's
    assert 0 < times["notebooks"]["00_memory"]["cpu_seconds"] < 10 * times["notebooks"]["00_memory"]["seconds"]
    assert "peak RAM" in (tmp_path / "book" / "index.html").read_text()
    [figure] = (tmp_path / "book" / "figures").iterdir()  # the plot, as a PNG file of its own
    assert figure.name == "00_memory-1.png" and figure.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "book" / "outputs" / "00_memory.txt").read_text() == "a < b\n"  # what it printed
