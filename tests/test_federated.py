"""Lesson 03: federated MF rounds — equivalence, special cases, invariants, reproducibility."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest

from helpers import fedcore as fc
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


def planted_federation(n_users=25, n_items=30):
    """The planted ratings as a federation: each user's last two ratings are its test set."""
    ratings = planted(n_users, n_items)
    train = ratings.groupby("user_idx").head(-2).reset_index(drop=True)
    test = ratings.groupby("user_idx").tail(2).reset_index(drop=True)
    return fl.Federation(train, test, n_users, n_items, mu=float(train["rating"].mean()))


@pytest.fixture(scope="module")
def federation():
    return planted_federation()


REFERENCE = fc.Algorithm(client_update=fl.reference_training)


@pytest.mark.parametrize("config", [
    fl.FedConfig(clients_per_round=10, local_epochs=2, batch_size=4, client_lr=0.1, server_lr=3.0, l2=0.02),
    fl.FedConfig(clients_per_round=25, local_epochs=1, batch_size=0, client_lr=0.2, server_lr=1.0),
    fl.FedConfig.fedsgd(clients_per_round=7, learning_rate=2.0),
    fl.FedConfig(clients_per_round=10, local_epochs=3, batch_size=4, client_lr=0.1, l2=0.02, prox_mu=0.5),
])
def test_vectorised_client_update_equals_reference_after_three_rounds(federation, config):
    fast, fast_store = fl.init_state(federation, dim=4, seed=1)
    slow, slow_store = fl.init_state(federation, dim=4, seed=1)
    for _ in range(3):
        fast, fast_report = fc.run_round(fast, federation, fast_store, config)
        slow, slow_report = fc.run_round(slow, federation, slow_store, config, REFERENCE)
    assert np.abs(fast.params - slow.params).max() < 1e-5
    assert np.abs(fast_store.user_vec - slow_store.user_vec).max() < 1e-5
    assert fast.round == slow.round == 3
    assert fast_report.bytes_up == slow_report.bytes_up and fast_report.examples == slow_report.examples


def test_fedprox_pulls_the_local_model_towards_the_global_one(federation):
    state, store = fl.init_state(federation, dim=4, seed=0)
    clients = federation.client_ids[:5]
    config = fl.FedConfig(5, 10, 4, 0.1, l2=0.02)
    plain = fl.local_training(federation, state.params, fl.ClientStore(store.user_vec.copy(), store.user_bias.copy()),
                              clients, config, 0)
    prox = fl.local_training(federation, state.params, fl.ClientStore(store.user_vec.copy(), store.user_bias.copy()),
                             clients, dataclasses.replace(config, prox_mu=1.0), 0)
    assert np.all(prox.norms() < plain.norms())


def test_fedsgd_with_one_client_holding_all_data_is_a_centralised_full_batch_step():
    ratings = planted(n_users=8)
    # One client that owns every user's ratings: relabel all users' data as client 0's.
    federation = fl.Federation(ratings.assign(user_idx=0), ratings.assign(user_idx=0), 1, 30,
                               mu=float(ratings["rating"].mean()))
    state, store = fl.init_state(federation, dim=4, seed=0)
    item_vec, item_bias = fl.item_table(state.params)
    central = mf.MFParams(federation.mu, *(mf.tf.Variable(v) for v in
                                           (store.user_bias.copy(), item_bias.copy(),
                                            store.user_vec.copy(), item_vec.copy())))
    config = fl.FedConfig.fedsgd(clients_per_round=1, learning_rate=0.7, client_lr=0.7)
    state, _ = fc.run_round(state, federation, store, config)
    mf.hand_step(central, *mf.as_tensors(federation.train), 0.7, l2=config.l2)
    item_vec, item_bias = fl.item_table(state.params)
    assert np.abs(item_vec - central.item_vec.numpy()).max() < 1e-6
    assert np.abs(item_bias - central.item_bias.numpy()).max() < 1e-6
    assert np.abs(store.user_vec - central.user_vec.numpy()).max() < 1e-6


def test_client_sends_only_the_rows_of_its_items(federation):
    state, store = fl.init_state(federation, dim=4, seed=0)
    config = fl.FedConfig(5, 1, 4, 0.1, 1.0)
    client = int(federation.client_ids[3])
    items, delta = fl.client_update(federation, state.params, store, config, client, 0)
    assert items.tolist() == federation.client_data(client)[0].tolist()
    assert delta.shape == (len(items), 5)  # (q_i, b_i) rows; nothing of p_u or b_u
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


def test_round_report_counts_touched_rows_both_ways(federation):
    config = fl.FedConfig(10, 1, 4, 0.1, 1.0)
    state, store = fl.init_state(federation, dim=4, seed=0)
    _, report = fc.run_round(dataclasses.replace(state, round=5), federation, store, config)
    assert len(set(report.trained)) == 10
    assert np.array_equal(report.trained, fc.uniform(federation.client_ids, config, 5).reporting)
    n = int(federation.num_examples(report.trained).sum())
    assert report.bytes_up == report.bytes_down == n * (5 * 4 + 4)
    assert report.dense_bytes == 2 * 10 * 30 * 5 * 4


@pytest.mark.parametrize("rounds, k, epochs, client_lr, server_lr, message", [
    (20, 26, 1, 0.1, 1.0, "clients per round"), (20, 0, 1, 0.1, 1.0, "clients per round"),
    (0, 5, 1, 0.1, 1.0, "rounds"), (20, 5, 1, 0.0, 1.0, "client learning rate"),
    (20, 5, 1, 0.1, -1.0, "server learning rate"), (20, 5, 0, 0.1, 1.0, "local epochs"),
])
def test_widget_function_explains_impossible_values(federation, capsys, rounds, k, epochs, client_lr, server_lr, message):
    runs = fl.RunCache(federation, dim=4)

    def render(rounds, k, epochs, client_lr, server_lr):
        history = runs.get(fl.FedConfig(k, epochs, 4, client_lr, server_lr)).first(rounds)
        return plot_fed_curves({"FedAvg": history}, 1.0, "t")

    assert show_or_explain(render, rounds, k, epochs, client_lr, server_lr) is None
    assert message in capsys.readouterr().out
    assert show_or_explain(render, 1, 25, 1, 0.1, 1.0) is not None  # all clients, one round: fine
    matplotlib.pyplot.close("all")


def test_run_cache_reuses_and_extends_each_settings_run(federation):
    runs = fl.RunCache(federation, dim=4)
    config = fl.FedConfig(5, 1, 4, 0.1, 1.0)
    runs.get(config).first(3)
    assert runs.get(config) is runs.get(fl.FedConfig(5, 1, 4, 0.1, 1.0)) and runs.get(config).rounds_run == 3
    _, _, direct = fl.train_federated(federation, config, 5, dim=4)
    assert runs.get(config).first(5).test_rmse == direct.test_rmse          # extended by the two missing rounds
    assert runs.get(fl.FedConfig(6, 1, 4, 0.1, 1.0)).rounds_run == 0          # another setting: another run
    with pytest.raises(ValueError, match="key"):
        runs.get(config, fc.Algorithm(sampler=fc.poisson(0.2)))
