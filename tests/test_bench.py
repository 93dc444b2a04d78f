"""The benchmark CLI prints exactly one JSON object on stdout, whatever the work prints."""

from __future__ import annotations

import json

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
