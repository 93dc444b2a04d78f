"""Lesson 01 helpers: softmax, temperature widget function, training, ranking."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from helpers import softmax as sm
from helpers.plots import temperature_figure
from helpers.widgets import show_or_explain


def test_softmax_is_a_distribution_and_stable():
    probs = sm.softmax(np.array([1000.0, 999.0, -1000.0]))
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0] == pytest.approx(1 / (1 + np.exp(-1)))


@pytest.mark.parametrize("temperature", [0.0, -1.0, np.inf, np.nan])
def test_impossible_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match="temperature"):
        sm.softmax(np.zeros(3), temperature)


def test_temperature_keeps_order_and_moves_entropy():
    scores = np.array([3.0, 1.0, 0.5, 0.0, -2.0])
    cold, warm = sm.temperature_summary(scores, 0.1, k=2), sm.temperature_summary(scores, 100.0, k=2)
    assert cold["top_items"].tolist() == warm["top_items"].tolist() == [0, 1]
    assert cold["mass_top_k"] > 0.99 and cold["entropy_bits"] < 0.01
    assert warm["entropy_bits"] == pytest.approx(np.log2(5), abs=1e-3)


@pytest.mark.parametrize("k", [0, 6])
def test_temperature_summary_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must"):
        sm.temperature_summary(np.zeros(5), 1.0, k=k)


def test_temperature_widget_function_edge_values(capsys):
    scores = np.linspace(-1, 1, 30)
    titles = [f"movie {i}" for i in range(30)]
    assert show_or_explain(temperature_figure, scores, titles, 0.0) is None
    assert "temperature must be" in capsys.readouterr().out
    for temperature in (0.05, 20.0, 1e-4):  # slider ends and far below them
        figure = temperature_figure(scores, titles, temperature)
        assert len(figure.axes) == 2
        matplotlib.pyplot.close(figure)


def test_top_k_skips_excluded():
    assert sm.top_k(np.array([5.0, 4.0, 3.0, 2.0]), exclude=np.array([0]), k=2).tolist() == [1, 2]


def test_evaluate_ranking_perfect_and_constant_scorers():
    train = pd.DataFrame({"user_idx": [0, 1], "item_idx": [0, 1]})
    test = pd.DataFrame({"user_idx": [0, 1], "item_idx": [2, 3]})
    perfect = np.zeros((2, 20))
    perfect[0, 2] = perfect[1, 3] = 1.0
    assert sm.evaluate_ranking(perfect, train, test)["HR@10"] == 1.0
    assert sm.evaluate_ranking(perfect, train, test)["NDCG@10"] == 1.0
    assert sm.evaluate_ranking(np.ones(20), train, test)["HR@10"] == 0.0


def test_evaluate_ranking_can_give_each_test_user_s_hit_and_ndcg():
    train = pd.DataFrame({"user_idx": [0, 1, 2], "item_idx": [0, 1, 0]})
    test = pd.DataFrame({"user_idx": [2, 0, 1], "item_idx": [5, 2, 3]})
    scores = np.zeros((3, 20))
    scores[0, 5] = 1.0                     # user 2: target first
    scores[1, 4:16] = 1.0                  # user 0: target 2 behind 12 items, a miss
    scores[2, [1, 7, 3]] = [3.0, 2.0, 1.0]  # user 1: item 1 seen (excluded), target second
    got = sm.evaluate_ranking(scores, train, test, k=10, units=True)
    assert "units" not in sm.evaluate_ranking(scores, train, test)
    assert got["units"]["HR@10"].tolist() == [1.0, 0.0, 1.0]
    assert got["units"]["NDCG@10"] == pytest.approx([1.0, 0.0, 1 / np.log2(3)])
    assert got["HR@10"] == pytest.approx(2 / 3) and got["NDCG@10"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_training_learns_a_planted_preference():
    # 40 users; users of group g interact only with items 10g..10g+4 of 30 items.
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 12)
    items = (users % 3) * 10 + rng.integers(0, 5, users.size)
    train = pd.DataFrame({"user_idx": users, "item_idx": items})
    result = sm.train_softmax(train, 40, 30, dim=8, epochs=15, batch_size=64, learning_rate=0.05, seed=1)
    assert result.loss[-1] < result.loss[0] - 1.0
    top = sm.top_k(sm.user_scores(result.model, [4])[0], exclude=np.array([], dtype=int), k=5)
    assert set(top) == set(range(10, 15))  # user 4 is in group 1
    again = sm.train_softmax(train, 40, 30, dim=8, epochs=15, batch_size=64, learning_rate=0.05, seed=1)
    assert again.loss == result.loss  # seeded


def test_recommend_for_user_rejects_unknown_user():
    model = sm.SoftmaxRecommender(3, 5, dim=2)
    items = pd.DataFrame({"title": list("abcde"), "genres": [""] * 5})
    with pytest.raises(ValueError, match="user_idx"):
        sm.recommend_for_user(model, items, pd.DataFrame({"user_idx": [], "item_idx": []}), 7)
    table = sm.recommend_for_user(model, items, pd.DataFrame({"user_idx": [0], "item_idx": [1]}), 0, k=3)
    assert "b" not in table["title"].tolist() and table["probability"].between(0, 1).all()


def test_temperature_summary_leaves_out_seen_items_like_the_ranking():
    scores = np.array([5.0, 4.0, 1.0, 0.0])
    summary = sm.temperature_summary(scores, 1.0, k=2, exclude=np.array([0]))
    assert summary["top_items"].tolist() == [1, 2]
    assert summary["probs"][0] == 0 and summary["probs"].sum() == pytest.approx(1.0)
    assert summary["n_candidates"] == 3 and summary["max_entropy_bits"] == pytest.approx(np.log2(3))
    with pytest.raises(ValueError, match="not excluded"):
        sm.temperature_summary(scores, 1.0, k=4, exclude=np.array([0]))


def test_recommend_for_user_probabilities_are_over_unseen_items():
    items = pd.DataFrame({"title": list("abcd"), "genres": ["x"] * 4})
    model = sm.SoftmaxRecommender(1, 4, dim=2)
    table = sm.recommend_for_user(model, items, pd.DataFrame({"user_idx": [0], "item_idx": [1]}), 0, k=3)
    assert table["probability"].sum() == pytest.approx(1.0, abs=1e-6)  # k = all three unseen items
