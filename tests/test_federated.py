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
from helpers.lessons import MF_FEDAVG
from helpers.metrics import chosen_round
from helpers.plots import plot_fed_curves
from helpers.widgets import panel_config, panel_history, show_or_explain


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


def test_panel_config_gives_fedavg_or_fedsgd_and_fedsgd_ignores_epochs_and_client_rate():
    fedavg = panel_config("FedAvg", 20, 10, 0.02, 5.0)
    assert (fedavg.clients_per_round, fedavg.local_epochs, fedavg.client_lr, fedavg.server_lr) == (20, 10, 0.02, 5.0)
    assert fedavg.batch_size == MF_FEDAVG["batch_size"] and fedavg.l2 == MF_FEDAVG["l2"]
    fedsgd = panel_config("FedSGD", 20, 10, 0.02, 5.0)
    assert fedsgd == panel_config("FedSGD", 20, 1, 0.5, 5.0) == fl.FedConfig.fedsgd(20, learning_rate=5.0)
    assert fedsgd.local_epochs == 1 and fedsgd.batch_size == 0
    assert np.isclose(fedsgd.client_lr * fedsgd.server_lr, 5.0)  # the global step is exactly η
    with pytest.raises(ValueError, match="FedAvg, FedSGD"):
        panel_config("FedProx", 20, 1, 0.05, 10.0)


def test_run_cache_records_the_numbers_of_train_federated(federation):
    config = fl.FedConfig(5, 2, 4, 0.1, 1.0)
    cached = fl.RunCache(federation, dim=4).get(config).first(3, progress=False)
    _, _, direct = fl.train_federated(federation, config, 3, dim=4)
    assert cached.test_rmse == direct.test_rmse and cached.train_rmse == direct.train_rmse


def test_item_bias_rmse_is_the_damped_item_mean_model():
    train = pd.DataFrame({"user_idx": [0, 0, 1, 1, 2], "item_idx": [0, 1, 0, 1, 0], "rating": [5.0, 1.0, 4.0, 2.0, 3.0]})
    test = pd.DataFrame({"user_idx": [2, 2], "item_idx": [1, 2], "rating": [2.0, 4.0]})
    federation = fl.Federation(train, test, n_users=3, n_items=3, mu=3.0)
    # item 1: residuals −2, −1 → b = −3 / (1 + 2) = −1; item 2 unrated → b = 0
    expected = np.sqrt(((2.0 - 2.0) ** 2 + (4.0 - 3.0) ** 2) / 2)
    assert np.isclose(fl.item_bias_rmse(federation, shrinkage=1.0), expected)
    undamped = np.sqrt(((2.0 - 1.5) ** 2 + 1.0) / 2)  # b_1 = −1.5, the plain mean residual
    assert np.isclose(fl.item_bias_rmse(federation, test, shrinkage=0.0), undamped)
    # per user: user 2 holds both test ratings, errors 0 and 1 → one row (0 + 1, 2)
    np.testing.assert_allclose(fl.item_bias_user_errors(federation, shrinkage=1.0), [[1.0, 2.0]])
    with pytest.raises(ValueError, match="shrinkage"):
        fl.item_bias_rmse(federation, shrinkage=-1.0)


def test_panel_history_answers_from_the_cache_and_reports_divergence_without_warnings(federation, recwarn):
    runs = fl.RunCache(federation, dim=4)
    history, new_rounds = panel_history(runs, 4, "FedAvg", 10, 1, 0.05, 10.0)
    assert new_rounds == 4 and len(history.test_rmse) == 5 and not fl.diverged(history)
    again, cached = panel_history(runs, 3, "FedAvg", 10, 1, 0.05, 10.0)
    assert cached == 0 and again.test_rmse == history.test_rmse[:4]
    exploded, _ = panel_history(runs, 6, "FedSGD", 10, 1, 0.05, 1e30)  # an absurd step: overflow
    assert fl.diverged(exploded) and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    figure = plot_fed_curves({"diverged": exploded, "fine": history}, 1.0, "t")  # draws with inf / NaN in it
    assert figure.axes[0].get_ylim()[1] < 10
    matplotlib.pyplot.close("all")
    with pytest.raises(ValueError, match="clients per round"):
        panel_history(runs, 3, "FedAvg", 0, 1, 0.05, 10.0)


def validated_federation():
    """The planted federation with each user's two held-out ratings split: one validation, one test."""
    plain = planted_federation()
    valid = plain.test.groupby("user_idx").head(1).reset_index(drop=True)
    test = plain.test.groupby("user_idx").tail(1).reset_index(drop=True)
    return plain, fl.Federation(plain.train, test, plain.n_users, plain.n_items, plain.mu, valid=valid)


def test_runs_on_a_federation_with_validation_ratings_record_and_stop_on_them():
    plain, federation = validated_federation()
    valid = federation.valid
    config = fl.FedConfig(10, 1, 4, 0.1, 1.0)
    _, _, history = fl.train_federated(federation, config, 4, dim=4)
    assert len(history.valid_rmse) == len(history.test_rmse) == 5
    state, store = fl.init_state(federation, 4)
    assert history.valid_rmse[0] == fl.federated_rmse(state, store, federation, valid)
    assert fl.RunCache(federation, dim=4).get(config).first(4).valid_rmse == history.valid_rmse
    assert chosen_round(history) == int(np.argmin(history.valid_rmse))
    with pytest.raises(ValueError, match="validation"):
        chosen_round(fl.train_federated(plain, config, 2, dim=4)[2])   # no validation ratings: no stopping point


def test_chosen_round_takes_the_lowest_finite_validation_value_first_on_ties():
    assert chosen_round(mf.History(valid_rmse=[1.0, 0.8, 0.8, 0.9])) == 1
    assert chosen_round(mf.History(valid_rmse=[1.0, float("nan"), 0.9])) == 2
    with pytest.raises(ValueError, match="validation"):
        chosen_round(mf.History(valid_rmse=[float("nan")]))


def test_centralised_training_records_validation_rmse_without_changing_the_run(federation):
    def run(**extra):
        params = mf.init_mf(federation.n_users, federation.n_items, 4, federation.mu, seed=0)
        return mf.train_mf(params, federation.train, federation.test, batch_size=8, epochs=3, learning_rate=0.1, **extra)

    with_valid, without = run(valid=federation.test), run()
    assert with_valid.test_rmse == without.test_rmse and without.valid_rmse == []
    assert np.allclose(with_valid.valid_rmse, with_valid.test_rmse)   # the same frame: the same numbers


def test_fed_curves_plot_the_metric_asked_for(federation):
    _, _, history = fl.train_federated(federation, fl.FedConfig(5, 1, 4, 0.1, 1.0), 3, dim=4)
    figure = plot_fed_curves({"run": history}, 1.0, "t", metric="train_rmse", central_label="reference")
    assert list(figure.axes[0].get_lines()[0].get_ydata()) == history.train_rmse
    assert figure.axes[0].get_ylabel() == "training RMSE (stars)"
    with pytest.raises(ValueError, match="metric"):
        plot_fed_curves({"run": history}, 1.0, "t", metric="accuracy")
    matplotlib.pyplot.close("all")


def test_runs_with_units_record_each_users_errors_that_pool_back_to_the_rmse():
    _, federation = validated_federation()
    test = federation.test
    config = fl.FedConfig(10, 1, 4, 0.1, 1.0)
    with_units = fl.RunCache(federation, dim=4, units=True).get(config).first(3)
    without = fl.RunCache(federation, dim=4).get(config).first(3)
    assert with_units.test_rmse == without.test_rmse and "test_units" not in without.metrics
    for name in ("test", "valid"):
        rmse_values, units = with_units.metrics[f"{name}_rmse"], with_units.metrics[f"{name}_units"]
        assert len(units) == len(rmse_values) == 4
        for value, sums in zip(rmse_values, units):   # one row per user, and they pool back to the RMSE
            assert sums.shape == (federation.n_users, 2) and sums[:, 1].sum() == len(test)
            assert np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()) == pytest.approx(value, rel=1e-5)
    assert not np.allclose(with_units.test_units[0], with_units.test_units[-1])   # each round its own


def test_centralised_training_records_each_test_users_errors_per_epoch(federation):
    def run(**extra):
        params = mf.init_mf(federation.n_users, federation.n_items, 4, federation.mu, seed=0)
        return mf.train_mf(params, federation.train, federation.test, batch_size=8, epochs=3, learning_rate=0.1, **extra)

    with_units, without = run(user_units=True), run()
    assert with_units.test_rmse == without.test_rmse and without.test_units == []
    assert len(with_units.test_units) == 4
    for value, sums in zip(with_units.test_rmse, with_units.test_units):
        assert sums[:, 1].sum() == len(federation.test)
        assert np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()) == pytest.approx(value, rel=1e-5)
    exploded = mf.train_mf(mf.init_mf(federation.n_users, federation.n_items, 4, federation.mu, seed=0),
                           federation.train, federation.test, batch_size=8, epochs=3, learning_rate=1e4, user_units=True)
    assert exploded.diverged and len(exploded.test_units) == len(exploded.test_rmse)
    assert np.isnan(exploded.test_units[-1][:, 0]).all()


def test_reference_and_vectorised_updates_agree_with_user_biases_and_a_cosine_schedule(federation):
    """From non-zero private biases and in a round where the cosine schedule has moved η_c."""
    config = fl.FedConfig(clients_per_round=10, local_epochs=2, batch_size=4, client_lr=0.2, l2=0.02, cosine_rounds=4)
    states = []
    for _ in range(2):
        state, store = fl.init_state(federation, dim=4, seed=2)
        store.user_bias[:] = np.random.default_rng(3).normal(0, 0.5, len(store.user_bias))
        states.append((dataclasses.replace(state, round=2), store))
    (fast, fast_store), (slow, slow_store) = states
    fast, _ = fc.run_round(fast, federation, fast_store, config)
    slow, _ = fc.run_round(slow, federation, slow_store, config, REFERENCE)
    np.testing.assert_allclose(fast.params, slow.params, atol=1e-5)
    np.testing.assert_allclose(fast_store.user_bias, slow_store.user_bias, atol=1e-5)
    plain, plain_store = fl.init_state(federation, dim=4, seed=2)  # the same round at a constant η_c moves otherwise
    plain_store.user_bias[:] = np.random.default_rng(3).normal(0, 0.5, len(plain_store.user_bias))
    plain, _ = fc.run_round(dataclasses.replace(plain, round=2), federation, plain_store,
                            dataclasses.replace(config, cosine_rounds=0))
    assert np.abs(plain.params - slow.params).max() > 1e-4


def test_item_bias_scores_the_frame_given_and_its_user_sums_pool_to_its_rmse(federation):
    other = federation.train.iloc[::3]
    assert fl.item_bias_rmse(federation, other) != pytest.approx(fl.item_bias_rmse(federation))
    sums = fl.item_bias_user_errors(federation, other)
    assert sums[:, 1].sum() == len(other)
    assert np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()) == pytest.approx(fl.item_bias_rmse(federation, other))


def test_initial_tables_follow_their_seed_and_scale_and_runs_their_init_seed(federation):
    state, store = fl.init_state(federation, dim=8, seed=0, scale=0.5)
    assert 0.4 < np.std(state.params[:, :-1]) < 0.6 and 0.4 < np.std(store.user_vec) < 0.6
    default, _ = fl.init_tables(federation.n_users, federation.n_items, 8)
    given, _ = fl.init_tables(federation.n_users, federation.n_items, 8, seed=0, scale=0.1)
    np.testing.assert_array_equal(default.params, given.params)
    config = fl.FedConfig(5, 1, 4, 0.1, 1.0)
    _, _, first = fl.train_federated(federation, config, 1, dim=4, init_seed=0)
    _, _, second = fl.train_federated(federation, config, 1, dim=4, init_seed=1)
    assert first.test_rmse[0] != second.test_rmse[0]
    cached = fl.RunCache(federation, dim=4, init_seed=1).get(config).first(1, progress=False)
    assert cached.test_rmse == second.test_rmse
    assert len(fl.train_federated(federation, config, 1)[1].user_vec[0]) == 32  # d = 32 unless asked
    assert "test_units" not in fl.evaluate_rmse(federation, *fl.init_state(federation, 4))


def test_a_clients_data_keeps_the_order_of_the_frame():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 3, 300)
    frame = pd.DataFrame({"user_idx": users, "item_idx": np.arange(300), "rating": np.ones(300, np.float32)})
    federation = fl.Federation(frame, frame.iloc[:0], 3, 300, mu=1.0)
    for u in range(3):
        items, _ = federation.client_data(u)
        np.testing.assert_array_equal(items, np.flatnonzero(users == u))


@pytest.fixture(scope="module")
def trained(federation):
    """A few FedAvg rounds on the planted federation: (state, store) with non-zero private rows."""
    state, store, _ = fl.train_federated(federation, fl.FedConfig(10, 1, 4, 0.1, 3.0), rounds=5, dim=4)
    return state, store


def test_per_client_rmse_is_each_users_own_rmse_on_the_frame(federation, trained):
    state, store = trained
    frame = federation.test.iloc[::-1]  # rows out of user order: the Series still comes back by user
    table = fl.per_client_rmse(state, store, federation, frame)
    assert table.name == "rmse" and list(table.index) == sorted(frame["user_idx"].unique())
    error = frame["rating"].to_numpy() - fl.predict(state, store, federation, frame)
    for user in (0, 7, 24):
        mine = (frame["user_idx"] == user).to_numpy()
        assert table[user] == pytest.approx(np.sqrt(np.mean(error[mine] ** 2)), rel=1e-6)
    subset = frame[frame["user_idx"] < 5]
    assert list(fl.per_client_rmse(state, store, federation, subset).index) == [0, 1, 2, 3, 4]


def test_squared_error_sums_of_groups_pool_to_the_rmse_of_all_their_rows(federation, trained):
    state, store = trained
    frame = federation.test
    half = frame["user_idx"] < 12
    parts = [fl.squared_error_sum(state, store, federation, frame[mask]) for mask in (half, ~half)]
    assert [count for _, count in parts] == [int(half.sum()), int((~half).sum())]
    error = frame["rating"].to_numpy()[half.to_numpy()] - fl.predict(state, store, federation, frame[half])
    assert parts[0][0] == pytest.approx(float(np.sum(error.astype(np.float64) ** 2)), rel=1e-9)
    pooled = np.sqrt(sum(s for s, _ in parts) / sum(c for _, c in parts))
    assert pooled == pytest.approx(fl.federated_rmse(state, store, federation, frame), rel=1e-6)


def test_without_private_predicts_from_the_global_part_and_leaves_the_store(federation, trained):
    state, store = trained
    before = store.user_vec.copy()
    bare = fl.without_private(store)
    assert bare.user_vec.shape == store.user_vec.shape and bare.user_bias.shape == store.user_bias.shape
    assert not bare.user_vec.any() and not bare.user_bias.any()
    np.testing.assert_array_equal(store.user_vec, before)
    _, item_bias = fl.item_table(state.params)
    frame = federation.test
    np.testing.assert_allclose(fl.predict(state, bare, federation, frame),
                               federation.mu + item_bias[frame["item_idx"].to_numpy()], rtol=1e-6)


def test_refit_private_trains_every_clients_private_rows_at_the_states_round_and_sends_nothing(federation, trained):
    state, store = trained
    config = fl.FedConfig(10, 3, 4, 0.1, l2=0.02)
    params, user_vec, user_bias = state.params.copy(), store.user_vec.copy(), store.user_bias.copy()
    refit = fl.refit_private(state, store, federation, config)
    np.testing.assert_array_equal(state.params, params)  # the global table is not changed
    np.testing.assert_array_equal(store.user_vec, user_vec)  # nor the store given
    np.testing.assert_array_equal(store.user_bias, user_bias)
    expected = fl.ClientStore(user_vec.copy(), user_bias.copy())
    fl.local_training(federation, params, expected, federation.client_ids, config, state.round)
    np.testing.assert_allclose(refit.user_vec, expected.user_vec, atol=1e-6)
    np.testing.assert_allclose(refit.user_bias, expected.user_bias, atol=1e-6)
    assert np.all(np.abs(refit.user_vec - user_vec)[federation.client_ids].max(axis=1) > 0)  # every client moved
    other_round = fl.ClientStore(user_vec.copy(), user_bias.copy())
    fl.local_training(federation, params, other_round, federation.client_ids, config, state.round + 1)
    assert np.abs(other_round.user_vec - refit.user_vec).max() > 1e-4  # batches are drawn by round
    assert (fl.federated_rmse(state, refit, federation, federation.train)
            < fl.federated_rmse(state, store, federation, federation.train))
