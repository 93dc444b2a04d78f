"""Ranking and rating metrics.

Ranking follows the leave-last-out protocol: each user has one held-out item; the
whole catalogue is scored, items the user already saw in training are excluded,
and the held-out item's rank decides the hit (HR@k) and its discount (NDCG@k).
"""

from __future__ import annotations

import numpy as np


def rank_of_targets(scores: np.ndarray, targets: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
    """0-based rank of each user's target item among the items not seen in training.

    Args:
        scores: (U, I) float scores, higher is better.
        targets: (U,) held-out item index per row.
        seen: U arrays of item indices to exclude (the user's training items). A
            target that also appears in ``seen`` is still ranked (it is not excluded).

    Returns:
        (U,) int ranks; 0 means the target is the top recommendation. Ties count
        against the target (pessimistic), so a constant scorer cannot look good; so do
        NaN scores (a diverged model): a NaN target ranks last, a NaN item above the target.
    """
    return ranks_among(scores, targets, excluded_mask(np.shape(scores), targets, seen))


def excluded_mask(shape: tuple[int, int], targets: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
    """(U, I) bool: True where an item does not compete with row u's target — its ``seen`` items and
    the target itself (:func:`rank_of_targets`' exclusions, computed once for repeated evaluations)."""
    mask = np.zeros(shape, bool)
    lengths = [len(items) for items in seen]
    mask[np.repeat(np.arange(len(seen)), lengths), np.concatenate(seen).astype(np.int64) if seen else []] = True
    mask[np.arange(len(targets)), targets] = True
    return mask


def ranks_among(scores: np.ndarray, targets: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """:func:`rank_of_targets` with the exclusions given as an (U, I) mask (:func:`excluded_mask`)."""
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    target_scores = np.nan_to_num(scores[np.arange(len(targets)), targets], nan=-np.inf)
    ahead = scores >= target_scores[:, None]  # at or above the target: ties count against it
    if np.isnan(scores).any():
        ahead |= np.isnan(scores)
    np.logical_and(ahead, ~excluded, out=ahead)
    return np.count_nonzero(ahead, axis=1)


def user_hits(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Each user's hit, 1.0 when the held-out item's 0-based rank is below k, else 0.0: (U,) float64
    — the units a bootstrap over test users resamples for HR@k."""
    return (np.asarray(ranks) < k).astype(np.float64)


def user_ndcg(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Each user's NDCG@k with one relevant item, 1/log2(rank + 2) inside the top-k, else 0: (U,) float64."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def hit_rate_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Fraction of users whose held-out item is in their top-k (rank < k): the mean of :func:`user_hits`."""
    return float(np.mean(user_hits(ranks, k)))


def ndcg_at_k(ranks: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k with one relevant item: the mean of :func:`user_ndcg`."""
    return float(np.mean(user_ndcg(ranks, k)))


def rmse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Root mean squared error, in rating units (stars)."""
    diff = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def mae(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error, in rating units (stars)."""
    diff = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.mean(np.abs(diff)))


def top1_correct(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each row's top-1 class is its label: bool (N,) from (N, C) scores and integer labels (N,).

    Labels of shape (N, 1) — what ``keras.datasets.*.load_data()`` returns — are
    refused: compared with (N,) predictions they broadcast to an (N, N) table and
    give a silently wrong number.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got {labels.shape}: flatten them with y.ravel()")
    return np.argmax(logits, axis=1) == labels


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy (0..1) of (N, C) scores against integer labels of shape (N,): the mean of
    :func:`top1_correct` (which refuses (N, 1) labels)."""
    return float(np.mean(top1_correct(logits, labels)))


def unit_sums(owner: np.ndarray, values: np.ndarray, n_units: int) -> np.ndarray:
    """Each unit's (sum of its values, number of values), for the units that have any, in unit order.

    What a bootstrap over test users resamples for a metric pooled over ratings: RMSE is the root of
    Σ sums / Σ counts over the drawn users when ``values`` are squared errors, MAE the ratio itself when
    they are absolute errors.

    Args:
        owner: (n,) int unit index in [0, n_units) of each value.  values: (n,) float (e.g. stars²).
        n_units: how many units there are.
    Returns:
        (U', 2) float64: column 0 the sum, column 1 the count, one row per unit with count ≥ 1.
    """
    owner = np.asarray(owner)
    counts = np.bincount(owner, minlength=n_units)
    sums = np.bincount(owner, weights=np.asarray(values, dtype=np.float64), minlength=n_units)
    present = counts > 0
    return np.column_stack([sums[present], counts[present].astype(np.float64)])


ITEM_BIAS_SHRINKAGE = 5.0  # the course's item-mean baseline (lessons 06 and 09)


def damped_item_bias(items: np.ndarray, residuals: np.ndarray, n_items: int,
                     shrinkage: float = ITEM_BIAS_SHRINKAGE) -> np.ndarray:
    """The regularised item means of a baseline predictor r̂_ui = μ + b_i:
    b_i = Σ_{ratings of i} (r_ui − μ) / (n_i + shrinkage), 0 for an item nobody rated.

    Args:
        items: (n,) item index of each training rating.  residuals: (n,) r_ui − μ (stars).
    Returns:
        (n_items,) b_i in stars.
    """
    if not shrinkage >= 0:
        raise ValueError(f"shrinkage must be ≥ 0, got {shrinkage}")
    sums = np.bincount(items, weights=residuals, minlength=n_items)
    counts = np.bincount(items, minlength=n_items)
    return sums / np.maximum(counts + shrinkage, 1e-12)


def chosen_round(history) -> int:
    """Where a run is stopped: the round (0 = before training; for :mod:`helpers.mf` runs, the
    epoch) with the lowest validation RMSE, the first on ties. Its test RMSE is the one to report.

    Args:
        history: a :class:`helpers.fedcore.History` or :class:`helpers.mf.History` with ``valid_rmse``.
    Raises:
        ValueError: the run recorded no finite validation RMSE.
    """
    values = np.asarray(getattr(history, "valid_rmse", None) or [], dtype=float)
    if values.size == 0 or not np.isfinite(values).any():
        raise ValueError("the run recorded no finite validation RMSE: train it with validation ratings "
                         "(lessons.movielens_federation(validation=True), or mf.train_mf(..., valid=...))")
    return int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))


def first_reaching(values, target: float, higher_is_better: bool = True) -> int | None:
    """Index of the first value at least as good as ``target`` (≥ if higher is better, else ≤);
    None if none is. With per-round records (index 0 = before round 1) it is the round count."""
    values = np.asarray(values, dtype=float)
    hits = np.flatnonzero(values >= target if higher_is_better else values <= target)
    return int(hits[0]) if len(hits) else None


def gains_over(values: dict, baseline: str, higher_is_better: bool = True) -> dict:
    """How much each entry of ``values`` improves on ``values[baseline]``, in the metric's units:
    {name: gain} without the baseline; positive is better (for RMSE: lower)."""
    sign = 1.0 if higher_is_better else -1.0
    return {name: sign * (value - values[baseline]) for name, value in values.items() if name != baseline}


def trailing_mean(values, window: int) -> np.ndarray:
    """Each value averaged with the ``window`` − 1 before it (fewer at the start): (len(values),) —
    how a round is chosen on a noisy validation curve, using only what was measured up to then."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(len(values)) + 1 - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(len(values)) + 1 - starts)
