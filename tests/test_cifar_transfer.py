"""Lesson 05: CIFAR loader on a small official-format archive, tasks, transfer models."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import download
from helpers import vision_transfer as vt
from helpers.data import DataFormatError, ImageData, load_cifar10
from helpers.download import Archive, ChecksumError

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def batch_bytes(n: int, seed: int, labels=None, width: int = 3072) -> bytes:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, width), dtype=np.uint8)
    labels = list(rng.integers(0, 10, n)) if labels is None else labels
    return pickle.dumps({b"batch_label": b"x", b"labels": [int(v) for v in labels], b"data": data,
                         b"filenames": [b"f"] * n}, protocol=2)


def make_archive(path, sizes=(7, 3, 5, 1, 4), test=6, **overrides) -> str:
    """An official-layout cifar-10-python.tar.gz with uneven batch sizes; returns its sha256."""
    members = {f"data_batch_{i + 1}": batch_bytes(n, i) for i, n in enumerate(sizes)}
    members["test_batch"] = batch_bytes(test, 99)
    members["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in NAMES], b"num_cases_per_batch": 10000})
    members.update(overrides)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture
def cifar_env(tmp_path, monkeypatch):
    official = tmp_path / "cifar-10-python.tar.gz"
    digest = make_archive(official)
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setitem(download.REGISTRY, "cifar-10", Archive(official.name, official.as_uri(), sha256=digest))
    return tmp_path


def test_loader_reads_uneven_batches(cifar_env):
    data = load_cifar10()
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.y_train.shape == (20,) and data.x_test.shape == (6, 32, 32, 3)
    assert data.class_names == NAMES
    raw = pickle.loads(batch_bytes(7, 0))[b"data"][0]
    assert np.array_equal(data.x_train[0, :, :, 0].ravel(), raw[:1024])  # channel planes → channels last
    assert np.array_equal(data.x_train[0, :, :, 2].ravel(), raw[2048:])


def test_the_loaded_build_is_named(cifar_env):
    from helpers.data import KNOWN_CIFAR_BUILDS

    data = load_cifar10()
    assert data.build == download.REGISTRY["cifar-10"].sha256 == hashlib.sha256(
        (cifar_env / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    assert data.build_name == "the official CIFAR-10 archive"  # the fixture registers its archive as official
    other = ImageData(data.x_train, data.y_train, data.x_test, data.y_test, data.class_names, build="9" * 64)
    assert "not the official archive" in other.build_name and "20 training images" in other.build_name
    full = next(sha for sha, text in KNOWN_CIFAR_BUILDS.items() if "60,000" in text)
    assert "JPEG rebuild" in ImageData(data.x_train, data.y_train, data.x_test, data.y_test, NAMES, build=full).build_name


def test_per_class_cap(cifar_env):
    data = load_cifar10(per_class_cap=1)
    assert np.bincount(data.y_train).max() == 1 and len(data.y_train) == len(np.unique(load_cifar10().y_train))
    with pytest.raises(ValueError):
        load_cifar10(per_class_cap=0)


def test_wrong_hash_and_mirror_sums(tmp_path, monkeypatch):
    official = tmp_path / "official.tar.gz"
    make_archive(official)
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setitem(download.REGISTRY, "cifar-10",
                        Archive("cifar-10-python.tar.gz", official.as_uri(), sha256="f" * 64))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    with pytest.raises(ChecksumError, match="f" * 64):
        load_cifar10()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    subset = make_archive(mirror / "cifar-10-python.tar.gz", sizes=(2, 2, 2, 2, 2), test=2)
    (mirror / "SHA256SUMS").write_text(f"{subset}  cifar-10-python.tar.gz\n")
    monkeypatch.setenv(download.MIRROR_ENV, str(mirror))
    assert load_cifar10().x_train.shape[0] == 10


@pytest.mark.parametrize("override, problem", [
    ({"data_batch_2": batch_bytes(3, 1, labels=[1, 2])}, "3 images but 2 labels"),
    ({"data_batch_2": batch_bytes(3, 1, labels=[1, 2, 12])}, "labels outside"),
    ({"data_batch_2": batch_bytes(3, 1, width=100)}, "3072"),
    ({"data_batch_3": b"not a pickle"}, "not a readable"),
])
def test_malformed_batches(tmp_path, monkeypatch, override, problem):
    official = tmp_path / "cifar-10-python.tar.gz"
    digest = make_archive(official, **override)
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setitem(download.REGISTRY, "cifar-10", Archive(official.name, official.as_uri(), sha256=digest))
    with pytest.raises(DataFormatError, match=problem):
        load_cifar10()


@pytest.fixture(scope="module")
def tasks():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 12)
    x = rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8)
    return vt.source_and_target(ImageData(x, y, x[:60], y[::2], NAMES))


def test_split_has_no_class_overlap(tasks):
    source, target = tasks
    assert set(source.class_names).isdisjoint(target.class_names)
    assert source.class_names == NAMES[:5] and target.class_names == NAMES[5:]
    assert set(np.unique(target.y_train)) == set(range(5))


def test_label_budget_is_seeded_and_balanced(tasks):
    _, target = tasks
    x, y = vt.label_budget(target, 3, seed=1)
    again, _ = vt.label_budget(target, 3, seed=1)
    assert np.array_equal(x, again) and np.bincount(y).tolist() == [3] * 5
    with pytest.raises(ValueError, match="only 12 images"):
        vt.label_budget(target, 13)


@pytest.fixture(scope="module")
def trained_source(tasks):
    source, _ = tasks
    extractor = vt.build_extractor(0)
    vt.fit(vt.classifier(extractor, 5, inference_mode=False), source.x_train, source.y_train, steps=3,
           learning_rate=1e-2)  # moves weights and batch-norm statistics away from their initial values
    return extractor


def test_additive_with_zero_w_reproduces_source_features(tasks, trained_source):
    source, _ = tasks
    for rank in (None, 2):
        additive = vt.additive_extractor(trained_source, rank=rank)
        assert np.array_equal(vt.features(additive, source.x_test), vt.features(trained_source, source.x_test))


def test_frozen_layers_stay_unchanged_and_source_is_untouched(tasks, trained_source):
    _, target = tasks
    before = [w.copy() for w in trained_source.get_weights()]
    frozen = vt.target_model("features", trained_source, 5)
    extractor = frozen.get_layer("extractor")
    frozen_before = [w.copy() for w in extractor.get_weights()]
    head_before = frozen.get_layer("head").get_weights()[0].copy()
    vt.fit(frozen, target.x_train, target.y_train, steps=5, learning_rate=1e-2)
    assert all(np.array_equal(a, b) for a, b in zip(frozen_before, extractor.get_weights()))
    assert not np.array_equal(head_before, frozen.get_layer("head").get_weights()[0])
    additive = vt.target_model("additive", trained_source, 5)
    sources = [w.numpy().copy() for layer in additive.get_layer("extractor_additive").layers
               for w in layer.non_trainable_weights]
    vt.fit(additive, target.x_train, target.y_train, steps=5, learning_rate=1e-2)
    after = [w.numpy() for layer in additive.get_layer("extractor_additive").layers for w in layer.non_trainable_weights]
    assert all(np.array_equal(a, b) for a, b in zip(sources, after))  # θ_source and batch norms frozen
    assert all(np.array_equal(a, b) for a, b in zip(before, trained_source.get_weights()))  # source untouched


def test_fine_tuning_keeping_the_source_batch_norm(tasks, trained_source):
    _, target = tasks
    model = vt.target_model("finetune", trained_source, 5, unfrozen_blocks=1, retrain_batch_norm=False)
    extractor = model.get_layer("extractor")
    assert all(np.array_equal(a, b) for a, b in zip(extractor.get_weights(), trained_source.get_weights()))
    trainable = {layer.name for layer in extractor.layers if layer.trainable and layer.weights}
    assert trainable == {"block3_conv0"}
    bn_before = [w.copy() for w in extractor.get_layer("block3_bn0").get_weights()]
    vt.fit(model, target.x_train, target.y_train, steps=5, learning_rate=1e-2)
    assert all(np.array_equal(a, b) for a, b in zip(bn_before, extractor.get_layer("block3_bn0").get_weights()))
    with pytest.raises(ValueError):
        vt.set_trainable_blocks(extractor, len(vt.BLOCKS) + 1)


def test_fine_tuning_re_estimates_batch_norm_only_in_unfrozen_blocks(tasks, trained_source):
    _, target = tasks
    model = vt.target_model("finetune", trained_source, 5, unfrozen_blocks=1)  # the default: re-estimate
    extractor = model.get_layer("extractor")
    assert {layer.name for layer in extractor.layers if layer.trainable and layer.weights} == {"block3_conv0", "block3_bn0"}
    frozen_bn = [w.copy() for w in extractor.get_layer("block0_bn0").get_weights()]
    moving_before = extractor.get_layer("block3_bn0").moving_mean.numpy().copy()
    vt.fit(model, target.x_train, target.y_train, steps=5, learning_rate=1e-2)
    assert all(np.array_equal(a, b) for a, b in zip(frozen_bn, extractor.get_layer("block0_bn0").get_weights()))
    assert not np.allclose(moving_before, extractor.get_layer("block3_bn0").moving_mean.numpy())
    assert all(np.array_equal(a, b) for a, b in zip(trained_source.get_weights(), vt.copy_extractor(trained_source).get_weights()))


def test_linear_probe_then_fine_tune_keeps_the_step_budget(tasks, trained_source):
    _, target = tasks
    run = vt.run_method("finetune", trained_source, target, 4, max_steps=10, track=True)
    steps = [step for step, _ in run["curve"]]
    assert run["steps"] == 10 and steps == sorted(steps) and 5 in steps and steps[-1] == 10  # 5 probe + 5 fine-tune
    assert abs(run["curve"][-1][1] - run["accuracy"]) < 1e-9
    scratch = vt.run_method("scratch", None, target, 4, max_steps=10, track=True)
    assert [step for step, _ in scratch["curve"]][-1] == 10 and scratch["curve"][-1][1] == scratch["accuracy"]


def test_features_from_an_earlier_block(tasks, trained_source):
    source, _ = tasks
    model = vt.target_model("features", trained_source, 5, feature_block=1)
    assert model.get_layer("head").kernel.shape == (vt.BLOCKS[1][-1], 5)
    assert vt.count_params(model)["trainable"] == vt.BLOCKS[1][-1] * 5 + 5
    with pytest.raises(ValueError, match="feature block"):
        vt.pooled_at(trained_source, len(vt.BLOCKS))


def test_smaller_task_is_seeded_and_capped_per_class(tasks):
    _, target = tasks
    small = vt.smaller(target, 3, 2, seed=4)
    assert np.bincount(small.y_train).tolist() == [3] * 5 and np.bincount(small.y_test, minlength=5).max() <= 2
    again = vt.smaller(target, 3, 2, seed=4)
    assert np.array_equal(small.x_train, again.x_train) and np.array_equal(small.x_test, again.x_test)
    assert vt.smaller(target, None, None).x_train is target.x_train


def test_accuracy_refuses_column_labels(tasks, trained_source):
    _, target = tasks
    model = vt.target_model("features", trained_source, 5)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        vt.accuracy(model, target.x_test, target.y_test.reshape(-1, 1))
    assert 0.0 <= vt.accuracy(model, target.x_test, target.y_test) <= 1.0


def test_widget_lookup_edges():
    runs = pd.DataFrame([
        {"method": "scratch", "per_class": 10, "blocks": None, "accuracy": 0.3},
        {"method": "features", "per_class": 10, "blocks": 0, "accuracy": 0.6},
        {"method": "finetune", "per_class": 10, "blocks": 3, "accuracy": 0.5},
        {"method": "additive", "per_class": 10, "blocks": None, "accuracy": 0.55},
    ])
    assert list(vt.accuracies_for(runs, 10, 0).values()) == [0.3, 0.6, 0.55]
    assert "(c) fine-tune last 3 block(s)" in vt.accuracies_for(runs, 10, 3)
    runs["valid_accuracy"] = runs["accuracy"] + 0.1
    assert list(vt.accuracies_for(runs, 10, 0, column="valid_accuracy").values()) == pytest.approx([0.4, 0.7, 0.65])
    for per_class, blocks, message in [(11, 0, "cached budgets"), (10, 5, "0..4"), (10, -1, "0..4"), (10, 2, "no cached run")]:
        with pytest.raises(ValueError, match=message):
            vt.accuracies_for(runs, per_class, blocks)


def test_nearest_mean_and_pca():
    features = np.array([[0.0, 0], [0, 1], [10, 10], [10, 11]])
    labels = np.array([0, 0, 1, 1])
    assert vt.nearest_mean_accuracy(features, labels, features, labels) == 1.0
    assert vt.pca_2d(np.random.default_rng(0).normal(size=(10, 5))).shape == (10, 2)


def test_hold_out_moves_a_seeded_balanced_share_of_training_images_to_validation(tasks):
    _, target = tasks
    held = vt.hold_out(target, 3, seed=2)
    assert np.bincount(held.y_valid).tolist() == [3] * 5 and np.bincount(held.y_train).tolist() == [9] * 5
    assert held.has_validation and not target.has_validation
    rows = {bytes(img) for img in held.x_valid}
    assert rows.isdisjoint(bytes(img) for img in held.x_train)  # no image in both
    assert len(rows | {bytes(img) for img in held.x_train}) == len(target.x_train)
    again = vt.hold_out(target, 3, seed=2)
    assert np.array_equal(held.x_valid, again.x_valid) and not np.array_equal(held.x_valid, vt.hold_out(target, 3, seed=3).x_valid)
    assert held.x_test is target.x_test
    budget_x, _ = vt.label_budget(held, 9, seed=0)  # budgets draw from what is left: every remaining image
    assert {bytes(img) for img in budget_x}.isdisjoint(rows)
    small = vt.smaller(held, 4, 2)
    assert small.x_valid is held.x_valid  # a smaller task keeps its validation images
    shuffled = vt.shuffled_labels(held)
    assert shuffled.y_valid is held.y_valid and np.array_equal(np.sort(shuffled.y_train), np.sort(held.y_train))


@pytest.mark.parametrize("per_class, message", [(0, "1..11 .*got 0"), (12, "1..11 .*holds 12 training images.*got 12")])
def test_hold_out_refuses_what_would_leave_a_class_empty_or_hold_out_twice(tasks, per_class, message):
    _, target = tasks
    with pytest.raises(ValueError, match=message):
        vt.hold_out(target, per_class)
    with pytest.raises(ValueError, match="already holds 5 validation images"):
        vt.hold_out(vt.hold_out(target, 1), 1)


def test_runs_on_a_task_with_validation_images_score_them_and_draw_the_curve_on_them(tasks, trained_source):
    _, target = tasks
    held = vt.hold_out(target, 2)
    run = vt.run_method("features", trained_source, held, 4, max_steps=6, track=True)
    assert run["curve_on"] == "validation" and run["curve"][-1][1] == pytest.approx(run["valid_accuracy"])
    assert run["valid_correct"].shape == (10,) and run["valid_accuracy"] == pytest.approx(run["valid_correct"].mean())
    assert run["test_correct"].dtype == bool and run["test_correct"].shape == target.y_test.shape
    assert run["accuracy"] == pytest.approx(run["test_correct"].mean())
    plain = vt.run_method("features", trained_source, target, 4, max_steps=6)
    assert plain["valid_accuracy"] is None and plain["valid_correct"] is None and plain["curve_on"] == "test"


def test_correct_marks_each_image_and_refuses_column_labels(tasks, trained_source):
    _, target = tasks
    model = vt.target_model("features", trained_source, 5)
    marks = vt.correct(model, target.x_test, target.y_test)
    assert marks.mean() == pytest.approx(vt.accuracy(model, target.x_test, target.y_test))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        vt.correct(model, target.x_test, target.y_test.reshape(-1, 1))


def test_choose_on_validation_reads_validation_means_only():
    runs = pd.DataFrame({"method": ["scratch", "finetune"] * 2, "per_class": 10, "seed": [0, 0, 1, 1],
                         "valid_accuracy": [0.5, 0.7, 0.6, 0.6], "accuracy": [0.9, 0.1, 0.9, 0.1]})
    assert vt.choose_on_validation(runs, ["scratch", "finetune"], 10) == "finetune"  # 0.65 vs 0.55; test says the other
    assert vt.per_seed(runs, "finetune", 10) == [0.1, 0.1] and vt.per_seed(runs, "scratch", 10, "valid_accuracy", [1]) == [0.6]
    tie = runs.assign(valid_accuracy=0.5)
    assert vt.choose_on_validation(tie, ["finetune", "scratch"], 10) == "finetune"
    with pytest.raises(ValueError, match="no run of 'additive' at 10"):
        vt.choose_on_validation(runs, ["additive"], 10)
    with pytest.raises(ValueError, match="for every seed asked"):
        vt.per_seed(runs, "scratch", 10, seeds=[0, 5])
    with pytest.raises(ValueError, match="hold validation images out"):
        vt.choose_on_validation(runs.assign(valid_accuracy=None), ["scratch"], 10)


def test_summarise_labels_its_spread_and_reads_the_column_asked():
    runs = pd.DataFrame([{"method": m, "per_class": 10, "seed": seed, "accuracy": acc, "valid_accuracy": acc + 0.1}
                         for m, accs in {"scratch": (0.3, 0.5), "features": (0.6, 0.6)}.items()
                         for seed, acc in enumerate(accs)])
    test = vt.summarise(runs)
    assert test.columns.name == "target test accuracy: mean ± sd over 2 seeds"
    assert test.loc[10, vt.METHODS["scratch"]] == "0.400 ± 0.141" and test.loc[10, vt.METHODS["features"]] == "0.600 ± 0.000"
    valid = vt.summarise(runs, column="valid_accuracy")
    assert valid.columns.name.startswith("target validation accuracy") and valid.loc[10, vt.METHODS["scratch"]] == "0.500 ± 0.141"
    assert list(test.columns) == [vt.METHODS["scratch"], vt.METHODS["features"]]  # the METHODS order
    relabelled = vt.summarise(runs, labels={"features": "frozen", "scratch": "none"})
    assert list(relabelled.columns) == ["frozen", "none"]
    with pytest.raises(ValueError, match="column must be one of"):
        vt.summarise(runs, column="seconds")
