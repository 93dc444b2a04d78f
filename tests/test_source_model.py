"""The cached pre-trained source: trained once, reused exactly, keyed by what it depends on."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import download
from helpers import source_model as sm
from helpers import vision_transfer as vt
from helpers.data import ImageData

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY = sm.SourceRecipe(epochs=2, batch_size=16, learning_rate=1e-2, seed=0)


@pytest.fixture(scope="module")
def source_task():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 8)
    x = rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8)
    return vt.source_and_target(ImageData(x, y, x[:40], y[:40], NAMES, build="ab" * 32))[0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
    return tmp_path / "models"


def test_trained_once_then_loaded_with_identical_weights(source_task, cache):
    first = sm.pretrained_source(source_task, "ab" * 32, TINY, progress=False)
    assert not first.cached and len(first.curve) == TINY.epochs and first.test_accuracy == first.curve[-1]
    assert len(list(cache.glob("*.weights.h5"))) == 1 and not list(cache.glob("*partial*"))
    again = sm.pretrained_source(source_task, "ab" * 32, TINY, progress=False)
    assert again.cached and again.curve == first.curve and again.seconds == first.seconds
    for a, b in zip(first.extractor.get_weights(), again.extractor.get_weights()):
        assert np.array_equal(a, b)  # batch-norm moving statistics included
    assert np.array_equal(vt.features(first.extractor, source_task.x_test), vt.features(again.extractor, source_task.x_test))


def test_the_key_changes_with_build_recipe_images_and_labels(source_task):
    key = sm.cache_key(source_task, "ab" * 32, TINY)
    assert key.startswith("cifar10-abababababab-source-")
    assert sm.cache_key(source_task, "cd" * 32, TINY) != key
    assert sm.cache_key(source_task, "ab" * 32, sm.SourceRecipe(epochs=3, batch_size=16)) != key
    assert sm.cache_key(vt.shuffled_labels(source_task), "ab" * 32, TINY) != key
    fewer = vt.Task("source", source_task.x_train[:30], source_task.y_train[:30], source_task.x_test,
                    source_task.y_test, source_task.class_names)
    assert sm.cache_key(fewer, "ab" * 32, TINY) != key


def test_a_corrupt_cached_model_is_named_and_nothing_is_lost(source_task, cache):
    sm.pretrained_source(source_task, "ab" * 32, TINY, progress=False)
    weights = next(cache.glob("*.weights.h5"))
    weights.write_bytes(b"not an h5 file")
    with pytest.raises(RuntimeError, match="unreadable.*delete"):
        sm.pretrained_source(source_task, "ab" * 32, TINY, progress=False)
    assert weights.exists()  # left for the learner to inspect or delete


def test_impossible_recipes_are_explained(source_task, cache):
    for recipe in (sm.SourceRecipe(epochs=0), sm.SourceRecipe(batch_size=10_000)):
        with pytest.raises(ValueError, match="recipe needs"):
            sm.pretrained_source(source_task, "ab" * 32, recipe, progress=False)


def test_without_cache_nothing_is_written(source_task, cache):
    sm.pretrained_source(source_task, "ab" * 32, TINY, progress=False, use_cache=False)
    assert not cache.exists() or not any(cache.iterdir())


def test_the_lessons_source_presets(source_task, cache, monkeypatch):
    """lessons.cifar_source: all source images in full mode, a per-class cap in fast mode, validation images
    held out of both; the shuffled-label source trains on the same images (labels permuted, validation
    labels true) for the same epochs; each cached under its own key."""
    from helpers import config, lessons

    rng = np.random.default_rng(1)
    data = ImageData(rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 10),
                     rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), np.repeat(np.arange(10), 5), NAMES,
                     build="ef" * 32)
    monkeypatch.setattr(lessons, "SOURCE_EPOCHS", {"full": 2, "fast": 1})
    monkeypatch.setattr(lessons, "SOURCE_IMAGES_PER_CLASS", {"full": None, "fast": 4})
    monkeypatch.setattr(lessons, "SOURCE_VALIDATION_PER_CLASS", {"full": 2, "fast": 1})
    monkeypatch.setattr(sm, "SourceRecipe", lambda epochs: TINY.__class__(epochs=epochs, batch_size=8))
    monkeypatch.setenv(config.FAST_ENV, "0")
    full_task, full = lessons.cifar_source(data, progress=False)
    assert len(full_task.x_train) == 40 and np.bincount(full_task.y_valid).tolist() == [2] * 5 and not full.cached
    assert len(full.curve) == 2
    shuffled_task, shuffled = lessons.cifar_source(data, shuffled=True, progress=False)
    assert "shuffled" in shuffled_task.name and len(shuffled.curve) == 2
    assert np.array_equal(shuffled_task.x_train, full_task.x_train) and np.array_equal(shuffled_task.y_valid, full_task.y_valid)
    assert sorted(shuffled_task.y_train) == sorted(full_task.y_train) and not np.array_equal(shuffled_task.y_train, full_task.y_train)
    monkeypatch.setenv(config.FAST_ENV, "1")
    fast_task, fast = lessons.cifar_source(data, progress=False)
    assert len(fast_task.x_train) == 15 and len(fast_task.x_valid) == 5 and not fast.cached and len(fast.curve) == 1
    assert len(lessons.cifar_source(data, shuffled=True, progress=False)[0].x_train) == 15
    assert len(list(cache.glob("*.weights.h5"))) == 4
    monkeypatch.setenv(config.FAST_ENV, "0")
    assert lessons.cifar_source(data, progress=False)[1].cached  # the full-mode source again: from the cache


def test_the_federated_target_is_a_small_seeded_draw(monkeypatch):
    from helpers import lessons

    y = np.repeat(np.arange(10), 30)
    data = ImageData(np.zeros((300, 32, 32, 3), np.uint8), y, np.zeros((300, 32, 32, 3), np.uint8), y, NAMES)
    monkeypatch.setattr(lessons, "FEDERATED_TARGET_PER_CLASS", {"train": 7, "test": 3})
    target = lessons.federated_target(data)
    assert target.class_names == NAMES[5:] and np.bincount(target.y_train).tolist() == [7] * 5
    assert np.bincount(target.y_test).tolist() == [3] * 5


def test_lesson_05s_target_holds_validation_images_out_and_draws_test_images_only_in_fast_mode(monkeypatch):
    from helpers import config, lessons

    y = np.repeat(np.arange(10), 30)
    data = ImageData(np.arange(300)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8), y,
                     np.zeros((300, 32, 32, 3), np.uint8), y, NAMES)
    monkeypatch.setattr(lessons, "TARGET_TEST_PER_CLASS", {"full": None, "fast": 4})
    monkeypatch.setattr(lessons, "TARGET_VALIDATION_PER_CLASS", {"full": 6, "fast": 2})
    monkeypatch.setenv(config.FAST_ENV, "0")
    full = lessons.cifar_target(data)
    assert np.bincount(full.y_valid).tolist() == [6] * 5 and np.bincount(full.y_train).tolist() == [24] * 5
    assert len(full.y_test) == 150
    assert not set(full.x_valid[:, 0, 0, 0]) & set(full.x_train[:, 0, 0, 0])  # no image both trains and validates
    assert np.array_equal(lessons.cifar_target(data).x_valid, full.x_valid)   # seeded
    monkeypatch.setenv(config.FAST_ENV, "1")
    fast = lessons.cifar_target(data)
    assert np.bincount(fast.y_valid).tolist() == [2] * 5 and len(fast.y_train) == 140
    assert np.bincount(fast.y_test).tolist() == [4] * 5


def test_a_source_holding_validation_images_draws_its_curve_on_them_and_reads_test_once(source_task, cache):
    task = vt.hold_out(source_task, 2, seed=0)
    assert sm.cache_key(task, "ab" * 32, TINY) != sm.cache_key(source_task, "ab" * 32, TINY)
    source = sm.pretrained_source(task, "ab" * 32, TINY, progress=False)
    assert len(source.curve) == TINY.epochs
    assert source.curve[-1] == pytest.approx(vt.accuracy(source.model, task.x_valid, task.y_valid))
    assert source.test_accuracy == pytest.approx(vt.accuracy(source.model, task.x_test, task.y_test))
    assert sm.pretrained_source(task, "ab" * 32, TINY, progress=False).test_accuracy == source.test_accuracy  # cached
