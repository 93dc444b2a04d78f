"""The browser check of the control panels checks what it should.

Every lesson's panels are checked in real JupyterLab and headless Chromium right after nbval
has run the lesson in that JupyterLab's kernel (the root ``conftest.py``): each control of each
panel is moved once, and the panel's output must change, hold one figure (every course panel
draws one), show no traceback or warning and answer within a minute (a deadline for a panel that
never answers, not a speed target: the 2 s budget is ``python -m helpers.bench widgets``'s, which
times the same sequence of moves). Here a deliberately broken notebook, run the
same way, proves that the check fails when it should and leaves no process behind.

Needs Playwright (``requirements.txt``) and Debian's ``chromium``; skips with one line without them.
"""

from __future__ import annotations

import nbformat
import pytest

from browser_panels import LabKernel, check_lab_in_chromium, panel_cells
from conftest import CHROMIUM, browser_missing

pytestmark = [pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
              pytest.mark.timeout(600)]  # a stuck server, kernel or browser fails this test, never hangs the run

BROKEN_CELLS = [
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


def test_the_checker_catches_a_broken_panel(tmp_path):
    """A panel that raises, one whose output never changes and one that draws its figure twice are
    reported; a panel that works is not; the server and its kernel are gone afterwards."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in BROKEN_CELLS], metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "broken_panels.ipynb"
    nbformat.write(notebook, path)
    assert panel_cells(path) == [1, 2, 3, 4]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    lab = LabKernel(path)
    try:
        for cell in BROKEN_CELLS:  # what nbval does: every cell, in order, in the lab's kernel
            reply = lab.client.execute_interactive(cell, timeout=120, output_hook=lambda message: None)
            assert reply["content"]["status"] == "ok", reply["content"]
        problems = check_lab_in_chromium(lab, panel_cells(path), shots, CHROMIUM)
    finally:
        lab.close()  # raises if a process is left
    text = "\n".join(problems)
    assert "panel 1" not in text, text                                        # the good panel passes
    assert "panel 2, slider 1" in text and "Traceback" in text, text           # the exception is seen
    assert "panel 3, checkbox 1: the output did not change" in text, text
    assert "panel 4, menu 1: 2 figures" in text, text
    assert len(list(shots.glob("*.png"))) == 4                                  # one screenshot per move
