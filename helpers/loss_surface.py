"""A two-parameter model whose loss surface can be drawn (lesson 02, first part).

    r̂_ui = a + b · m_i,   m_i = mean rating of item i by the other users,
    L(a, b) = (1/n) Σ (r_ui − a − b m_i)².

L is a quadratic bowl with Hessian H = (2/n) Σ [1, m_i; m_i, m_i²]. Gradient descent
with rate η converges iff η < 2 / λ_max(H) — so the "too large" rate can be computed,
not guessed.
"""

from __future__ import annotations

from helpers.tf_quiet import tf  # first: TensorFlow without its start-up lines
import numpy as np
import pandas as pd


def item_mean_feature(train: pd.DataFrame) -> np.ndarray:
    """m_i for each training rating: the mean rating of item i by the *other* users.

    Leaving the rating itself out keeps the fit honest: with the plain item mean,
    least squares would return a = 0, b = 1 by construction. Items rated once get
    the global mean.

    Returns:
        (len(train),) float64, in stars.
    """
    ratings = train["rating"].to_numpy(np.float64)
    groups = train.groupby("item_idx")["rating"]
    total = groups.transform("sum").to_numpy(np.float64)
    count = groups.transform("size").to_numpy()
    others = np.where(count > 1, (total - ratings) / np.maximum(count - 1, 1), ratings.mean())
    return others


def loss(a, b, feature: np.ndarray, ratings: np.ndarray):
    """L(a, b) = mean squared error; ``a``, ``b`` may be arrays of the same shape (a grid)."""
    a, b = np.asarray(a, np.float64)[..., None], np.asarray(b, np.float64)[..., None]
    return np.mean((ratings - a - b * feature) ** 2, axis=-1)


def hessian_eigenvalues(feature: np.ndarray) -> np.ndarray:
    """(2,) eigenvalues, ascending, of the Hessian of L(a, b) (constant: L is quadratic), in stars² per unit²."""
    x = np.stack([np.ones_like(feature), feature], axis=1)
    return np.linalg.eigvalsh(2.0 * x.T @ x / len(feature))


def critical_learning_rate(feature: np.ndarray) -> float:
    """2 / λ_max of the Hessian: the largest rate for which gradient descent converges."""
    return float(2.0 / hessian_eigenvalues(feature).max())


def gd_path(feature: np.ndarray, ratings: np.ndarray, learning_rate: float, steps: int,
            start: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The points (a, b) that hand-written gradient descent visits: (steps + 1, 2).

    Each step: GradientTape on L, then ``assign_sub(learning_rate * grad)``. Stops
    early (the path ends) once the parameters leave a ±1e3 box, i.e. diverge.
    """
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate must be > 0, got {learning_rate}")
    x = tf.constant(feature, tf.float64)
    y = tf.constant(ratings, tf.float64)
    a, b = tf.Variable(float(start[0]), dtype=tf.float64), tf.Variable(float(start[1]), dtype=tf.float64)
    path = [(a.numpy(), b.numpy())]
    for _ in range(steps):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean((y - a - b * x) ** 2)
        grad_a, grad_b = tape.gradient(value, [a, b])
        a.assign_sub(learning_rate * grad_a)
        b.assign_sub(learning_rate * grad_b)
        path.append((a.numpy(), b.numpy()))
        if max(abs(a.numpy()), abs(b.numpy())) > 1e3:
            break
    return np.array(path)


def least_squares(feature: np.ndarray, ratings: np.ndarray) -> tuple[float, float]:
    """The exact minimiser (a*, b*) of L, for reference."""
    x = np.stack([np.ones_like(feature), feature], axis=1)
    a, b = np.linalg.lstsq(x, ratings, rcond=None)[0]
    return float(a), float(b)
