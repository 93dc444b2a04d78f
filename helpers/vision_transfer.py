"""Transfer learning on CIFAR-10: source classes → target classes (lesson 05).

Source task: airplane, automobile, bird, cat, deer. Target task: dog, frog, horse,
ship, truck. The classes are disjoint, so nothing about the target labels leaks into
pre-training, but both tasks share low-level statistics of natural 32×32 photos
(edges, colour blobs, textures) that early convolutions learn.

Four ways to learn the target task from L labelled images per class:

(a) **scratch**: a fresh network, all weights trained;
(b) **feature extraction**: the source-trained extractor frozen (batch norm in
    inference mode), only a new softmax head trained;
(c) **fine-tuning**: start from the source weights; first train the new head alone for
    half the steps (a linear probe), then everything, at a lower rate, with batch-norm
    statistics re-estimated on the target images ("LP-FT"; see :func:`run_method` and
    :func:`set_trainable_blocks`). Lesson 05 measures both choices against fine-tuning
    at once and against keeping the source's statistics, on validation images;
(d) **additive**: θ_target = θ_source + W. Every convolution computes with
    K_source + W_K (and bias b_source + W_b); only W (zero at the start, optionally
    low-rank) and the new head (whose bias is b_target) are trained. An L2 penalty
    λ‖W‖² = λ‖θ_target − θ_source‖² keeps the target model close to the source.

All models output logits and are trained with
``SparseCategoricalCrossentropy(from_logits=True)``.
"""

from __future__ import annotations

import time
import dataclasses
from dataclasses import dataclass

import helpers.tf_quiet  # noqa: F401  (first: loads TensorFlow without its start-up lines)
import keras
import numpy as np

from helpers import metrics
from helpers.data import ImageData
from helpers.progress import progress as progress_bar

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
BLOCKS = ((32,), (64,), (128,), (256,))  # conv filters per block; a max-pool ends all but the last


@dataclass(frozen=True)
class Task:
    """One classification task with labels 0..C-1.

    Attributes:
        x_train, x_test: uint8 (N, 32, 32, 3).  y_train, y_test: int (N,).
        class_names: C names.
        x_valid, y_valid: validation images held out of the training images (:func:`hold_out`),
            on which recipes, methods and stopping points are chosen; None when the task holds none.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    x_valid: np.ndarray | None = None
    y_valid: np.ndarray | None = None

    @property
    def has_validation(self) -> bool:
        """Whether the task holds validation images."""
        return self.x_valid is not None


def make_task(data: ImageData, classes: tuple[int, ...], name: str) -> Task:
    """The images of ``classes``, relabelled 0..len(classes)-1 in the given order."""
    relabel = np.full(10, -1)
    relabel[list(classes)] = np.arange(len(classes))
    keep_train, keep_test = np.isin(data.y_train, classes), np.isin(data.y_test, classes)
    return Task(name, data.x_train[keep_train], relabel[data.y_train[keep_train]],
                data.x_test[keep_test], relabel[data.y_test[keep_test]], [data.class_names[c] for c in classes])


def source_and_target(data: ImageData) -> tuple[Task, Task]:
    """The lesson's split: first five classes → last five classes."""
    return make_task(data, SOURCE_CLASSES, "source"), make_task(data, TARGET_CLASSES, "target")


def label_budget(task: Task, per_class: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subset with ``per_class`` training images of each class (None: all)."""
    if per_class is None:
        return task.x_train, task.y_train
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(task.y_train):
        members = np.flatnonzero(task.y_train == c)
        if per_class > len(members):
            raise ValueError(f"only {len(members)} images of class {task.class_names[c]} available, asked for {per_class}")
        chosen.append(rng.choice(members, per_class, replace=False))
    index = np.sort(np.concatenate(chosen))
    return task.x_train[index], task.y_train[index]


def smaller(task: Task, train_per_class: int | None, test_per_class: int | None, seed: int = 0) -> Task:
    """The same task with at most ``*_per_class`` images of each class (seeded draws; None keeps all).

    For a federation of small clients (lesson 07) and for fast mode, where fewer images
    keep the run short; the test images are drawn with ``seed + 1``.
    """
    def draw(x, y, per_class, draw_seed):
        if per_class is None:
            return x, y
        rng = np.random.default_rng(draw_seed)
        index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]))
        return x[index], y[index]

    x_train, y_train = draw(task.x_train, task.y_train, train_per_class, seed)
    x_test, y_test = draw(task.x_test, task.y_test, test_per_class, seed + 1)
    return dataclasses.replace(task, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def hold_out(task: Task, per_class: int, seed: int = 0) -> Task:
    """The task with ``per_class`` of each class's training images moved to its validation set (a
    seeded draw): label budgets (:func:`label_budget`) then draw from the rest, so a choice made on
    the validation images never sees an image a model trained on, nor a test image.

    Raises:
        ValueError: the task already holds validation images, ``per_class`` < 1, or it would leave
            a class with no training image.
    """
    if task.has_validation:
        raise ValueError(f"the task {task.name!r} already holds {len(task.y_valid):,} validation images")
    smallest = int(np.bincount(task.y_train, minlength=len(task.class_names)).min())
    if not 1 <= per_class < smallest:
        raise ValueError(f"validation images per class must lie in 1..{smallest - 1} (the smallest class holds "
                         f"{smallest} training images), got {per_class}")
    rng = np.random.default_rng(seed)
    valid = np.sort(np.concatenate([rng.choice(np.flatnonzero(task.y_train == c), per_class, replace=False)
                                    for c in range(len(task.class_names))]))
    train = np.setdiff1d(np.arange(len(task.y_train)), valid)
    return dataclasses.replace(task, x_train=task.x_train[train], y_train=task.y_train[train],
                               x_valid=task.x_train[valid], y_valid=task.y_train[valid])


def shuffled_labels(task: Task, seed: int = 0) -> Task:
    """The same images with the training labels permuted at random: a source that teaches nothing
    real. Validation and test labels stay true, so they show what it learned of the real task."""
    rng = np.random.default_rng(seed)
    return dataclasses.replace(task, name=task.name + " (shuffled labels)", y_train=rng.permutation(task.y_train))


def build_extractor(seed: int = 0) -> keras.Sequential:
    """A small CNN feature extractor: uint8 image (32, 32, 3) → 256 features.

    Rescale to [0, 1], then four conv blocks (3×3 conv → batch norm → ReLU) with
    32 | pool | 64 | pool | 128 | pool | 256 filters on 32², 16², 8² and 4² pixels,
    then global average pooling. Batch-norm
    momentum 0.9 (not Keras' 0.99), so the moving statistics settle within the few
    hundred steps a small target set gets.
    """
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255)]
    for block, filters in enumerate(BLOCKS):
        for j, f in enumerate(filters):
            layers += [keras.layers.Conv2D(f, 3, padding="same", name=f"block{block}_conv{j}"),
                       keras.layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn{j}"),
                       keras.layers.ReLU(name=f"block{block}_relu{j}")]
        if block < len(BLOCKS) - 1:
            layers.append(keras.layers.MaxPooling2D(name=f"block{block}_pool"))
    layers.append(keras.layers.GlobalAveragePooling2D(name="features"))
    return keras.Sequential(layers, name="extractor")


def augmentation(seed: int = 0) -> keras.Sequential:
    """Random horizontal flips and shifts of up to 10%, active only while training."""
    return keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed),
                             keras.layers.RandomTranslation(0.1, 0.1, seed=seed)], name="augment")


def classifier(extractor: keras.Model, n_classes: int, inference_mode: bool, seed: int = 0) -> keras.Model:
    """Image → augmentation → extractor → Dense(n_classes) logits.

    Args:
        inference_mode: call the extractor with ``training=False``, so its batch-norm
            layers use their stored statistics even while the model trains (needed
            whenever the extractor comes from the source task).
    """
    keras.utils.set_random_seed(seed)
    image = keras.Input((32, 32, 3))
    x = augmentation(seed)(image)
    features = extractor(x, training=False) if inference_mode else extractor(x)
    logits = keras.layers.Dense(n_classes, name="head")(features)
    return keras.Model(image, logits)


def set_trainable_blocks(extractor: keras.Model, blocks: int, batch_norm: bool = False) -> None:
    """Make the convolutions of the last ``blocks`` blocks trainable, freeze the rest.

    Args:
        batch_norm: also train the batch-norm layers of those blocks — their scale and
            shift, and (when the extractor is called in training mode) statistics
            re-estimated on the target batches. False keeps every batch norm as the
            source left it. Frozen blocks always keep the source's batch norm (a
            Keras batch-norm layer that is not trainable runs in inference mode).
    """
    if not 0 <= blocks <= len(BLOCKS):
        raise ValueError(f"unfrozen blocks must lie in 0..{len(BLOCKS)}, got {blocks}")
    first = len(BLOCKS) - blocks
    for layer in extractor.layers:
        in_block = layer.name.startswith("block") and int(layer.name[5]) >= first
        if isinstance(layer, keras.layers.Conv2D):
            layer.trainable = in_block
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = in_block and batch_norm
        else:
            layer.trainable = False


class AdditiveConv2D(keras.layers.Layer):
    """A 3×3 'same' convolution with weights θ_source + W: source frozen, W trainable.

    Args:
        source: the trained ``Conv2D`` whose kernel K_s (3, 3, c_in, c_out) and bias
            b_s are copied and frozen.
        rank: None for a full W_K of K_s's shape; r for W_K = reshape(A B) with
            A (9·c_in, r) ~ N(0, 0.01²) and B (r, c_out) = 0 (so W starts at zero).
        l2: penalty λ‖W‖², i.e. λ‖θ_target − θ_source‖² ("stay close to the source").
    """

    def __init__(self, source: keras.layers.Conv2D, rank: int | None = None, l2: float = 0.0, **kwargs):
        super().__init__(name=source.name + "_additive", **kwargs)
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in source.weights)
        self.shape_k = kernel.shape
        self.rank = rank
        regularizer = keras.regularizers.L2(l2) if l2 else None
        self.kernel_source = self.add_weight(shape=kernel.shape, initializer=keras.initializers.Constant(kernel),
                                             trainable=False, name="kernel_source")
        self.bias_source = self.add_weight(shape=bias.shape, initializer=keras.initializers.Constant(bias),
                                           trainable=False, name="bias_source")
        if rank is None:
            self.w_kernel = self.add_weight(shape=kernel.shape, initializer="zeros", regularizer=regularizer, name="W_kernel")
        else:
            fan_in = int(np.prod(kernel.shape[:3]))
            self.w_a = self.add_weight(shape=(fan_in, rank), initializer=keras.initializers.RandomNormal(stddev=0.01),
                                       name="W_a")
            self.w_b = self.add_weight(shape=(rank, kernel.shape[3]), initializer="zeros", regularizer=regularizer,
                                       name="W_b")
        self.w_bias = self.add_weight(shape=bias.shape, initializer="zeros", regularizer=regularizer, name="W_bias")

    def delta_kernel(self):
        """W_K, the change of the kernel: (3, 3, c_in, c_out)."""
        if self.rank is None:
            return self.w_kernel
        return keras.ops.reshape(keras.ops.matmul(self.w_a, self.w_b), self.shape_k)

    def call(self, x):
        kernel = self.kernel_source + self.delta_kernel()
        return keras.ops.conv(x, kernel, strides=1, padding="same") + (self.bias_source + self.w_bias)


def additive_extractor(source: keras.Sequential, rank: int | None = None, l2: float = 0.0) -> keras.Sequential:
    """A copy of ``source`` in which every conv computes with θ_source + W (W = 0 at first).

    Batch norms are copied and frozen (inference mode); nothing of ``source`` changes.
    """
    layers = [keras.Input((32, 32, 3))]
    for layer in source.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layers.append(AdditiveConv2D(layer, rank=rank, l2=l2))
        else:
            copy = layer.__class__.from_config(layer.get_config())
            copy.build(layer.input.shape)
            copy.set_weights(layer.get_weights())
            copy.trainable = False
            layers.append(copy)
    return keras.Sequential(layers, name="extractor_additive")


def count_params(model: keras.Model) -> dict:
    """Trainable and frozen parameter counts of a model."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"trainable": trainable, "frozen": frozen}


class _Curve(keras.callbacks.Callback):
    """Accuracy on held-out images at ``points`` evenly spaced steps of a ``steps``-step fit (the last one included)."""

    def __init__(self, images: tuple[np.ndarray, np.ndarray], steps: int, points: int):
        super().__init__()
        self.images, self.at = images, set(np.linspace(steps / points, steps, points).round().astype(int).tolist())
        self.curve: list[tuple[int, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 in self.at:
            self.curve.append((batch + 1, accuracy(self.model, *self.images)))


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, *, steps: int, learning_rate: float,
        batch_size: int = 64, seed: int = 0, track: tuple[np.ndarray, np.ndarray] | None = None,
        track_points: int = 8) -> dict:
    """Train ``model`` for a fixed number of Adam steps (the same budget for every method),
    the rate decaying from ``learning_rate`` to 0 on a cosine.

    The data is shuffled and repeated, so a tiny label budget still gets ``steps``
    updates without per-epoch overhead.

    Args:
        track: (x, y) held-out images (validation, or test) whose accuracy is measured
            ``track_points`` times during training (the training curve; costs one pass over
            them each time).

    Returns ``{"loss": final training loss (nats), "seconds": float, "epochs": passes over x,
    "curve": [(step, accuracy on track), ...] (empty without ``track``)}``.
    """
    from helpers.tf_quiet import tf

    keras.utils.set_random_seed(seed)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
               .repeat().batch(batch_size))
    callbacks = [] if track is None else [_Curve(track, steps, track_points)]
    start = time.perf_counter()
    history = model.fit(batches, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0,  # tf.data shuffles
                        callbacks=callbacks)
    seconds = time.perf_counter() - start
    loss, curve = float(history.history["loss"][-1]), callbacks[0].curve if callbacks else []
    return {"loss": loss, "seconds": seconds, "epochs": steps * batch_size / len(x), "curve": curve}


def logits_of(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The model's (N, C) logits on uint8 images ``x``, in batches of 512 (inference mode)."""
    return np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 512], training=False))
                           for i in range(0, len(x), 512)])


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (0..1) on uint8 images ``x`` with labels ``y`` of shape (N,)."""
    return metrics.accuracy(logits_of(model, x), y)


def correct(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each image's top-1 class is its label: bool (N,), whose mean is :func:`accuracy` —
    the per-image units a paired bootstrap over test images resamples (:func:`helpers.findings.compare_at_95`)."""
    return metrics.top1_correct(logits_of(model, x), y)


def features(extractor: keras.Model, x: np.ndarray) -> np.ndarray:
    """Extractor outputs in inference mode, no augmentation: (N, F) float32 (F = 256 for :func:`build_extractor`)."""
    return np.concatenate([keras.ops.convert_to_numpy(extractor(x[i:i + 512], training=False))
                           for i in range(0, len(x), 512)])


METHODS = {
    "scratch": "(a) from scratch",
    "features": "(b) frozen features + new head",
    "finetune": "(c) fine-tune: head, then all",
    "additive": "(d) θ_source + W",
}
LEARNING_RATES = {"scratch": 3e-3, "features": 3e-3, "finetune": 1e-3, "additive": 1e-3}
PROBE_SHARE = {"finetune": 0.5}  # share of a method's steps spent on the head alone first (LP-FT)
CURVE_TEST_PER_CLASS = 200  # test images per class behind a training curve's points


def target_steps(n_images: int, max_steps: int = 400, batch_size: int = 64) -> int:
    """Update budget for a target run: 15 passes over the data, at least 150 and at most ``max_steps``."""
    return int(np.clip(round(15 * n_images / batch_size), min(150, max_steps), max_steps))


def copy_extractor(extractor: keras.Sequential) -> keras.Sequential:
    """An independent copy with the same weights (the source model stays untouched)."""
    copy = keras.models.clone_model(extractor)
    copy.set_weights(extractor.get_weights())
    return copy


def pooled_at(extractor: keras.Sequential, block: int) -> keras.Model:
    """The extractor cut after conv block ``block`` (0-based), globally average-pooled:
    image → BLOCKS[block][-1] features. Shares (does not copy) ``extractor``'s layers."""
    if not 0 <= block < len(BLOCKS):
        raise ValueError(f"feature block must lie in 0..{len(BLOCKS) - 1}, got {block}")
    last = extractor.get_layer(f"block{block}_relu{len(BLOCKS[block]) - 1}")
    pooled = keras.layers.GlobalAveragePooling2D(name=f"features_block{block}")(last.output)
    return keras.Model(extractor.inputs, pooled, name=f"extractor_to_block{block}")


def target_model(method: str, source: keras.Sequential | None, n_classes: int, seed: int = 0,
                 unfrozen_blocks: int = len(BLOCKS), rank: int | None = None, l2: float = 0.0,
                 retrain_batch_norm: bool = True, feature_block: int = len(BLOCKS) - 1) -> keras.Model:
    """The target-task model of one method (see the module docstring), ready to train.

    Args:
        method: a key of :data:`METHODS`.
        source: the source-trained extractor (unused for ``"scratch"``; never modified).
        unfrozen_blocks: for ``"finetune"``, how many of the last conv blocks train.
        rank, l2: for ``"additive"``, the rank of W (None: full) and its L2 penalty.
        retrain_batch_norm: for ``"finetune"``, train the batch norms of the unfrozen
            blocks too, in training mode (statistics re-estimated on the target batches;
            the default, measured against the alternative in lesson 05), or keep the
            source's statistics and scale/shift (False).
        feature_block: for ``"features"``, the block whose pooled output feeds the head
            (the last by default; earlier blocks are more generic, later ones more
            specific to the source classes).
    """
    if method == "scratch":
        return classifier(build_extractor(seed), n_classes, inference_mode=False, seed=seed)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    if method == "additive":
        return classifier(additive_extractor(source, rank=rank, l2=l2), n_classes, inference_mode=True, seed=seed)
    extractor = copy_extractor(source)
    if method == "features":
        set_trainable_blocks(extractor, 0)
        if feature_block != len(BLOCKS) - 1:
            extractor = pooled_at(extractor, feature_block)
        return classifier(extractor, n_classes, inference_mode=True, seed=seed)
    set_trainable_blocks(extractor, unfrozen_blocks, batch_norm=retrain_batch_norm)
    return classifier(extractor, n_classes, inference_mode=not retrain_batch_norm, seed=seed)


def run_method(method: str, source: keras.Sequential | None, target: Task, per_class: int | None,
               seed: int = 0, max_steps: int = 400, learning_rate: float | None = None,
               track: bool = False, probe_share: float | None = None, **options) -> dict:
    """Train one method on a seeded label budget for :func:`target_steps` updates and
    measure target accuracy on the validation images (when the task holds them) and the test images.

    Args:
        learning_rate: Adam's initial rate; None takes the method's :data:`LEARNING_RATES`.
        track: also measure an accuracy curve during training (see :func:`fit`): on the
            validation images when the task holds them, else on :data:`CURVE_TEST_PER_CLASS`
            test images per class.
        probe_share: for ``"finetune"``, the share of the steps spent first on the new head
            alone (a linear probe, extractor frozen) before fine-tuning ("LP-FT", Kumar et
            al. 2022): the head starts fine-tuning already fitted, so early gradients do
            not wreck the source features. The total number of steps stays the same.
            None takes :data:`PROBE_SHARE` (0.5 for fine-tuning, else 0).
        options: passed to :func:`target_model`.

    Returns ``{"method", "per_class", "seed", "blocks" (trained conv blocks for (b)/(c),
    else None), "accuracy" (test, 0..1), "test_correct" (bool per test image), "valid_accuracy"
    and "valid_correct" (None without validation images), "seconds", "trainable", "steps",
    "curve" ([(step, accuracy)]), "curve_on" ("validation" or "test")}``.
    """
    x, y = label_budget(target, per_class, seed)
    model = target_model(method, source, len(target.class_names), seed, **options)
    steps = target_steps(len(x), max_steps)
    share = PROBE_SHARE.get(method, 0.0) if probe_share is None else probe_share
    probe = int(round(share * steps)) if method == "finetune" else 0
    held_out = None  # the curve's images (each point costs a pass over them)
    if track and target.has_validation:
        held_out = (target.x_valid, target.y_valid)
    elif track:
        fixed = smaller(target, None, CURVE_TEST_PER_CLASS)
        held_out = (fixed.x_test, fixed.y_test)
    seconds, curve = 0.0, []
    if probe:  # linear probe first: only the new head trains, then everything the method trains
        extractor = model.get_layer("extractor")
        trainable = [layer.trainable for layer in extractor.layers]
        for layer in extractor.layers:
            layer.trainable = False
        run = fit(model, x, y, steps=probe, learning_rate=LEARNING_RATES["features"], seed=seed, track=held_out,
                  track_points=4)
        seconds, curve = run["seconds"], run["curve"]
        for layer, was in zip(extractor.layers, trainable):
            layer.trainable = was
    run = fit(model, x, y, steps=steps - probe, learning_rate=learning_rate or LEARNING_RATES[method], seed=seed,
              track=held_out, track_points=4 if probe else 8)
    seconds += run["seconds"]
    curve += [(probe + step, value) for step, value in run["curve"]]
    blocks = {"features": 0, "finetune": options.get("unfrozen_blocks", len(BLOCKS))}.get(method)
    test_correct = correct(model, target.x_test, target.y_test)
    valid_correct = correct(model, target.x_valid, target.y_valid) if target.has_validation else None
    return {"method": method, "per_class": per_class if per_class is not None else int(len(y) / len(target.class_names)),
            "seed": seed, "blocks": blocks, "accuracy": float(np.mean(test_correct)), "test_correct": test_correct,
            "valid_accuracy": None if valid_correct is None else float(np.mean(valid_correct)),
            "valid_correct": valid_correct, "seconds": seconds, "trainable": count_params(model)["trainable"],
            "steps": steps, "curve": curve, "curve_on": "validation" if target.has_validation else "test"}


def run_grid(source: keras.Sequential | None, target: Task, methods, budgets, seeds, progress: bool = True,
             max_steps: int = 400, track_budget: int | None = None, **options) -> "pd.DataFrame":
    """Every (method, label budget, seed) combination; one row per run (see :func:`run_method`).

    The same seed gives every method the same target examples. ``track_budget``: the
    label budget whose seed-``seeds[0]`` runs also record their accuracy curve.
    """
    import pandas as pd
    combos = [(m, b, s) for b in budgets for s in seeds for m in methods]
    rows = [run_method(m, source, target, b, seed=s, max_steps=max_steps, track=(b == track_budget and s == seeds[0]),
                       **options)
            for m, b, s in progress_bar(combos, "target runs", enabled=progress)]
    return pd.DataFrame(rows)


def per_seed(runs: "pd.DataFrame", method: str, per_class: int, column: str = "accuracy", seeds=None) -> list:
    """``column`` of ``method``'s runs at ``per_class`` labels per class, ordered by seed (only
    ``seeds`` when given): per-seed values, or per-seed unit arrays ("test_correct"), as
    :func:`helpers.findings.compare_at_95` takes them.

    Raises:
        ValueError: no run of ``method`` at ``per_class`` (for one of ``seeds``).
    """
    at = runs[(runs["method"] == method) & (runs["per_class"] == per_class)].sort_values("seed")
    if seeds is not None:
        at = at[at["seed"].isin(list(seeds))]
    wanted = len(at) if seeds is None else len(set(seeds))
    if at.empty or len(at) != wanted:
        raise ValueError(f"no run of {method!r} at {per_class} labels per class for every seed asked "
                         f"(seeds run: {sorted(runs['seed'][(runs['method'] == method) & (runs['per_class'] == per_class)])})")
    return at[column].tolist()


def choose_on_validation(runs: "pd.DataFrame", methods, per_class: int) -> str:
    """The method of ``methods`` with the highest mean validation accuracy over its seeds at
    ``per_class`` labels per class (the first in ``methods`` on a tie): a choice that reads no test image.

    Raises:
        ValueError: runs without validation accuracy, or a method with no run at ``per_class``.
    """
    means = {}
    for method in methods:
        values = per_seed(runs, method, per_class, "valid_accuracy")
        if any(v is None or not np.isfinite(v) for v in values):
            raise ValueError(f"the runs of {method!r} hold no validation accuracy: hold validation images out "
                             f"of the target first (hold_out)")
        means[method] = float(np.mean(values))
    return max(methods, key=lambda m: means[m])


ACCURACY_COLUMNS = {"accuracy": "test accuracy", "valid_accuracy": "validation accuracy"}


def summarise(runs: "pd.DataFrame", column: str = "accuracy", labels: dict | None = None) -> "pd.DataFrame":
    """``column``'s mean ± standard deviation over seeds (ddof 1; 0 for one seed): rows = labels per
    class, columns = the methods of ``labels`` (method → column label; default :data:`METHODS`) that
    were run, in its order; the columns' name says what the cells hold."""
    labels = METHODS if labels is None else labels
    if column not in ACCURACY_COLUMNS:
        raise ValueError(f"column must be one of {list(ACCURACY_COLUMNS)}, got {column!r}")
    stats = runs.groupby(["per_class", "method"])[column].agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [f"{m:.3f} ± {0.0 if np.isnan(s) else s:.3f}" for m, s in zip(stats["mean"], stats["std"])]
    table = stats.pivot(index="per_class", columns="method", values="cell")
    table = table[[m for m in labels if m in table.columns]].rename(columns=labels).rename_axis("labels per class")
    seeds = int(stats["count"].max())
    table.columns.name = f"target {ACCURACY_COLUMNS[column]}: mean ± sd over {seeds} seed{'s' if seeds > 1 else ''}"
    return table


def nearest_mean_accuracy(train_features: np.ndarray, y_train: np.ndarray, test_features: np.ndarray,
                          y_test: np.ndarray) -> float:
    """Accuracy of 'closest class mean' in feature space: how separable the features are, untrained."""
    classes = np.unique(y_train)
    means = np.stack([train_features[y_train == c].mean(axis=0) for c in classes])
    distance = ((test_features[:, None, :] - means[None]) ** 2).sum(axis=2)
    return float(np.mean(classes[np.argmin(distance, axis=1)] == y_test))


def pca_2d(features: np.ndarray) -> np.ndarray:
    """Projection of (N, F) features on their first two principal components: (N, 2)."""
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def accuracies_for(runs: "pd.DataFrame", per_class: int, unfrozen_blocks: int, column: str = "accuracy") -> dict:
    """The widget's lookup: mean ``column`` (test or validation accuracy) of scratch, additive and
    fine-tuning with the last ``unfrozen_blocks`` conv blocks trained (0 = frozen features), from cached runs.

    Raises:
        ValueError: a budget that was not run, a block count outside 0..len(BLOCKS), or a block count with no cached run.
    """
    if not 0 <= unfrozen_blocks <= len(BLOCKS):
        raise ValueError(f"unfrozen blocks must lie in 0..{len(BLOCKS)}, got {unfrozen_blocks}")
    budgets = sorted(int(b) for b in runs["per_class"].unique())
    if per_class not in budgets:
        raise ValueError(f"labels per class must be one of the cached budgets {budgets}, got {per_class}")
    at = runs[runs["per_class"] == per_class]
    tuned = at[at["method"].isin(["features", "finetune"]) & (at["blocks"] == unfrozen_blocks)]
    if tuned.empty:
        raise ValueError(f"no cached run with {unfrozen_blocks} unfrozen block(s) at {per_class} labels per class")
    label = "(b) frozen features" if unfrozen_blocks == 0 else f"(c) fine-tune last {unfrozen_blocks} block(s)"
    return {METHODS["scratch"]: float(at.loc[at["method"] == "scratch", column].mean()),
            label: float(tuned[column].mean()),
            METHODS["additive"]: float(at.loc[at["method"] == "additive", column].mean())}
