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


def test_the_federated_bench_reads_test_rmse_where_validation_chose(monkeypatch):
    """Each run's test RMSE is the one at its validation-chosen round, not the lowest test RMSE."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from helpers import federated as fl
    from helpers import lessons, mf

    rng = np.random.default_rng(0)
    ratings = pd.DataFrame({"user_idx": np.repeat(np.arange(80), 6), "item_idx": rng.integers(0, 20, 480),
                            "rating": rng.integers(1, 6, 480).astype(np.float32)})
    part = np.tile([0, 0, 0, 0, 1, 2], 80)                      # per user: 4 training, 1 validation, 1 test rating
    federation = fl.Federation(ratings[part == 0], ratings[part == 2], 80, 20, mu=3.0, valid=ratings[part == 1])
    monkeypatch.setattr(lessons, "movielens_federation",
                        lambda variant, validation=False: (SimpleNamespace(name="tiny", n_users=80, n_items=20), federation))
    central = SimpleNamespace(valid_rmse=[1.2, 1.0, 1.1], test_rmse=[1.3, 1.05, 0.9])
    monkeypatch.setattr(mf, "train_mf", lambda *a, **k: central)
    run = SimpleNamespace(valid_rmse=[1.1, 0.95, 1.0, 0.97], test_rmse=[1.2, 1.0, 0.93, 0.99], mb=[0, 1.0],
                          mb_up=[0, 0.5], mb_dense=[0, 2.0], clients_trained=[5, 5], client_examples=[0, 1e6])
    monkeypatch.setattr(fl, "train_federated", lambda *a, **k: (None, None, run))
    monkeypatch.setattr(lessons, "mf_drift_remedies", lambda: {})
    report = bench.bench_federated("tiny", rounds=3)
    assert report["centralised"] == {"epoch_chosen_on_validation": 1, "valid_rmse": 1.0, "test_rmse": 1.05}
    fedavg = report["methods"]["fedavg"]
    assert fedavg["round_chosen_on_validation"] == 1 and fedavg["test_rmse"] == 1.0   # not the lowest test, 0.93
    assert fedavg["gap_to_centralised"] == pytest.approx(1.0 / 1.05 - 1)
    assert "best_test_rmse" not in fedavg


def test_the_transfer_bench_scores_lesson_05s_target_with_its_validation_images(monkeypatch):
    """The bench runs on lesson 05's target task (validation images held out) and reports validation
    and test accuracy per budget and method, mean and sd over seeds."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from helpers import data as data_module
    from helpers import lessons
    from helpers import vision_transfer as vt

    images = np.zeros((4, 32, 32, 3), np.uint8)
    fake = SimpleNamespace(build_name="tiny", build="abc", x_train=images, x_test=images)
    source = SimpleNamespace(class_names=["a"], x_train=images, x_test=images)
    pretrained = SimpleNamespace(extractor=None, test_accuracy=0.8, curve=[0.7, 0.8], cached=True, seconds=1.0)
    target = SimpleNamespace(class_names=["d", "f"], x_train=images, x_valid=images[:2], x_test=images[:3])
    monkeypatch.setattr(data_module, "load_cifar10", lambda: fake)
    monkeypatch.setattr(lessons, "cifar_source", lambda data, progress=True: (source, pretrained))
    monkeypatch.setattr(lessons, "cifar_target", lambda data: target)
    grid = pd.DataFrame({"per_class": [10, 10, 10, 10], "method": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                         "valid_accuracy": [0.5, 0.7, 0.4, 0.4], "accuracy": [0.6, 0.8, 0.5, 0.3]})
    seen = {}
    monkeypatch.setattr(vt, "run_grid", lambda extractor, task, *a, **k: seen.setdefault("task", task) and grid)
    report = bench.bench_transfer(budgets=(10,), seeds=(0, 1))
    assert seen["task"] is target and report["target"]["validation_images"] == 2
    assert report["target_accuracy"]["10"]["a"]["validation"] == {"mean": 0.6, "std": pytest.approx(np.std([0.5, 0.7], ddof=1))}
    assert report["target_accuracy"]["10"]["b"]["test"]["mean"] == pytest.approx(0.4)
    assert report["target_accuracy"]["10"]["b"]["validation"]["std"] == 0
