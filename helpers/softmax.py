"""Recommendation as softmax classification over the item catalogue (lesson 01).

For user u the model scores every item c,

    s_c(u; θ) = p_u · q_c + b_c,

and turns the scores into a distribution over the catalogue,

    P(item = c | u) = exp(s_c(u; θ)) / Σ_c' exp(s_c'(u; θ)).

Training maximises the log-probability of the items each user interacted with,
i.e. sparse categorical cross-entropy on the *logits* s (``from_logits=True``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import helpers.tf_quiet  # noqa: F401  (first: loads TensorFlow without its start-up lines)
import keras
import numpy as np
import pandas as pd

from helpers.metrics import hit_rate_at_k, ndcg_at_k, rank_of_targets, user_hits, user_ndcg


class SoftmaxRecommender(keras.Model):
    """User embedding · item embedding + item bias → one logit per catalogue item.

    Args:
        n_users: number of users U.
        n_items: catalogue size I.
        dim: embedding size d.
        l2: L2 penalty on the embeddings looked up in a batch.

    Call: ``user_idx`` int tensor (B,) → logits (B, I), unnormalised scores s.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 32, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_users, self.n_items, self.dim, self.l2 = n_users, n_items, dim, l2
        init = keras.initializers.RandomNormal(stddev=0.05)
        self.user_embedding = keras.layers.Embedding(n_users, dim, embeddings_initializer=init, name="user_embedding")
        self.item_embedding = keras.layers.Embedding(n_items, dim, embeddings_initializer=init, name="item_embedding")
        self.item_bias = self.add_weight(shape=(n_items,), initializer="zeros", name="item_bias")
        self.user_embedding.build((None,))
        self.item_embedding.build((None,))

    def call(self, user_idx):
        users = self.user_embedding(user_idx)  # (B, d)
        items = self.item_embedding.embeddings  # (I, d)
        if self.l2:
            self.add_loss(self.l2 * keras.ops.mean(keras.ops.sum(users**2, axis=1)))
        return keras.ops.matmul(users, keras.ops.transpose(items)) + self.item_bias


@dataclass
class TrainResult:
    """What :func:`train_softmax` returns.

    Attributes:
        model: the trained :class:`SoftmaxRecommender`.
        loss: training loss (mean cross-entropy in nats) after each epoch.
        seconds: wall-clock training time in seconds.
    """

    model: SoftmaxRecommender
    loss: list[float]
    seconds: float


def train_softmax(
    train: pd.DataFrame,
    n_users: int,
    n_items: int,
    *,
    dim: int = 32,
    epochs: int = 10,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    l2: float = 0.0,
    seed: int = 0,
    verbose: int = 0,
) -> TrainResult:
    """Train a :class:`SoftmaxRecommender` on (user, item) interactions.

    Args:
        train: frame with ``user_idx`` and ``item_idx``; each row is one example
            whose label is the item.
        n_users, n_items: sizes of the index spaces.
        dim, l2: model size and regularisation.
        epochs, batch_size, learning_rate: Adam training schedule.
        seed: seeds weights and batch order.
        verbose: passed to ``model.fit``.
    """
    keras.utils.set_random_seed(seed)
    model = SoftmaxRecommender(n_users, n_items, dim=dim, l2=l2)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    users = train["user_idx"].to_numpy(np.int32)
    items = train["item_idx"].to_numpy(np.int32)
    start = time.perf_counter()
    history = model.fit(users, items, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose)
    return TrainResult(model, [float(x) for x in history.history["loss"]], time.perf_counter() - start)


def user_scores(model: SoftmaxRecommender, user_idx: np.ndarray) -> np.ndarray:
    """Logits s_c(u) for the given users: (len(user_idx), I) float32."""
    return keras.ops.convert_to_numpy(model(np.asarray(user_idx, dtype=np.int32)))


def popularity_scores(train: pd.DataFrame, n_items: int) -> np.ndarray:
    """Most-popular baseline: each item's number of training interactions, (I,) float."""
    return np.bincount(train["item_idx"].to_numpy(), minlength=n_items).astype(np.float64)


def seen_items(train: pd.DataFrame, users: np.ndarray) -> list[np.ndarray]:
    """Items each of ``users`` interacted with in ``train`` (list of int arrays)."""
    groups = train.groupby("user_idx")["item_idx"].apply(np.asarray)
    return [groups.get(u, np.array([], dtype=np.int64)) for u in users]


def evaluate_ranking(scores: np.ndarray, train: pd.DataFrame, test: pd.DataFrame, k: int = 10,
                     units: bool = False) -> dict:
    """HR@k and NDCG@k under leave-last-out, seen items excluded.

    Args:
        scores: (U_test, I) scores, one row per row of ``test`` (same order), or an
            (I,) vector used for every user (a non-personalised baseline).
        train: training interactions (their items are excluded from ranking).
        test: one held-out interaction per user.
        units: also return each test user's hit and NDCG (what a bootstrap over users resamples).

    Returns:
        ``{"HR@k": float, "NDCG@k": float, "users": int}``, with ``units`` also
        ``"units": {"HR@k": (U_test,), "NDCG@k": (U_test,)}`` in ``test``'s row order.
    """
    users = test["user_idx"].to_numpy()
    targets = test["item_idx"].to_numpy()
    scores = np.asarray(scores)
    if scores.ndim == 1:
        scores = np.broadcast_to(scores, (len(users), scores.shape[0]))
    ranks = rank_of_targets(scores, targets, seen_items(train, users))
    result = {f"HR@{k}": hit_rate_at_k(ranks, k), f"NDCG@{k}": ndcg_at_k(ranks, k), "users": len(users)}
    if units:
        result["units"] = {f"HR@{k}": user_hits(ranks, k), f"NDCG@{k}": user_ndcg(ranks, k)}
    return result


def top_k(scores: np.ndarray, exclude: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of the k highest scores of a (I,) vector, skipping ``exclude``; best first."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
    best = np.argpartition(-scores, k)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(c | u) = exp(s_c / T) / Σ_c' exp(s_c' / T) along the last axis, computed stably.

    Args:
        scores: (..., I) logits.
        temperature: T > 0; T < 1 sharpens the distribution, T > 1 flattens it.

    Raises:
        ValueError: T not a finite positive number.
    """
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def temperature_summary(scores: np.ndarray, temperature: float, k: int = 10,
                        exclude: np.ndarray | None = None) -> dict:
    """How one user's distribution over the candidate items looks at temperature T.

    The candidates are the catalogue minus ``exclude`` (the items the user already rated),
    as in the ranking protocol and :func:`recommend_for_user`: the distribution is the
    softmax of the candidates' scores, P_T(c | u) ∝ exp(s_c / T), and seen items get 0.

    Args:
        scores: (I,) logits of one user.
        temperature: T > 0.
        k: size of the top list, 1 ≤ k ≤ number of candidates.
        exclude: item indices left out of the candidates (default: none).

    Returns:
        ``probs`` (I,) the distribution (0 for excluded items), ``top_items`` (k,) item indices best first,
        ``top_probs`` (k,) their probabilities, ``mass_top_k`` (probability in the top-k, 0..1),
        ``entropy_bits`` (of the distribution), ``max_entropy_bits`` (log2 of the number of
        candidates, the uniform distribution's entropy) and ``n_candidates``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {scores.shape}")
    candidates = np.ones(scores.size, dtype=bool)
    if exclude is not None and len(exclude):
        candidates[np.asarray(exclude, dtype=int)] = False
    n_candidates = int(candidates.sum())
    if not 1 <= k <= n_candidates:
        raise ValueError(f"k must lie in 1..{n_candidates} (the items not excluded), got {k}")
    probs = np.zeros_like(scores)
    probs[candidates] = softmax(scores[candidates], temperature)
    top = np.argsort(-probs, kind="stable")[:k]
    nonzero = probs[probs > 0]
    return {
        "probs": probs,
        "top_items": top,
        "top_probs": probs[top],
        "mass_top_k": float(probs[top].sum()),
        "entropy_bits": float(-(nonzero * np.log2(nonzero)).sum()),
        "max_entropy_bits": float(np.log2(n_candidates)),
        "n_candidates": n_candidates,
    }


def recommend_for_user(
    model: SoftmaxRecommender, items: pd.DataFrame, train: pd.DataFrame, user_idx: int, k: int = 10
) -> pd.DataFrame:
    """A user's top-k unseen items with titles and probabilities.

    Args:
        model: trained recommender.
        items: catalogue frame indexed by ``item_idx`` with ``title`` and ``genres``.
        train: training interactions; the user's items there are excluded.
        user_idx: dense user index.
        k: list length.

    Returns:
        Frame with columns ``rank, title, genres, probability`` where probability is
        P(c | u) among the items the user has not rated (the softmax over those items only,
        the same distribution as :func:`temperature_summary` with ``exclude`` at T = 1).
    """
    if not 0 <= user_idx < model.n_users:
        raise ValueError(f"user_idx must lie in 0..{model.n_users - 1}, got {user_idx}")
    scores = user_scores(model, [user_idx])[0]
    seen = train.loc[train["user_idx"] == user_idx, "item_idx"].to_numpy()
    best = top_k(scores, seen, k)
    table = items.loc[best, ["title", "genres"]].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(best) + 1))
    table["probability"] = temperature_summary(scores, 1.0, k, exclude=seen)["probs"][best]
    return table


def recent_history(train: pd.DataFrame, items: pd.DataFrame, user_idx: int, n: int = 5) -> pd.DataFrame:
    """A user's ``n`` most recent training ratings with titles: ``title, genres, rating``."""
    rows = train[train["user_idx"] == user_idx].sort_values("timestamp").tail(n)
    return items.loc[rows["item_idx"], ["title", "genres"]].assign(rating=rows["rating"].to_numpy()).reset_index(drop=True)
