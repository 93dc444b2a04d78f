"""Splits are deterministic partitions; metrics match hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.metrics import hit_rate_at_k, mae, ndcg_at_k, rank_of_targets, rmse, unit_sums, user_hits, user_ndcg
from helpers.splits import leave_last_out, per_user_split, random_split


@pytest.fixture
def ratings():
    rng = np.random.default_rng(1)
    n = 500
    return pd.DataFrame({
        "user_idx": rng.integers(0, 20, n),
        "item_idx": rng.integers(0, 50, n),
        "rating": rng.integers(1, 6, n).astype(float),
        "timestamp": rng.integers(0, 10_000, n),
    })


def as_set(frame):
    return set(map(tuple, frame[["user_idx", "item_idx", "timestamp"]].to_numpy().tolist()))


@pytest.mark.parametrize("split", [random_split, per_user_split])
def test_split_is_seeded_partition(ratings, split):
    train, test = split(ratings, 0.2, seed=3)
    again_train, again_test = split(ratings, 0.2, seed=3)
    pd.testing.assert_frame_equal(train, again_train)
    pd.testing.assert_frame_equal(test, again_test)
    assert len(train) + len(test) == len(ratings)
    assert abs(len(test) / len(ratings) - 0.2) < 0.05
    other_train, _ = split(ratings, 0.2, seed=4)
    assert not train.equals(other_train)


def test_per_user_split_keeps_every_user_in_train(ratings):
    single = pd.DataFrame({"user_idx": [99], "item_idx": [0], "rating": [3.0], "timestamp": [1]})
    train, test = per_user_split(pd.concat([ratings, single], ignore_index=True), 0.2)
    assert set(train["user_idx"]) == set(ratings["user_idx"]) | {99}
    counts = ratings.groupby("user_idx").size()
    test_counts = test.groupby("user_idx").size()
    assert (test_counts == np.floor(0.2 * counts[test_counts.index])).all()


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_rejects_bad_fraction(ratings, fraction):
    with pytest.raises(ValueError):
        random_split(ratings, fraction)


def test_leave_last_out_holds_out_latest():
    frame = pd.DataFrame({
        "user_idx": [0, 0, 0, 1, 1, 2],
        "item_idx": [5, 6, 7, 1, 2, 3],
        "timestamp": [10, 30, 20, 5, 5, 1],
    })
    train, test = leave_last_out(frame)
    assert test.sort_values("user_idx")[["user_idx", "item_idx"]].values.tolist() == [[0, 6], [1, 2]]
    assert len(train) == 4 and 2 in set(train["user_idx"])  # single-rating user 2 stays in train


def test_ranks_exclude_seen_and_ties_are_pessimistic():
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [1.0, 1.0, 1.0, 1.0]])
    ranks = rank_of_targets(scores, np.array([2, 0]), [np.array([0]), np.array([], dtype=int)])
    assert ranks.tolist() == [1, 3]  # item 0 excluded → only item 1 beats item 2; all tied → last


def test_hit_rate_and_ndcg_by_hand():
    ranks = np.array([0, 1, 9, 10])
    assert hit_rate_at_k(ranks, 10) == 0.75
    expected = (1 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(11) + 0) / 4
    assert ndcg_at_k(ranks, 10) == pytest.approx(expected)
    assert hit_rate_at_k(ranks, 1) == 0.25
    # per user: what a bootstrap over users resamples, and whose means are the two metrics
    assert user_hits(ranks, 10).tolist() == [1.0, 1.0, 1.0, 0.0]
    np.testing.assert_allclose(user_ndcg(ranks, 10), [1.0, 1 / np.log2(3), 1 / np.log2(11), 0.0])


def test_rmse_mae():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(np.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)


def test_unit_sums_pool_each_unit_and_drop_units_with_nothing():
    owner = np.array([2, 0, 2, 2, 4])
    values = np.array([1.0, 4.0, 0.5, 2.0, 3.0])
    sums = unit_sums(owner, values, 6)
    # units 1, 3 and 5 have no value: they are not rows at all (a user with no test rating is no unit)
    np.testing.assert_array_equal(sums, [[4.0, 1.0], [3.5, 3.0], [3.0, 1.0]])
    assert sums.dtype == np.float64
    # pooled back, the rows give the mean over all values: what RMSE and MAE over ratings are made of
    assert sums[:, 0].sum() / sums[:, 1].sum() == pytest.approx(values.mean())


def test_accuracy_and_column_labels():
    from helpers.metrics import accuracy

    logits = np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="ravel"):
        accuracy(logits, np.array([[0], [1], [1]]))


def test_a_diverged_model_s_nan_scores_count_as_misses():
    scores = np.array([[np.nan, np.nan, np.nan], [1.0, np.nan, 0.5], [np.nan, 2.0, 1.0]])
    ranks = rank_of_targets(scores, np.array([0, 0, 1]), [np.array([], int)] * 3)
    assert ranks.tolist() == [2, 1, 1]  # NaN target: last of 3 candidates; a NaN item ranks above the target
    assert hit_rate_at_k(rank_of_targets(np.full((4, 20), np.nan), np.zeros(4, int), [np.array([], int)] * 4), 10) == 0.0


def test_trailing_mean_uses_only_the_values_so_far():
    from helpers.metrics import trailing_mean

    assert trailing_mean([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    assert trailing_mean([4.0, 2.0], 5).tolist() == [4.0, 3.0]
