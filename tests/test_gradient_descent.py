"""Lesson 02 helpers: hand-written GD equals Keras SGD, divergence, widget function edges."""

from __future__ import annotations

import keras
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from helpers import loss_surface as ls
from helpers import mf
from helpers.plots import plot_playground
from helpers.widgets import show_or_explain


@pytest.fixture(scope="module")
def ratings():
    """A small planted low-rank rating table (synthetic, for unit tests only)."""
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 600), rng.integers(0, 40, 600)
    p, q = rng.normal(0, 0.7, (30, 2)), rng.normal(0, 0.7, (40, 2))
    rating = np.clip(3.5 + (p[users] * q[items]).sum(1) + rng.normal(0, 0.3, 600), 0.5, 5.0)
    frame = pd.DataFrame({"user_idx": users, "item_idx": items, "rating": rating.astype(np.float32)})
    return frame.iloc[:500].reset_index(drop=True), frame.iloc[500:].reset_index(drop=True)


def test_hand_step_equals_keras_sgd(ratings):
    train, _ = ratings
    by_hand = mf.init_mf(30, 40, 4, mu=3.5, seed=1)
    by_keras = by_hand.copy()
    optimizer = keras.optimizers.SGD(0.3)
    users, items, values = mf.as_tensors(train)
    for step in range(10):
        batch = slice(50 * step, 50 * (step + 1))
        mf.hand_step(by_hand, users[batch], items[batch], values[batch], 0.3, l2=0.05)
        mf.optimizer_step(by_keras, optimizer, users[batch], items[batch], values[batch], l2=0.05)
    assert mf.max_abs_difference(by_hand, by_keras) <= 1e-6
    assert mf.max_abs_difference(by_hand, mf.init_mf(30, 40, 4, mu=3.5, seed=1)) > 1e-3  # it moved


def test_sum_with_rate_over_n_equals_mean(ratings):
    train, _ = ratings
    start = mf.init_mf(30, 40, 4, mu=3.5, seed=2)
    summed, averaged = start.copy(), start.copy()
    tensors = mf.as_tensors(train)
    mf.hand_step(summed, *tensors, 0.5 / len(train), l2=0.0, reduce="sum")
    mf.hand_step(averaged, *tensors, 0.5, l2=0.0, reduce="mean")
    assert mf.max_abs_difference(summed, averaged) < 1e-6


def test_compiled_epoch_matches_hand_steps(ratings):
    train, test = ratings
    looped, compiled = mf.init_mf(30, 40, 4, mu=3.5, seed=3), mf.init_mf(30, 40, 4, mu=3.5, seed=3)
    tensors = mf.as_tensors(train)
    for start in range(0, len(train), 64):
        mf.hand_step(looped, *(t[start:start + 64] for t in tensors), 0.2, l2=0.01)
    import tensorflow as tf
    mf.make_epoch(compiled, 0.01)(*tensors, tf.constant(64), tf.constant(0.2))
    assert mf.max_abs_difference(looped, compiled) < 1e-5


def test_training_reduces_test_error_and_is_seeded(ratings):
    train, test = ratings
    runs = [mf.train_mf(mf.init_mf(30, 40, 4, mu=3.5, seed=0), train, test, batch_size=32, epochs=15,
                        learning_rate=0.5, l2=0.01, seed=0) for _ in range(2)]
    assert runs[0].test_rmse[-1] < runs[0].test_rmse[0] - 0.05
    assert runs[0].train_rmse == runs[1].train_rmse
    assert not runs[0].diverged and runs[0].updates[-1] == 15 * 16


def test_divergence_is_detected(ratings):
    train, test = ratings
    history = mf.train_mf(mf.init_mf(30, 40, 4, mu=3.5), train, test, batch_size=500, epochs=50,
                          learning_rate=500.0)
    assert history.diverged and np.isnan(history.test_rmse[-1])


def test_the_rate_is_chosen_on_the_validation_ratings_from_the_same_start(ratings):
    train, held_out = ratings
    valid, test = held_out.iloc[:50], held_out.iloc[50:]
    start = lambda: mf.init_mf(30, 40, 4, mu=3.5, seed=4)
    rates = (0.01, 0.5, 500.0)                        # too slow, right, divergent
    choice = mf.choose_rate(start, train, test, valid, rates=rates, batch_size=32, epochs=8, l2=0.01, seed=1)
    assert list(choice.histories) == list(rates) and choice.rate == 0.5 and choice.history is choice.histories[0.5]
    assert choice.histories[500.0].diverged and choice.lowest[500.0] == np.inf
    for rate in (0.01, 0.5):                          # each run is train_mf's from the same start
        alone = mf.train_mf(start(), train, test, valid=valid, batch_size=32, epochs=8, learning_rate=rate, l2=0.01,
                            seed=1)
        assert choice.histories[rate].valid_rmse == alone.valid_rmse
        assert choice.lowest[rate] == min(alone.valid_rmse)
    assert choice.lowest[0.5] < choice.lowest[0.01]
    # chosen on validation only: test ratings turned upside down change nothing in the choice
    upside_down = test.assign(rating=(6.0 - test["rating"]).astype(np.float32))
    other = mf.choose_rate(start, train, upside_down, valid, rates=rates, batch_size=32, epochs=8, l2=0.01, seed=1)
    assert other.rate == choice.rate and other.lowest == choice.lowest
    tie = mf.choose_rate(start, train, test, valid, rates=(0.5, 0.5), batch_size=32, epochs=2)
    assert tie.rate == 0.5 and len(tie.histories) == 1


def test_choosing_a_rate_refuses_no_rates_and_says_when_every_rate_diverged(ratings):
    train, held_out = ratings
    start = lambda: mf.init_mf(30, 40, 4, mu=3.5)
    with pytest.raises(ValueError, match="at least one learning rate"):
        mf.choose_rate(start, train, held_out, held_out, rates=[], batch_size=32, epochs=1)
    with pytest.raises(ValueError, match="every rate in \\[500.0, 900.0\\] diverged at batch size 500"):
        mf.choose_rate(start, train, held_out, held_out, rates=[500, 900], batch_size=500, epochs=50)


@pytest.mark.parametrize("rate, batch, steps, message", [
    (0.0, 10, 10, "learning rate"), (-1.0, 10, 10, "learning rate"), (float("nan"), 10, 10, "learning rate"),
    (0.1, 0, 10, "batch size"), (0.1, -5, 10, "batch size"), (0.1, 501, 10, "larger than"),
    (0.1, 10, 0, "steps"),
])
def test_impossible_settings_are_explained(ratings, rate, batch, steps, message):
    train, test = ratings
    with pytest.raises(ValueError, match=message):
        mf.train_mf(mf.init_mf(30, 40, 4, mu=3.5), train, test, batch_size=batch, epochs=steps, learning_rate=rate)


def test_playground_widget_function(ratings, capsys):
    train, test = ratings
    playground = mf.GDPlayground(train, test, 30, 40, dim=4)
    render = lambda rate, batch, steps: plot_playground(playground.run(rate, batch, steps), rate, batch)
    assert show_or_explain(render, 0.0, 10, 10) is None
    assert "learning rate must be > 0" in capsys.readouterr().out
    assert show_or_explain(render, 0.1, 0, 10) is None
    assert "batch size" in capsys.readouterr().out
    assert show_or_explain(render, 0.1, 10_000, 10) is None
    assert "larger than the 500" in capsys.readouterr().out
    first = playground.run(0.5, 500, 30)  # the full-batch end of the slider
    again = playground.run(0.5, 500, 30)
    assert first == again and first["test_rmse"][-1] < first["test_rmse"][0]
    assert playground.run(1e4, 1, 50)["diverged"]
    figure = render(0.5, 1, 1)  # smallest values
    assert figure.axes[0].get_xlabel() == "update steps"
    matplotlib.pyplot.close("all")


def test_two_parameter_surface():
    rng = np.random.default_rng(0)
    feature = rng.normal(3.5, 0.5, 400)
    target = 1.0 + 0.7 * feature + rng.normal(0, 0.1, 400)
    a, b = ls.least_squares(feature, target)
    assert (a, b) == pytest.approx((1.0, 0.7), abs=0.1)
    limit = ls.critical_learning_rate(feature)
    good = ls.gd_path(feature, target, 0.9 * limit, steps=3000)
    assert good[-1] == pytest.approx([a, b], abs=0.05)
    bad = ls.gd_path(feature, target, 1.05 * limit, steps=3000)
    assert np.abs(bad[-1]).max() > 1e3 and len(bad) < 3001  # diverged and stopped
    with pytest.raises(ValueError):
        ls.gd_path(feature, target, 0.0, steps=3)


def test_leave_one_out_item_mean():
    frame = pd.DataFrame({"item_idx": [0, 0, 0, 1], "rating": [1.0, 2.0, 3.0, 4.0]})
    assert ls.item_mean_feature(frame).tolist() == [2.5, 2.0, 1.5, 2.5]
