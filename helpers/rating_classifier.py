"""A small Keras classifier used to show the mistakes of a widely copied training loop.

It predicts the star rating of (user, item) as one of 10 classes (0.5, 1.0, …, 5.0
stars) from concatenated user and item embeddings. Lesson 02 uses it to show, with
real data, what happens with a softmax output fed to ``from_logits=True``, with an
optimizer that was never set, and with a batch size that is never used.
"""

from __future__ import annotations

import time

from helpers.tf_quiet import tf  # first: TensorFlow without its start-up lines
import keras
import numpy as np
import pandas as pd

from helpers import metrics

N_CLASSES = 10


def rating_classes(ratings: pd.DataFrame) -> np.ndarray:
    """Class labels 0..9 for ratings 0.5..5 stars, shape (N,) — not (N, 1)."""
    return (np.round(ratings["rating"].to_numpy() * 2) - 1).astype(np.int32)


def inputs_of(ratings: pd.DataFrame) -> np.ndarray:
    """(N, 2) int32 array of (user_idx, item_idx)."""
    return ratings[["user_idx", "item_idx"]].to_numpy(np.int32)


def build_rating_classifier(n_users: int, n_items: int, dim: int = 16, softmax_output: bool = False,
                            seed: int = 0) -> keras.Model:
    """Embeddings → Dense(64, relu) → Dense(10). Outputs logits, or probabilities if
    ``softmax_output`` (the widely copied variant)."""
    keras.utils.set_random_seed(seed)
    pair = keras.Input(shape=(2,), dtype="int32")
    user = keras.layers.Embedding(n_users, dim)(pair[:, 0])
    item = keras.layers.Embedding(n_items, dim)(pair[:, 1])
    hidden = keras.layers.Dense(64, activation="relu")(keras.layers.Concatenate()([user, item]))
    output = keras.layers.Dense(N_CLASSES, activation="softmax" if softmax_output else None)(hidden)
    return keras.Model(pair, output)


def fit_batched(model: keras.Model, optimizer, loss_fn, x: np.ndarray, y: np.ndarray,
                batch_size: int, epochs: int, seed: int = 0) -> dict:
    """The fixed loop: shuffled mini-batches from ``tf.data``, a compiled step, an
    optimizer we created ourselves.

    Returns:
        ``loss`` (mean training loss per epoch, nats), ``updates`` (count),
        ``seconds``.
    """
    dataset = (tf.data.Dataset.from_tensor_slices((x, y))
               .shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size))

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    losses, updates, start = [], 0, time.perf_counter()
    for _ in range(epochs):
        total, count = 0.0, 0
        for xb, yb in dataset:
            total += float(step(xb, yb))
            count += 1
        losses.append(total / count)
        updates += count
    return {"loss": losses, "updates": updates, "seconds": time.perf_counter() - start}


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of examples whose most probable class is the true one."""
    return metrics.accuracy(keras.ops.convert_to_numpy(model(x, training=False)), y)
