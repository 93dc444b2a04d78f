"""The benchmark CLI prints exactly one JSON object on stdout, whatever the work prints."""

from __future__ import annotations

import json

import pytest

from helpers import bench


def test_stdout_is_one_json_object(monkeypatch, capsys):
    def noisy(variant):
        print("Downloading data from somewhere …")
        return {"benchmark": "softmax", "variant": variant}

    monkeypatch.setattr(bench, "bench_softmax", noisy)
    bench.main(["softmax", "--variant", "100k"])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"benchmark": "softmax", "variant": "100k"}
    assert "Downloading" in captured.err


def test_fltl_numbers_are_json_safe():
    import pandas as pd

    assert [bench._number(v) for v in (None, float("nan"), pd.NA, 3.0, 2.5)] == [None, None, None, 3, 2.5]


def test_widget_bench_times_every_panel_a_notebook_shows(tmp_path):
    import nbformat

    cells = ["from helpers.widgets import explained_interact, widgets",
             "explained_interact(lambda n: print(n * 2), name='double', n=widgets.IntSlider(value=1, min=1, max=3));"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]),
                   tmp_path / "01_demo.ipynb")
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('no panel')")]),
                   tmp_path / "02_plain.ipynb")
    report = bench.bench_widgets(folder=tmp_path, timeout=120)
    (panel,) = report["panels"]
    assert panel["lesson"] == "01_demo.ipynb" and panel["panel"] == "double"
    assert list(panel["seconds"]) == ["default", "n=2", "n=3", "then n=2"]  # then the browser check's move
    assert report["all_within_budget"] and report["panels_within_budget"] == "1 of 1"
    with pytest.raises(ValueError, match="no lesson notebook"):
        bench.bench_widgets(["09"], folder=tmp_path)
