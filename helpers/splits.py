"""Deterministic train/test splits of a ratings frame.

All functions take a frame with at least ``user_idx`` and ``item_idx`` columns and
return ``(train, test)`` frames whose rows partition the input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def random_split(
    ratings: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random split by rating: each rating goes to test with probability ``test_fraction``.

    Exactly ``round(test_fraction * n)`` ratings are drawn, seeded, so the split is
    the same on every run.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ratings))
    n_test = int(round(test_fraction * len(ratings)))
    is_test = np.zeros(len(ratings), dtype=bool)
    is_test[order[:n_test]] = True
    return ratings[~is_test].reset_index(drop=True), ratings[is_test].reset_index(drop=True)


def per_user_split(
    ratings: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split every user's ratings ``1 - test_fraction`` / ``test_fraction``, seeded.

    Each user keeps ``floor(test_fraction * n_u)`` ratings for test (at least one
    stays in train), so every user appears in train: the federated setting, where a
    client's data is split on the client.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    noise = rng.random(len(ratings))
    rank = pd.Series(noise).groupby(ratings["user_idx"].to_numpy()).rank(method="first").to_numpy() - 1
    counts = ratings.groupby("user_idx")["user_idx"].transform("size").to_numpy()
    n_test = np.minimum(np.floor(test_fraction * counts), counts - 1)
    is_test = rank < n_test
    return ratings[~is_test].reset_index(drop=True), ratings[is_test].reset_index(drop=True)


def leave_last_out(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out each user's most recent rating (the ranking protocol).

    Requires a ``timestamp`` column. Ties in time are broken by the larger
    ``item_idx``, so the split is deterministic. Users with a single rating stay
    entirely in train.
    """
    order = ratings.sort_values(["user_idx", "timestamp", "item_idx"], kind="mergesort")
    last = ~order["user_idx"].duplicated(keep="last")
    single = order.groupby("user_idx")["user_idx"].transform("size") == 1
    is_test = (last & ~single).reindex(ratings.index)
    return ratings[~is_test].reset_index(drop=True), ratings[is_test].reset_index(drop=True)
