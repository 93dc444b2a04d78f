"""The course's shape: every lesson is listed, opens properly, and is in the README."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from conftest import NOTEBOOK_DATA

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_numbered_and_registered():
    assert NOTEBOOKS, "no lessons found"
    for path in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), path.name
        assert path.name in NOTEBOOK_DATA, f"{path.name}: add its datasets to NOTEBOOK_DATA in tests/conftest.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_objectives_and_is_committed_with_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    opening = notebook.cells[0].source
    for heading in ("Objectives", "Prerequisites", "Expected run time"):
        assert heading in opening, f"{path.name}: first cell lacks '{heading}'"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code), f"{path.name}: commit it executed"
    assert not any(o.output_type == "error" for cell in code for o in cell.outputs), f"{path.name}: has errors"
    assert "sys.path" not in "".join(cell.source for cell in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_readme_lists_every_lesson(path):
    assert path.name in (ROOT / "README.md").read_text()
