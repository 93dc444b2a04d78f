"""Lesson 03: federated MF rounds — equivalence, special cases, invariants, reproducibility."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from helpers import federated as fl
from helpers import mf
from helpers.plots import plot_fed_curves
from helpers.widgets import show_or_explain


def planted(n_users=25, n_items=30, per_user=(3, 20), seed=0):
    """A small planted rating table (synthetic, for unit tests only): each user rates
    each item at most once, as in MovieLens."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.7, (n_users, 3)), rng.normal(0, 0.7, (n_items, 3))
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, rng.integers(*per_user), replace=False):
            rows.append((u, i, float(np.clip(3.5 + p[u] @ q[i] + rng.normal(0, 0.2), 0.5, 5.0))))
    return pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating"]).astype({"rating": np.float32})


@pytest.fixture(scope="module")
def federation():
    ratings = planted()
    train = ratings.groupby("user_idx").head(-2).reset_index(drop=True)
    test = ratings.groupby("user_idx").tail(2).reset_index(drop=True)
    return fl.Federation(train, test, 25, 30, mu=float(train["rating"].mean()))


@pytest.mark.parametrize("config", [
    fl.FedConfig(clients_per_round=10, local_epochs=2, batch_size=4, client_lr=0.1, server_lr=3.0),
    fl.FedConfig(clients_per_round=25, local_epochs=1, batch_size=0, client_lr=0.2, server_lr=1.0),
    fl.FedConfig.fedsgd(clients_per_round=7, learning_rate=2.0),
])
def test_vectorised_round_equals_reference_after_three_rounds(federation, config):
    fast, fast_store = fl.init_state(federation, dim=4, seed=1)
    slow, slow_store = fl.init_state(federation, dim=4, seed=1)
    for _ in range(3):
        fast = fl.run_round(fast, fast_store, federation, config)
        slow = fl.reference_round(slow, slow_store, federation, config)
    assert np.abs(fast.item_vec - slow.item_vec).max() < 1e-5
    assert np.abs(fast.item_bias - slow.item_bias).max() < 1e-5
    assert np.abs(fast_store.user_vec - slow_store.user_vec).max() < 1e-5
    assert fast.round == slow.round == 3


def test_fedsgd_with_one_client_holding_all_data_is_a_centralised_full_batch_step():
    ratings = planted(n_users=8)
    # One client that owns every user's ratings: relabel all users' data as client 0's.
    federation = fl.Federation(ratings.assign(user_idx=0), ratings.assign(user_idx=0), 1, 30,
                               mu=float(ratings["rating"].mean()))
    server, store = fl.init_state(federation, dim=4, seed=0)
    central = mf.MFParams(federation.mu, *(mf.tf.Variable(v) for v in
                                           (store.user_bias.copy(), server.item_bias.copy(),
                                            store.user_vec.copy(), server.item_vec.copy())))
    config = fl.FedConfig.fedsgd(clients_per_round=1, learning_rate=0.7, client_lr=0.7)
    server = fl.run_round(server, store, federation, config)
    mf.hand_step(central, *mf.as_tensors(federation.train), 0.7, l2=config.l2)
    assert np.abs(server.item_vec - central.item_vec.numpy()).max() < 1e-6
    assert np.abs(server.item_bias - central.item_bias.numpy()).max() < 1e-6
    assert np.abs(store.user_vec - central.user_vec.numpy()).max() < 1e-6


def test_aggregation_weights_sum_to_one_and_empty_clients_change_nothing():
    one = fl.ClientUpdate(np.array([0, 2]), np.ones((2, 3), np.float32), np.ones(2, np.float32), 30)
    two = fl.ClientUpdate(np.array([2]), 3 * np.ones((1, 3), np.float32), np.ones(1, np.float32), 10)
    empty = fl.ClientUpdate(np.array([1]), 100 * np.ones((1, 3), np.float32), np.ones(1, np.float32), 0)
    vec, bias = fl.aggregate([one, two], n_items=4, dim=3)
    assert vec[0].tolist() == pytest.approx([0.75] * 3)  # weight 30/40
    assert vec[2].tolist() == pytest.approx([0.75 + 0.75] * 3)  # 30/40·1 + 10/40·3
    assert bias[2] == pytest.approx(1.0)  # identical deltas: weights sum to one
    with_empty = fl.aggregate([one, two, empty], n_items=4, dim=3)
    assert np.array_equal(with_empty[0], vec) and np.array_equal(with_empty[1], bias)
    assert not fl.aggregate([empty], 4, 3)[0].any()


def test_client_sends_no_user_parameters(federation):
    server, store = fl.init_state(federation, dim=4, seed=0)
    config = fl.FedConfig(5, 1, 4, 0.1, 1.0)
    client = int(federation.client_ids[3])
    update = fl.client_update(server, store, federation, config, client, 0)
    assert {f.name for f in dataclasses.fields(update)} == {"items", "item_vec_delta", "item_bias_delta", "num_examples"}
    items, _ = federation.client_data(client)
    assert update.items.tolist() == items.tolist()
    assert update.item_vec_delta.shape == (len(items), 4)
    before = fl.init_state(federation, dim=4, seed=0)[1]
    assert not np.allclose(store.user_vec[client], before.user_vec[client])  # trained locally
    others = np.setdiff1d(np.arange(25), [client])
    assert np.array_equal(store.user_vec[others], before.user_vec[others])  # nobody else's row touched


def test_training_is_seeded_and_learns(federation):
    config = fl.FedConfig(10, 1, 4, 0.1, 3.0)
    first = fl.train_federated(federation, config, rounds=30, dim=4)
    second = fl.train_federated(federation, config, rounds=30, dim=4)
    assert first[2].test_rmse == second[2].test_rmse
    assert first[2].train_rmse[-1] < first[2].train_rmse[0] - 0.1
    other = fl.train_federated(federation, dataclasses.replace(config, seed=1), rounds=30, dim=4)
    assert other[2].test_rmse != first[2].test_rmse


def test_sampling_and_communication(federation):
    config = fl.FedConfig(10, 1, 4, 0.1, 1.0)
    clients = fl.sample_clients(federation, config, 5)
    assert len(set(clients)) == 10 and np.array_equal(clients, fl.sample_clients(federation, config, 5))
    cost = fl.round_bytes(federation, clients, dim=4)
    n = int(federation.num_examples(clients).sum())
    assert cost["touched"]["up"] == n * (5 * 4 + 4)
    assert cost["full"]["down"] == 10 * 30 * 5 * 4


@pytest.mark.parametrize("rounds, k, epochs, client_lr, server_lr, message", [
    (20, 26, 1, 0.1, 1.0, "clients per round"), (20, 0, 1, 0.1, 1.0, "clients per round"),
    (0, 5, 1, 0.1, 1.0, "rounds"), (20, 5, 1, 0.0, 1.0, "client learning rate"),
    (20, 5, 1, 0.1, -1.0, "server learning rate"), (20, 5, 0, 0.1, 1.0, "local epochs"),
])
def test_widget_function_explains_impossible_values(federation, capsys, rounds, k, epochs, client_lr, server_lr, message):
    def render(rounds, k, epochs, client_lr, server_lr):
        history = fl.train_federated(federation, fl.FedConfig(k, epochs, 4, client_lr, server_lr), rounds, dim=4)[2]
        return plot_fed_curves({"FedAvg": history}, 1.0, "t")

    assert show_or_explain(render, rounds, k, epochs, client_lr, server_lr) is None
    assert message in capsys.readouterr().out
    assert show_or_explain(render, 1, 25, 1, 0.1, 1.0) is not None  # all clients, one round: fine
    matplotlib.pyplot.close("all")
