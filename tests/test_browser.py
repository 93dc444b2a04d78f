"""What a person sees after moving a control, in real JupyterLab and headless Chromium.

Each lesson notebook named in ``COURSE_BROWSER_LESSONS`` (default ``01``; ``all`` for every
lesson with panels) is copied to a temporary folder (JupyterLab autosaves), opened, run in
fast mode, and every control of every panel is moved once: the panel's output must change,
hold one figure (every course panel draws one), show no traceback or warning, and answer within 20 s
(generous: CI is noisy; the 2 s budget is ``python -m helpers.bench widgets``'s). A
deliberately broken notebook checks that the checker fails when it should. Screenshots of
every panel after every move go to a folder printed in the output.

Needs Playwright (``requirements.txt``) and Debian's ``chromium``; skips with one line without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import psutil
import pytest

from browser_panels import CHROMIUM_FLAGS, check_notebook, find_chromium, jupyterlab
from helpers.widgets import lessons_with_panels

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium); "
                                                          "the browser test of the control panels is skipped")


def lessons_to_check() -> list[str]:
    chosen = os.environ.get("COURSE_BROWSER_LESSONS", "01").split()
    with_panels = lessons_with_panels(NOTEBOOKS)
    return with_panels if chosen == ["all"] else [n for n in with_panels if n[:2] in chosen]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panel_screenshots")
    print(f"\nscreenshots of every panel after each move: {folder}")
    return folder


def run_in_lab(browser, root: Path, names: list[str], shots: Path) -> list[str]:
    """Every problem :func:`check_notebook` finds in ``names`` under ``root``; no process left behind."""
    problems = []
    with jupyterlab(root, env={"COURSE_FAST": "1"}) as (base, token, server):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            for name in names:
                problems += check_notebook(page, base, token, name, shots)
        finally:
            page.close()
        children = psutil.Process(server.pid).children(recursive=True)
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"processes left running after JupyterLab stopped: {[p.pid for p in alive]}"
    return problems


@pytest.mark.parametrize("name", lessons_to_check())
def test_every_control_of_a_lesson_answers_in_the_browser(browser, screenshots, tmp_path, name):
    shutil.copy(NOTEBOOKS / name, tmp_path / name)
    problems = run_in_lab(browser, tmp_path, [name], screenshots)
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_broken_panel(browser, screenshots, tmp_path):
    """A panel that raises, one whose output never changes and one that draws its figure twice are
    reported; a panel that works is not."""
    cells = [
        "import matplotlib.pyplot as plt\nfrom helpers.widgets import explained_interact, widgets",
        # works: one figure per value
        "def good(n):\n    plt.plot([0, n]); plt.title(f'n = {n}'); plt.show()\n"
        "explained_interact(good, name='good', n=widgets.IntSlider(value=1, min=1, max=3));",
        # raises on any moved value
        "def broken(n):\n    if n != 1:\n        raise RuntimeError('boom')\n    plt.plot([0, 1]); plt.show()\n"
        "explained_interact(broken, name='broken', n=widgets.IntSlider(value=1, min=1, max=3));",
        # output never changes
        "def frozen(flag):\n    print('always the same')\n"
        "explained_interact(frozen, name='frozen', flag=widgets.Checkbox(value=False));",
        # draws its figure twice
        "def twice(choice):\n    fig = plt.figure(); plt.title(choice); plt.show(); display(fig)\n"
        "explained_interact(twice, name='twice', choice=widgets.Dropdown(options=['a', 'b']));",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(notebook, tmp_path / "broken_panels.ipynb")
    problems = run_in_lab(browser, tmp_path, ["broken_panels.ipynb"], screenshots)
    text = "\n".join(problems)
    assert "panel 1" not in text, text                                        # the good panel passes
    assert "panel 2, slider 1" in text and "Traceback" in text, text           # the exception is seen
    assert "panel 3, checkbox 1: the output did not change" in text, text
    assert "panel 4, menu 1: 2 figures" in text, text
