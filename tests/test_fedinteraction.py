"""The federated interaction model: its table layout, its hand-written gradients and its round."""

import numpy as np
import pandas as pd
import pytest

from helpers import fedcore as fc
from helpers import fedinteraction as fi
from helpers.fedcore import FedConfig

DIM, HIDDEN = 3, 5


def ratings(n_users=6, n_items=8, seed=0, low=4, high=8):
    """Every user rates a seeded random ``low`` … ``high`` − 1 items, 1–5 stars."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, rng.integers(low, high), replace=False):
            rows.append((u, int(i), float(rng.integers(1, 6))))
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating"])


def task_and_state(train_interaction=True, seed=0):
    frame = ratings()
    task = fi.InteractionTask(frame, 6, 8, DIM, float(frame["rating"].mean()), HIDDEN, train_interaction)
    state, store = fi.init_state(task, seed, scale=0.5)
    rng = np.random.default_rng(seed + 1)   # biases off zero so that every gradient term shows
    state.params[:8, -1] = rng.normal(0, 0.3, 8)
    store.user_bias[:] = rng.normal(0, 0.3, 6)
    return task, state, store


def loss(params, p, bu, items, values, mu, l2):
    """One client's full-batch loss, written out directly (no helper code)."""
    g = params[8:]
    w1, b1 = g[:HIDDEN, :-1].T, g[:HIDDEN, -1]
    tail = g[HIDDEN:].ravel()
    w2, b2 = tail[:HIDDEN], tail[HIDDEN]
    q, b = params[items, :-1], params[items, -1]
    out = np.maximum((q * p) @ w1 + b1, 0) @ w2 + b2
    error = mu + bu + b + out - values
    penalty = (q ** 2).sum(1) + b ** 2 + p @ p + bu ** 2
    return np.mean(error ** 2 + l2 * penalty) + l2 * ((w1 ** 2).sum() + (w2 ** 2).sum())


def test_the_table_layout_round_trips_and_leaves_the_tail_zero():
    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = rng.normal(size=(DIM, HIDDEN)), rng.normal(size=HIDDEN), rng.normal(size=HIDDEN), 0.7
    rows = fi.pack_interaction(w1, b1, w2, b2)
    assert rows.shape == (fi.interaction_rows(DIM, HIDDEN), DIM + 1) == (HIDDEN + 2, DIM + 1)  # 6 values in 2 rows of 4
    back = fi.interaction_parts(rows, HIDDEN)
    for got, want in zip(back, (w1, b1, w2, b2)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert rows[-1, -2:].tolist() == [0.0, 0.0]
    z = rng.normal(size=(4, DIM))
    np.testing.assert_allclose(fi.interaction_outputs(rows, z, HIDDEN), np.maximum(z @ w1 + b1, 0) @ w2 + b2, rtol=1e-5)


def test_one_step_moves_every_parameter_against_its_central_difference_gradient():
    task, state, store = task_and_state()
    config = FedConfig(1, 1, 0, client_lr=1e-3, l2=0.05)
    client = 2
    items, values = task.client_data(client)
    p0, bu0 = store.user_vec[client].astype(np.float64), float(store.user_bias[client])
    params = state.params.astype(np.float64)
    updates = fi.local_training(task, state.params, store, np.array([client]), config, 0)
    step = np.zeros_like(params)
    step[updates.rows] = updates.values
    assert sorted(updates.rows.tolist()) == sorted(items.tolist() + list(range(8, 8 + HIDDEN + 2)))
    eps = 1e-6
    for row in list(items) + list(range(8, 8 + HIDDEN + 2)):
        for col in range(DIM + 1):
            if row == 8 + HIDDEN + 1 and col >= 2:
                continue  # the unused tail
            up, down = params.copy(), params.copy()
            up[row, col] += eps
            down[row, col] -= eps
            numeric = (loss(up, p0, bu0, items, values, task.mu, 0.05) - loss(down, p0, bu0, items, values, task.mu, 0.05)) / (2 * eps)
            assert step[row, col] == pytest.approx(-1e-3 * numeric, rel=1e-3, abs=1e-9), (row, col)
    assert np.all(step[8 + HIDDEN + 1, 2:] == 0)
    for col in range(DIM):
        up, down = p0.copy(), p0.copy()
        up[col] += eps
        down[col] -= eps
        numeric = (loss(params, up, bu0, items, values, task.mu, 0.05) - loss(params, down, bu0, items, values, task.mu, 0.05)) / (2 * eps)
        assert store.user_vec[client, col] - p0[col] == pytest.approx(-1e-3 * numeric, rel=1e-3, abs=1e-9)
    numeric = (loss(params, p0, bu0 + eps, items, values, task.mu, 0.05) - loss(params, p0, bu0 - eps, items, values, task.mu, 0.05)) / (2 * eps)
    assert store.user_bias[client] - bu0 == pytest.approx(-1e-3 * numeric, rel=1e-3)


def test_fedsgd_over_every_client_is_one_full_batch_step_on_the_pooled_loss():
    tf = pytest.importorskip("tensorflow")
    task, state, store = task_and_state()
    frame = task.ratings
    l2, rate = 0.05, 0.1
    table = tf.Variable(state.params.astype(np.float64))
    users, items = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
    p = tf.constant(store.user_vec[users].astype(np.float64))
    bu = tf.constant(store.user_bias[users].astype(np.float64))
    with tf.GradientTape() as tape:
        g = table[8:]
        w1, b1 = tf.transpose(g[:HIDDEN, :-1]), g[:HIDDEN, -1]
        tail = tf.reshape(g[HIDDEN:], [-1])
        w2, b2 = tail[:HIDDEN], tail[HIDDEN]
        q, b = tf.gather(table[:, :-1], items), tf.gather(table[:, -1], items)
        out = tf.linalg.matvec(tf.nn.relu(tf.matmul(q * p, w1) + b1), w2) + b2
        error = task.mu + bu + b + out - frame["rating"].to_numpy()
        penalty = tf.reduce_sum(q ** 2, 1) + b ** 2 + tf.reduce_sum(p ** 2, 1) + bu ** 2
        pooled = tf.reduce_mean(error ** 2 + l2 * penalty) + l2 * (tf.reduce_sum(w1 ** 2) + tf.reduce_sum(w2 ** 2))
    expected = state.params - rate * tape.gradient(pooled, table).numpy()
    config = FedConfig.fedsgd(6, rate, client_lr=0.01, l2=l2)
    new, report = fc.run_round(state, task, store, config)
    np.testing.assert_allclose(new.params, expected, rtol=1e-4, atol=1e-6)
    assert len(report.trained) == 6


def test_a_frozen_g_is_neither_trained_nor_sent():
    trained_task, state, store = task_and_state(True)
    frozen_task, frozen_state, frozen_store = task_and_state(False)
    config = FedConfig(3, 2, 2, client_lr=0.05)
    new, report = fc.run_round(frozen_state, frozen_task, frozen_store, config)
    np.testing.assert_array_equal(new.params[8:], frozen_state.params[8:])
    assert not np.array_equal(new.params[:8], frozen_state.params[:8])
    _, trained_report = fc.run_round(state, trained_task, store, config)
    g_bytes = (HIDDEN + 2) * fc.row_bytes(DIM + 1, indexed=False)
    assert trained_report.bytes_up - report.bytes_up == 3 * g_bytes
    assert report.bytes_down == trained_report.bytes_down  # g is downloaded either way


def test_mini_batches_and_epochs_follow_the_core_schedule():
    """Two epochs of batches of 2 equal the same steps taken one batch at a time by hand."""
    task, state, store = task_and_state()
    config = FedConfig(1, 2, 2, client_lr=0.05, l2=0.01)
    client = 4
    params = state.params.copy()
    p, bu = store.user_vec[client].copy(), store.user_bias[client].copy()
    items, values = task.client_data(client)
    full = FedConfig(1, 1, 0, client_lr=0.05, l2=0.01)
    for epoch in fc.local_schedule(len(items), config, client, 0):
        for batch in epoch:
            part = pd.DataFrame({"user_idx": client, "item_idx": items[batch], "rating": values[batch]})
            one = fi.InteractionTask(part, 6, 8, DIM, task.mu, HIDDEN)
            local = type(store)(store.user_vec.copy(), store.user_bias.copy())
            local.user_vec[client], local.user_bias[client] = p, bu
            updates = fi.local_training(one, params, local, np.array([client]), full, 0)
            np.add.at(params, updates.rows, updates.values)
            p, bu = local.user_vec[client].copy(), local.user_bias[client].copy()
    updates = fi.local_training(task, state.params, store, np.array([client]), config, 0)
    got = state.params.copy()
    np.add.at(got, updates.rows, updates.values)
    np.testing.assert_allclose(got, params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(store.user_vec[client], p, rtol=1e-5, atol=1e-6)


def test_bad_settings_are_refused_with_what_is_allowed():
    task, state, store = task_and_state()
    with pytest.raises(ValueError, match="FedProx"):
        fi.local_training(task, state.params, store, np.array([0]), FedConfig(1, prox_mu=0.1), 0)
    with pytest.raises(ValueError, match=r"shape \(7, 4\)"):
        fi.init_state(task, 0, np.zeros((3, 4)))


def test_user_errors_add_up_to_the_rmse_and_training_keeps_the_best_validation_round():
    frame = ratings(30, 12, seed=3)
    run = fi.train_interaction(frame, 30, 12, FedConfig(10, 1, 4, client_lr=0.05, l2=0.01), rounds=6, dim=DIM, seed=1,
                               valid_fraction=0.25)
    assert run.history.valid_rmse[run.best_round] == min(run.history.valid_rmse)
    assert len(run.history.valid_rmse) == 7
    sums = run.user_errors(frame)
    predicted = fi.predict(run.params, run.store, run.task, frame)
    assert fi.rmse_of(sums) == pytest.approx(np.sqrt(np.mean((frame["rating"] - predicted) ** 2)))
    assert sums.shape == (30, 2) and sums[:, 1].sum() == len(frame)
    with pytest.raises(ValueError, match="no client a validation rating"):
        fi.train_interaction(frame, 30, 12, FedConfig(10), rounds=1, dim=DIM, valid_fraction=0.1)
    moved = fi.train_interaction(frame, 30, 12, FedConfig(10, 1, 4), rounds=1, dim=DIM, seed=1, valid_fraction=0.25,
                                 interaction=np.ones((fi.interaction_rows(DIM), DIM + 1)), train_interaction=False)
    np.testing.assert_array_equal(moved.interaction, np.ones((fi.interaction_rows(DIM), DIM + 1)))


def test_the_three_starts_use_the_source_g_as_fixed_in_advance():
    frame = ratings(30, 16, seed=4, low=10, high=14)
    settings = fi.InteractionSettings(DIM, FedConfig(10, 1, 4, client_lr=0.05, server_lr=0.01), 2, 3)
    source_g = fi.init_interaction(DIM, seed=9)
    runs = fi.transfer_runs(frame, 30, 16, source_g, settings, seeds=[0, 1])
    assert list(runs) == list(fi.STARTS) and all(len(r) == 2 for r in runs.values())
    frozen = runs["g from the source, frozen"]
    assert all(np.array_equal(r.interaction, source_g) for r in frozen)
    fresh, tuned = runs["target only (fresh g)"][1], runs["g from the source, fine-tuned"][1]
    assert tuned.history.valid_rmse[0] == frozen[1].history.valid_rmse[0] != fresh.history.valid_rmse[0]
    assert tuned.history.valid_rmse[1:] != frozen[1].history.valid_rmse[1:]
    g_bytes = fi.interaction_rows(DIM) * fc.row_bytes(DIM + 1, indexed=False)
    assert tuned.mb_up_per_client - frozen[1].mb_up_per_client == pytest.approx(g_bytes / 1e6)


def test_the_bias_baseline_is_the_damped_item_mean():
    train, test = ratings(20, 9, seed=5), ratings(20, 9, seed=6)
    sums = fi.bias_baseline_user_errors(train, test, 20, 9)
    mu = train["rating"].mean()
    residual = train["rating"] - mu
    bias = residual.groupby(train["item_idx"]).sum().reindex(range(9), fill_value=0) / (
        train["item_idx"].value_counts().reindex(range(9), fill_value=0) + 5.0)
    expected = np.sqrt(np.mean((test["rating"] - mu - bias[test["item_idx"]].to_numpy()) ** 2))
    assert fi.rmse_of(sums) == pytest.approx(expected)
