"""Notebook 06 in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by
Playwright. The playground renders as widgets, Run trains (the status line counts steps and
the dashboard image appears), Stop ends the run; a screenshot goes to build/screenshots/.

Needs Debian's ``chromium`` (``make browser-deps``) and the ``playwright`` package; it does not
use Playwright's own browser download.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_playground.ipynb"
SCREENSHOTS = ROOT / "build" / "screenshots"
TOKEN = "lab-browser-test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETTINGS = {  # JupyterLab user settings: no news prompt, no update check, no kernel dialog
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "notebook-extension/tracker": {"autoStartDefaultKernel": True},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _panel_notebook(target: Path) -> None:
    """Notebook 06 up to the cell tagged "panel" (the what-ifs run under nbval already)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    last = next(i for i, cell in enumerate(nb.cells) if "panel" in cell.metadata.get("tags", []))
    nb.cells = nb.cells[: last + 1]
    nbformat.write(nb, target)


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 serving a temp folder; yields its base URL."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Chromium not found: install Debian's package (make browser-deps) to run this test")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    root, state = tmp_path_factory.mktemp("notebooks"), tmp_path_factory.mktemp("jupyter-state")
    _panel_notebook(root / "06_playground.ipynb")
    for name, values in SETTINGS.items():
        path = state / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = _free_port()
    env = {**os.environ, "LAB_QUICK": "1", "JUPYTER_RUNTIME_DIR": str(state / "runtime"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.open_browser=False",
               "--allow-root", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
               f"--IdentityProvider.token={TOKEN}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
               f"--LabApp.user_settings_dir={state / 'settings'}"]
    log = open(state / "server.log", "w")
    server = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited early:\n{(state / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not answer within 120 s")
                time.sleep(1)
        yield url, chromium
    finally:
        server.terminate()  # also shuts down the kernels it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def test_playground_runs_in_jupyterlab(jupyter):
    from playwright.sync_api import sync_playwright

    url, chromium = jupyter
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=60_000)
        page = browser.new_page(viewport={"width": 1440, "height": 1500})
        page.set_default_timeout(60_000)
        # only the local server: anything else (CDNs, news feeds) is refused at once
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                   else route.abort())
        try:
            page.goto(f"{url}/lab/tree/06_playground.ipynb?token={TOKEN}", timeout=120_000)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            page.keyboard.press("Control+b")  # hide the file browser: room for the panel
            page.wait_for_function(  # the kernel started (run-all before that is dropped)
                "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                ".some(e => e.innerText.includes('| Idle'))", timeout=180_000, polling=500)

            # Run > Run All Cells, through the menu bar as a person would (the notebook focused)
            page.locator(".jp-Notebook .jp-Cell").first.click()
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            panel = page.locator(".lab-playground")
            panel.wait_for(state="visible", timeout=300_000)  # the widgets rendered
            assert page.locator(".lab-run").inner_text().strip() == "Run"
            assert page.locator(".lab-playground .widget-tab").count() == 2  # knobs, views
            assert page.locator(".lab-playground .widget-slider").count() >= 10

            page.wait_for_function("() => /ready/.test(document.querySelector('.lab-status').innerText)",
                                   timeout=60_000)
            page.locator(".lab-run").click()
            page.wait_for_function(
                "() => /step [1-9]/.test(document.querySelector('.lab-status').innerText)",
                timeout=420_000, polling=1000)
            page.wait_for_function(
                "() => { const img = document.querySelector('.lab-dashboard');"
                " return img && img.naturalWidth > 0 && getComputedStyle(img).display !== 'none'; }",
                timeout=60_000, polling=500)
            page.locator(".lab-stop").click()
            page.wait_for_function(
                "() => /(stopped|done) · step/.test(document.querySelector('.lab-status').innerText)",
                timeout=300_000, polling=1000)
            assert "error" not in page.locator(".lab-status").inner_text()
            note = page.locator(".lab-dashboard-note").inner_text()  # the default Run trains and reads D
            assert "Discriminator" not in note and "Predicted vs true" not in note, note
            panel.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
            page.screenshot(path=SCREENSHOTS / "playground.png")
            # the other views: the last step's samples, and the run list with its comparison
            views = panel.locator(".widget-tab").nth(1)
            views.locator(".lm-TabBar-tab", has_text="Samples").click()
            assert "completion" in page.locator(".lab-samples").inner_text(timeout=10_000)
            page.screenshot(path=SCREENSHOTS / "playground-samples.png")
            views.locator(".lm-TabBar-tab", has_text="Runs").click()
            page.wait_for_function("() => document.querySelector('.lab-compare').naturalWidth > 0",
                                   timeout=30_000)
            assert "/5" in page.locator(".lab-runs").inner_text()  # run 1: steps done / 5
            page.screenshot(path=SCREENSHOTS / "playground-runs.png")
        except Exception:
            page.screenshot(path=SCREENSHOTS / "playground-failure.png")
            raise
        finally:
            browser.close()
