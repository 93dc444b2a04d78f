"""Drive the course's control panels in real JupyterLab and headless Chromium (Playwright).

Used by the root ``conftest.py`` (one browser check after each lesson's nbval run) and
``tests/test_browser.py``. :func:`jupyterlab` starts a private JupyterLab on a free loopback
port over a temporary folder and always stops it (and its kernels). :class:`LabKernel` is one
notebook's kernel inside such a JupyterLab: nbval runs every cell in it (through
:class:`AttachedKernel`), so the browser then opens a notebook whose kernel has already run it
all, exactly as a person who pressed "Run all" would. :func:`check_notebook` re-runs the cells
that show control panels, moves every control as a person would and returns what went wrong,
one line per problem.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import psutil
from jupyter_client import BlockingKernelClient
from nbval.kernel import RunningKernel

from helpers.processes import free_port

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BAD_OUTPUT = ("Traceback", "Error", "Warning", "WARNING")  # what a panel's output must never show
PANEL_CALL = re.compile(r"^\s*(explained_interact|\w+_controls?)\(", re.MULTILINE)  # helpers.widgets' panel makers


def panel_cells(notebook: Path) -> list[int]:
    """Indices (among all cells) of the code cells of ``notebook`` that show a control panel."""
    cells = nbformat.read(notebook, as_version=4).cells
    return [i for i, cell in enumerate(cells) if cell.cell_type == "code" and PANEL_CALL.search(cell.source)]


def find_chromium() -> str | None:
    """The Chromium executable (Debian's ``chromium`` package), or None."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def jupyterlab(root: Path, env: dict | None = None, timeout: float = 60.0):
    """A JupyterLab server on 127.0.0.1 serving ``root``; yields (base URL, token, process).

    Its settings, workspaces and runtime files live under ``root/.jupyter``; it and every
    kernel it started are stopped on exit, also on error.
    """
    port, token = free_port(), secrets.token_hex(16)
    home = root / ".jupyter"
    environment = {**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(home / "config"),
                   "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
                   "JUPYTERLAB_SETTINGS_DIR": str(home / "settings")}
    log_path = root / ".jupyter" / "jupyterlab.log"
    settings = home / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text('{"windowingMode": "none"}')  # every cell in the page, as a long scroll (no virtual list)
    log = open(log_path, "w")
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=", "--ServerApp.allow_root=True"]
    server = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {server.returncode} before it served {base}; "
                                   f"its log ends:\n{log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer on {base} within {timeout:.0f} s")
                time.sleep(0.5)
        yield base, token, server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and its kernels share its session
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        log.close()


class LabKernel:
    """One notebook's kernel inside a private JupyterLab, over a copy of the notebook.

    Attributes: ``base``, ``token`` (the server's URL and token), ``name`` (the notebook's file
    name), ``kernel_id``, ``client`` (a connected :class:`jupyter_client.BlockingKernelClient`).
    :meth:`close` stops the server and its kernels and raises if any of its processes is left.
    """

    def __init__(self, notebook: Path, startup_timeout: float = 60.0):
        self.root, self.name = Path(tempfile.mkdtemp(prefix="course-lab-")), notebook.name
        shutil.copy(notebook, self.root / self.name)  # JupyterLab autosaves: never the committed file
        self._stack = contextlib.ExitStack()
        try:
            self.base, self.token, self.server = self._stack.enter_context(jupyterlab(self.root))
            session = self.api("POST", "/api/sessions", {"path": self.name, "name": self.name, "type": "notebook",
                                                          "kernel": {"name": "python3"}})
            self.kernel_id = session["kernel"]["id"]
            connection = self.root / ".jupyter" / "runtime" / f"kernel-{self.kernel_id}.json"
            deadline = time.monotonic() + startup_timeout
            while not connection.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab started kernel {self.kernel_id} but wrote no {connection.name}")
                time.sleep(0.2)
            self.client = BlockingKernelClient(connection_file=str(connection))
            self.client.load_connection_file()
            self.client.start_channels()
            self.client.wait_for_ready(timeout=startup_timeout)
        except BaseException:
            self.close()
            raise

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """One call of the server's REST API; its JSON answer ({} when empty)."""
        request = urllib.request.Request(f"{self.base}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read().decode()
        return json.loads(text) if text else {}

    def alive(self) -> bool:
        try:
            return self.api("GET", f"/api/kernels/{self.kernel_id}").get("execution_state") != "dead"
        except OSError:
            return False

    def close(self) -> None:
        """Stop the kernel client, the server and its kernels; raise if any of their processes is left."""
        if getattr(self, "client", None) is not None:
            self.client.stop_channels()
            self.client = None
        server = getattr(self, "server", None)
        children = psutil.Process(server.pid).children(recursive=True) if server and server.poll() is None else []
        self._stack.close()
        shutil.rmtree(self.root, ignore_errors=True)
        _, alive = psutil.wait_procs(children, timeout=10)
        if alive:
            raise RuntimeError(f"processes left running after JupyterLab stopped: {[p.pid for p in alive]}")


class AttachedKernel(RunningKernel):
    """nbval's kernel interface over a :class:`LabKernel`: nbval runs and checks every cell as
    usual, in the kernel the browser opens afterwards. The server owns the kernel, so interrupts,
    restarts and stopping go through its REST API."""

    def __init__(self, lab: LabKernel):  # nbval's own __init__ would start a kernel of its own
        self.lab, self.kc, self.km = lab, lab.client, None
        self._ensure_iopub_up()

    def is_alive(self) -> bool:
        return self.lab.alive()

    def interrupt(self) -> None:
        self.lab.api("POST", f"/api/kernels/{self.lab.kernel_id}/interrupt")

    def restart(self) -> None:
        self.lab.api("POST", f"/api/kernels/{self.lab.kernel_id}/restart")
        self.kc.wait_for_ready(timeout=60)

    def stop(self) -> None:
        """Shut the kernel down through the server. nbval calls this when a cell passed its timeout
        and the kernel did not answer the interrupt (every later cell then fails at once with "Kernel
        dead", instead of each waiting its own timeout) and at the notebook's tear-down, which comes
        after the browser check."""
        with contextlib.suppress(OSError):  # already gone: nothing to stop
            self.lab.api("DELETE", f"/api/kernels/{self.lab.kernel_id}")

    @property
    def language(self) -> str:
        return "python"


def _kernel_busy(page) -> bool:
    return page.evaluate("""() => {
        const w = window.jupyterapp.shell.currentWidget;
        const kernel = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')].map(p => p.innerText);
        return !kernel || kernel.status !== 'idle' || prompts.some(p => p.includes('*'));
    }""")


def wait_idle(page, timeout: float) -> None:
    """Until the notebook's kernel is idle and no cell waits or runs, twice in a row."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 2:
        if time.monotonic() > deadline:
            state = page.evaluate("""() => { const w = window.jupyterapp.shell.currentWidget;
                const s = w && w.sessionContext; return [s && s.session && s.session.kernel && s.session.kernel.status,
                document.querySelectorAll('.jp-Dialog').length]; }""")
            raise TimeoutError(f"the kernel was still busy after {timeout:.0f} s (kernel status, open dialogs: {state})")
        quiet = 0 if _kernel_busy(page) else quiet + 1
        time.sleep(0.25)


def _output_state(panel) -> tuple[tuple, int, str]:
    """(what a person sees: the text and every image, the number of images, the text), read in one
    go in the page: the output may be redrawn at any moment, so it is never read piece by piece."""
    text, sources = panel.locator(".widget-output").first.evaluate(
        "out => [out.innerText, [...out.querySelectorAll('img')].map(image => image.getAttribute('src'))]")
    return (text, tuple(sources)), len(sources), text


def _moves(panel):
    """(label, action) for every control of a panel, each moved the way a person would."""
    moves = []
    for i in range(panel.locator(".widget-slider .noUi-handle").count()):
        handle = panel.locator(".widget-slider .noUi-handle").nth(i)
        moves.append((f"slider {i + 1}", lambda h=handle: (h.focus(), h.press("ArrowLeft" if h.get_attribute(
            "aria-valuenow") == h.get_attribute("aria-valuemax") else "ArrowRight"))))
    for i in range(panel.locator("select").count()):
        menu = panel.locator("select").nth(i)
        if menu.locator("option").count() < 2:
            continue  # nothing to move to
        moves.append((f"menu {i + 1}", lambda m=menu: m.select_option(index=(m.evaluate("s => s.selectedIndex") + 1)
                                                                      % m.locator("option").count())))
    for i in range(panel.locator("input[type=checkbox]").count()):
        box = panel.locator("input[type=checkbox]").nth(i)
        moves.append((f"checkbox {i + 1}", lambda b=box: b.click()))
    for i in range(panel.locator("input[type=number]").count()):
        field = panel.locator("input[type=number]").nth(i)
        moves.append((f"number box {i + 1}", lambda f=field: (f.fill(str(int(float(f.input_value())) + 1)),
                                                               f.press("Enter"))))
    return moves


def check_lab_in_chromium(lab: LabKernel, cells: list[int], shots: Path, chromium_path: str) -> list[str]:
    """:func:`check_notebook` on ``lab``'s notebook in a headless Chromium launched for it (and closed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_FLAGS)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            return check_notebook(page, lab.base, lab.token, lab.name, cells, shots)
        finally:
            chromium.close()


def check_notebook(page, base: str, token: str, name: str, cells: list[int], shots: Path,
                   run_timeout: float = 600, move_timeout: float = 60) -> list[str]:
    """Open ``name`` (its kernel has run every cell), re-run its panel ``cells`` (indices among all
    cells), move every control of every panel; the problems found, one line each.

    A panel fails when a move shows an error, the wrong number of figures, or no answer within
    ``move_timeout`` s (generous: a slow machine is not a broken panel; how fast panels answer is
    measured by ``python -m helpers.bench widgets``). Nothing here waits without a deadline."""
    problems = []
    page.set_default_timeout(move_timeout * 1000)  # every Playwright call, not only the waits below
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget && "
                           "document.querySelector('.jp-Notebook') && window.jupyterapp.shell.currentWidget"
                           ".sessionContext.session && window.jupyterapp.shell.currentWidget.sessionContext"
                           ".session.kernel", timeout=60_000)
    wait_idle(page, 120)
    for index in cells:
        # started, not awaited: the wait below has a deadline, a promise awaited in the page has none
        page.evaluate("""(index) => { const notebook = window.jupyterapp.shell.currentWidget.content;
            notebook.activeCellIndex = index; window.jupyterapp.commands.execute('notebook:run-cell'); }""", index)
        time.sleep(0.5)
        wait_idle(page, run_timeout)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    for i in range(errors.count()):
        if "Traceback" in errors.nth(i).inner_text():
            problems.append(f"{name}: a cell raised: {errors.nth(i).inner_text()[:200]}")
    panels = page.locator(".widget-interact")
    if panels.count() == 0:
        problems.append(f"{name}: no control panel appeared")
    for p in range(panels.count()):
        panel = panels.nth(p)
        panel.scroll_into_view_if_needed()
        for label, move in _moves(panel):
            before = _output_state(panel)
            start = time.monotonic()
            move()
            while _output_state(panel)[0] == before[0] and time.monotonic() - start < move_timeout:
                time.sleep(0.1)
            where = f"{name}, panel {p + 1}, {label}"
            try:
                wait_idle(page, max(1.0, move_timeout - (time.monotonic() - start)))
            except TimeoutError as stuck:
                problems.append(f"{where}: no answer within {move_timeout:.0f} s ({stuck}); later moves not tried")
                return problems
            html, figures, text = _output_state(panel)
            panel.screenshot(path=str(shots / f"{Path(name).stem}-panel{p + 1}-{label.replace(' ', '')}.png"))
            if html == before[0]:
                problems.append(f"{where}: the output did not change within {move_timeout:.0f} s")
            if figures > 1:
                problems.append(f"{where}: {figures} figures after the move (every course panel draws one)")
            shown = [word for word in BAD_OUTPUT if word in text]
            if shown:
                problems.append(f"{where}: the output shows {', '.join(shown)}: {text[:200]!r}")
    return problems
