"""The pre-trained CIFAR-10 source model: trained once to convergence, then cached.

Lessons 05 and 07, their widgets and the benchmarks start from the same source
extractor. Training it takes minutes on a laptop CPU, so :func:`pretrained_source`
trains it the first time (with a progress bar over epochs) and stores the weights and
the test-accuracy curve under the data cache (``data/models/``). The file name holds
everything the weights depend on — the dataset build (sha256 of the archive), the
task and its image count, the architecture, the recipe and the seed — so another
build, a capped dataset or a changed recipe never reuses stale weights.

Downstream code seeds itself (every ``fit`` and model builder calls
``keras.utils.set_random_seed``), so the numbers after a cache hit equal those after
a fresh pre-training.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import helpers.tf_quiet  # noqa: F401  (first: loads TensorFlow without its start-up lines)
import keras
import numpy as np

from helpers import download
from helpers import vision_transfer as vt
from helpers.progress import progress as progress_bar


@dataclass(frozen=True)
class SourceRecipe:
    """How the source is pre-trained: Adam with a cosine-decaying rate, augmentation on.

    Attributes:
        epochs: passes over the source training images.
        batch_size: images per step.
        learning_rate: Adam's initial rate (decays to 0 over all steps).
        seed: weight initialisation, shuffling and augmentation.
    """

    epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 3e-3
    seed: int = 0


@dataclass
class Source:
    """A pre-trained source.

    Attributes:
        extractor: the convolutional part (image → features); never modified by the lessons.
        model: extractor + the source's 5-way head (logits).
        test_accuracy: on the source task's test images (0..1), read once after training.
        curve: accuracy after every epoch (length ``recipe.epochs``) on the task's validation
            images when it holds them (:func:`helpers.vision_transfer.hold_out`), else on its test images.
        seconds: training time when it was trained (also on a cache hit).
        cached: True when the weights came from the cache.
    """

    extractor: keras.Sequential
    model: keras.Model
    test_accuracy: float
    curve: list[float]
    seconds: float
    cached: bool


def cache_key(task: vt.Task, build: str, recipe: SourceRecipe) -> str:
    """A file-name-safe key of everything the weights depend on."""
    described = json.dumps({"task": task.name, "classes": task.class_names, "images": len(task.x_train),
                            "validation": 0 if task.y_valid is None else len(task.y_valid),
                            "labels": hashlib.sha256(np.ascontiguousarray(task.y_train)).hexdigest(),
                            "blocks": vt.BLOCKS, "recipe": asdict(recipe)}, sort_keys=True)
    digest = hashlib.sha256(described.encode()).hexdigest()[:12]
    return f"cifar10-{build[:12]}-{task.name.replace(' ', '_').replace('(', '').replace(')', '')}-{digest}"


def _train(task: vt.Task, recipe: SourceRecipe, progress: bool) -> tuple[keras.Sequential, keras.Model, list[float]]:
    """Pre-train from scratch, one fit call per epoch with a fresh seeded shuffle; the curve is the
    accuracy after each epoch on the validation images (the test images when the task holds none)."""
    from helpers.tf_quiet import tf

    extractor = vt.build_extractor(recipe.seed)
    model = vt.classifier(extractor, len(task.class_names), inference_mode=False, seed=recipe.seed)
    steps_per_epoch = len(task.x_train) // recipe.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=steps_per_epoch * recipe.epochs)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = tf.data.Dataset.from_tensor_slices((task.x_train, task.y_train))
    held_out = (task.x_valid, task.y_valid) if task.has_validation else (task.x_test, task.y_test)
    curve = []
    for epoch in progress_bar(range(recipe.epochs), "source epochs", enabled=progress):
        batches = (images.shuffle(len(task.x_train), seed=recipe.seed * 1000 + epoch)
                   .batch(recipe.batch_size, drop_remainder=True).prefetch(2))
        model.fit(batches, epochs=1, shuffle=False, verbose=0)  # shuffled above, per epoch
        curve.append(vt.accuracy(model, *held_out))
    return extractor, model, curve


def pretrained_source(task: vt.Task, build: str, recipe: SourceRecipe = SourceRecipe(), progress: bool = True,
                      use_cache: bool = True) -> Source:
    """The source extractor for ``task``: from the cache, or trained now and cached.

    Args:
        task: the source task (lesson 05's first five classes, or its shuffled-label copy).
        build: the dataset build, :attr:`helpers.data.ImageData.build` (sha256 of the archive).
        recipe: the training recipe (part of the cache key).
        progress: a bar over epochs when training.
        use_cache: False trains anew and does not write the cache (tests).
    """
    if recipe.epochs < 1 or recipe.batch_size < 1 or recipe.batch_size > len(task.x_train):
        raise ValueError(f"a recipe needs ≥ 1 epoch and 1 ≤ batch size ≤ {len(task.x_train)} images, got {recipe}")
    key = cache_key(task, build, recipe)
    if not use_cache:
        return _train_now(task, recipe, progress, None)
    with download.cache_lock(key):  # a second process waits, then loads what the first trained
        return _load_or_train(task, recipe, progress, download.cache_dir() / "models", key)


def _load_or_train(task: vt.Task, recipe: SourceRecipe, progress: bool, folder: Path, key: str) -> Source:
    """The cached source ``folder/key.*`` if present, else trained now and written there."""
    weights, record = folder / f"{key}.weights.h5", folder / f"{key}.json"
    if weights.exists() and record.exists():
        extractor = vt.build_extractor(recipe.seed)
        model = vt.classifier(extractor, len(task.class_names), inference_mode=False, seed=recipe.seed)
        try:
            model.load_weights(weights)
            saved = json.loads(record.read_text())
        except (OSError, ValueError, KeyError) as error:
            raise RuntimeError(f"the cached source model {weights} is unreadable ({error}); delete "
                               f"{weights.name} and {record.name} and run again to retrain it") from error
        return Source(extractor, model, saved["test_accuracy"], saved["curve"], saved["seconds"], cached=True)
    return _train_now(task, recipe, progress, (weights, record))


def _train_now(task: vt.Task, recipe: SourceRecipe, progress: bool, cache: tuple[Path, Path] | None) -> Source:
    """Train the source; write its weights and record to ``cache`` (weights path, JSON path) unless None."""
    start = time.perf_counter()
    extractor, model, curve = _train(task, recipe, progress)
    seconds = time.perf_counter() - start
    test_accuracy = vt.accuracy(model, task.x_test, task.y_test) if task.has_validation else curve[-1]
    if cache is not None:
        weights, record = cache
        weights.parent.mkdir(parents=True, exist_ok=True)
        partial = weights.with_name(weights.name.replace(".weights.h5", ".partial.weights.h5"))
        model.save_weights(partial)
        partial.replace(weights)
        record.write_text(json.dumps({"test_accuracy": test_accuracy, "curve": curve, "seconds": seconds,
                                      "images": len(task.x_train), "recipe": asdict(recipe)}))
    return Source(extractor, model, test_accuracy, curve, seconds, cached=False)
