"""Federated cross-domain cold start (helpers.fedcrossdomain) on small planted domains: the
mapping is a task of the core's round, its client update is the plain gradient step, one round of
every client with one step is the centralised full-batch step, and a cold user's prediction is
computed from its own source vector on its device."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from helpers import cross_domain as cd
from helpers import fedcore as fc
from helpers import fedcrossdomain as fx
from helpers import federated as fed


def planted_domains(n_users: int = 120, n_source: int = 40, n_target: int = 30, rank: int = 3, per_user: int = 14,
                    seed: int = 0) -> cd.CrossDomain:
    """Two domains over one user index in which a user's taste in the target is a linear map of
    their taste in the source (so a mapping has something to learn); every user rates both."""
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, rank))
    mapped = taste @ rng.normal(size=(rank, rank)) / np.sqrt(rank)
    frames = []
    for vectors, n_items in ((taste, n_source), (mapped, n_target)):
        items = rng.normal(size=(n_items, rank))
        rows = [(u, i) for u in range(n_users) for i in rng.choice(n_items, per_user, replace=False)]
        users, chosen = np.array(rows).T
        score = 3.5 + np.einsum("nd,nd->n", vectors[users], items[chosen]) + rng.normal(0, 0.2, len(users))
        frames.append(pd.DataFrame({"user": users.astype(np.int32), "item": chosen.astype(np.int32),
                                    "rating": np.clip(np.round(score), 1, 5).astype(np.float32)}))
    return cd.CrossDomain(frames[0], frames[1], n_users, n_source, n_target, np.arange(n_users),
                          np.arange(n_users))


def random_stores(n_users: int, dim: int, seed: int = 0) -> fx.DeviceStores:
    rng = np.random.default_rng(seed)
    return fx.DeviceStores(fed.ClientStore(rng.normal(size=(n_users, dim)).astype(np.float32),
                                           rng.normal(size=n_users).astype(np.float32)),
                           fed.ClientStore(rng.normal(size=(n_users, dim)).astype(np.float32),
                                           rng.normal(size=n_users).astype(np.float32)))


def test_the_vectorised_client_update_is_the_plain_one_per_client():
    dim, stores = 4, random_stores(30, 4)
    params = fx.init_mapping(dim).params + np.random.default_rng(1).normal(0, 0.05, (dim + 2, dim + 1)).astype(np.float32)
    config = fc.FedConfig(clients_per_round=5, local_epochs=3, batch_size=0, client_lr=0.05, l2=0.01)
    clients = np.array([2, 5, 11, 17, 29])
    updates = fx.MappingTask(np.arange(30), dim).train_clients(params, stores, clients, config, 0)
    deltas = updates.values.reshape(len(clients), dim + 2, dim + 1)
    x, y = stores.pairs(clients)
    for k in range(len(clients)):
        plain = fx.mapping_client_update(params, x[k], y[k], 0.05, 3, 0.01)
        np.testing.assert_allclose(deltas[k], plain, rtol=1e-4, atol=1e-7)
    assert np.all(updates.upload_bytes == (dim + 2) * (dim + 1) * 4)  # the whole table, float32, no row ids


def test_one_round_of_every_client_and_one_step_is_the_centralised_full_batch_step():
    """FedAvg over all N clients (one pair each), E = 1, η_s = 1: θ − η_c · (1/N) Σ_k ∇L_k — the
    gradient step on the mean loss, as a server holding every pair would take it."""
    dim, n = 3, 25
    stores, task = random_stores(n, dim, seed=2), fx.MappingTask(np.arange(n), dim)
    state = fx.init_mapping(dim)
    config = fc.FedConfig(clients_per_round=n, local_epochs=1, batch_size=0, client_lr=0.1, l2=0.02)
    after, report = fc.run_round(state, task, stores, config)
    x, y = stores.pairs(np.arange(n))
    central = state.params - 0.1 * fx.mapping_gradient(state.params.astype(np.float64), x, y, 0.02).mean(axis=0)
    np.testing.assert_allclose(after.params, central, rtol=1e-5, atol=1e-6)
    assert len(report.trained) == n and report.bytes_up == n * task.table_bytes()


def test_the_training_keeps_the_round_with_the_lowest_held_out_error():
    dim, n = 3, 40
    rng = np.random.default_rng(3)
    source = rng.normal(size=(n, dim + 1))
    target = source @ rng.normal(size=(dim + 1, dim + 1)) * 0.5 + 0.1
    stores = fx.DeviceStores(fed.ClientStore(source[:, :-1].astype(np.float32), source[:, -1].astype(np.float32)),
                             fed.ClientStore(target[:, :-1].astype(np.float32), target[:, -1].astype(np.float32)))
    config = fc.FedConfig(clients_per_round=30, local_epochs=1, batch_size=0, client_lr=0.2)
    table, best, history = fx.train_mapping(stores, np.arange(30), np.arange(30, 40), config, 40, dim)
    assert best == int(np.argmin(history.valid_mse)) and history.valid_mse[best] < history.valid_mse[0]
    assert fx.mapping_mse(table, stores, np.arange(30, 40)) == pytest.approx(history.valid_mse[best], rel=1e-6)


def test_a_single_upload_reveals_the_clients_source_vector_and_a_sum_hides_it():
    dim, stores = 4, random_stores(40, 4, seed=4)
    params = fx.init_mapping(dim).params
    config = fc.FedConfig(clients_per_round=1, local_epochs=1, batch_size=0, client_lr=0.05, l2=0.0)
    update = fx.MappingTask(np.arange(40), dim).train_clients(params, stores, np.array([7]), config, 0)
    x, _ = stores.pairs(np.array([7]))
    np.testing.assert_allclose(fx.reconstruct_source_vector(update.values.astype(np.float64)), x[0], rtol=1e-3)
    leak = fx.leakage(params, stores, np.arange(40), config, group=10)
    assert leak["single_cosine_min"] > 0.999 and leak["summed_cosine_mean"] < 0.95 and leak["clients"] == 40


def test_a_cold_user_maps_its_own_source_vector_on_the_device():
    dim, stores = 3, random_stores(10, 3, seed=5)
    params = np.random.default_rng(6).normal(size=(dim + 2, dim + 1))
    vec, bias = fx.map_on_device(params, stores.source, np.array([1, 4]))
    x, _ = stores.pairs(np.array([1, 4]))
    np.testing.assert_allclose(np.column_stack([vec, bias]), x @ params[:-1] + params[-1], rtol=1e-12)


def test_fine_tuning_on_the_device_fits_the_revealed_ratings_and_leaves_the_table_alone():
    rng = np.random.default_rng(7)
    items = rng.normal(0, 0.3, size=(20, 4)).astype(np.float32)
    before = items.copy()
    slot, chosen = np.array([0, 0, 0, 1, 1, 1]), np.array([1, 2, 3, 4, 5, 6])
    ratings = np.array([5.0, 4.0, 5.0, 1.0, 2.0, 1.0])
    vec, bias = np.zeros((2, 3)), np.zeros(2)

    def error(p, b):
        predicted = 3.5 + b[slot] + items[chosen, -1] + np.einsum("rd,rd->r", p[slot], items[chosen, :-1])
        return float(np.mean((predicted - ratings) ** 2))

    tuned_vec, tuned_bias = fx.fine_tune_on_device(3.5, items, vec, bias, slot, chosen, ratings, 50, 0.1, 0.0)
    assert error(tuned_vec, tuned_bias) < 0.3 * error(vec, bias)
    np.testing.assert_array_equal(items, before)
    assert tuned_bias[0] > 0 > tuned_bias[1]  # the liker's bias went up, the hater's down


def test_ranking_metrics_on_a_hand_made_case():
    scores = np.array([[0.9, 0.8, 0.1, 0.5],
                       [0.2, 0.2, 0.9, 0.1]])
    relevant = np.array([[False, True, False, False],
                         [True, False, False, False]])
    excluded = np.array([[True, False, False, False],   # user 0 already rated item 0 on the device
                         [False, False, False, False]])
    hr, ndcg = fx.list_metrics(scores, relevant, excluded, k=1)
    assert hr == 0.5 and ndcg == 0.5       # user 0's top item (item 0 excluded) is item 1; user 1's is item 2
    hr, ndcg = fx.list_metrics(scores, relevant, excluded, k=3)
    # user 1: items 0 and 1 tie at 0.2; ties count against the relevant item, so it is third
    assert hr == 1.0 and ndcg == pytest.approx((1.0 + 1.0 / np.log2(4)) / 2)
    no_one = fx.list_metrics(scores, np.array([[True, False, False, False], [False] * 4]), excluded, k=3)
    assert no_one == (0.0, 0.0)  # user 0's only liked item was excluded; user 1 likes nothing: left out


def test_reveal_few_keeps_k_ratings_on_the_device_of_users_with_more_than_k():
    test = pd.DataFrame({"user": [1] * 6 + [2] * 3, "item": list(range(6)) + [0, 1, 2], "rating": [4.0] * 9})
    revealed, rest = fx.reveal_few(test, 3, seed=0)
    assert revealed["user"].tolist() == [1, 1, 1] and len(rest) == 6
    assert sorted(map(tuple, pd.concat([revealed, rest])[["user", "item"]].to_numpy())) == \
        sorted(map(tuple, test[["user", "item"]].to_numpy()))


def test_bad_settings_are_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="must be 'sgd' or 'adam', got 'rmsprop'"):
        fx.mapping_algorithm("rmsprop")
    with pytest.raises(ValueError, match=r"β .* must lie in \(0, 1\), got 1.0"):
        fx.cold_start_methods(planted_domains(n_users=20), 1.0, 0, SMALL)


SMALL = fx.ColdStartSettings(dim=3, domain=fc.FedConfig(clients_per_round=40, local_epochs=2, batch_size=0,
                                                         client_lr=0.1, server_lr=1.0, l2=0.01),
                             domain_rounds=40, mapping=fc.FedConfig(local_epochs=1, batch_size=0, client_lr=0.2),
                             mapping_rounds=60, revealed=(1, 3), tune_steps=20, tune_lr=0.1)


def test_the_whole_pipeline_on_planted_domains_learns_the_map():
    """Every method is scored on the same hidden ratings; with a planted linear map between the
    domains, the federated mapping predicts the cold users better than target-only MF."""
    result = fx.cold_start_methods(planted_domains(), 0.5, 0, SMALL, central=False)
    assert set(result["scores"]) == {1, 3} and result["test_ratings"][1] > result["test_ratings"][3]
    scores = result["scores"][3]
    assert set(scores) == set(fx.METHODS) - {"central_map"}
    assert all(np.isfinite(list(s.values())).all() for s in scores.values())
    assert scores["fed_map"]["RMSE"] < scores["fed_tgt"]["RMSE"]
    assert 0 <= result["rounds"]["mapping"] <= SMALL.mapping_rounds
    assert result["cold_users"] == 60 and result["mb_up_per_client"]["mapping"] == pytest.approx(5 * 4 * 4 / 1e6)
    assert scores["fed_map_tuned"]["RMSE"] < scores["fed_map"]["RMSE"]  # three own ratings refine the mapped vector


def test_the_course_preset_builds_valid_settings():
    from helpers import lessons

    settings = lessons.fed_cold_start_settings()
    assert isinstance(settings.domain, fc.FedConfig) and settings.revealed == (1, 3, 5)
    settings.domain.check()
    settings.mapping.check()
    fx.mapping_algorithm(settings.mapping_server)
    assert lessons.fed_cold_start_settings(dim=8).dim == 8


def test_the_bench_reports_every_method_beta_and_k_with_paired_differences(monkeypatch):
    """``python -m helpers.bench fedcrossdomain`` on planted domains (the loaders replaced): one JSON-safe
    report with each method's mean and standard error over the seeds, and the per-seed paired
    differences of the mapping against target-only MF and the centralised reference."""
    import json

    from helpers import bench, lessons

    monkeypatch.setattr(cd, "choose_source", lambda preferred, fallback: ("book", None))
    monkeypatch.setattr(cd, "align", lambda source, target: planted_domains())
    monkeypatch.setattr("helpers.data.load_douban", lambda domain: None)
    monkeypatch.setattr(lessons, "fed_cold_start_settings", lambda: SMALL)
    report = json.loads(json.dumps(bench.bench_fedcrossdomain(seeds=(0, 1), betas=(0.5,))))
    result = report["results"]["beta=0.5"]["revealed=3"]
    assert set(result["methods"]) == set(fx.METHODS) and report["source_domain_used"] == "book"
    fed_map, fed_tgt = result["methods"]["fed_map"]["RMSE"], result["methods"]["fed_tgt"]["RMSE"]
    difference = result["paired_over_seeds"]["fed_map - fed_tgt"]["RMSE"]
    assert difference["values"] == pytest.approx([m - t for m, t in zip(fed_map["values"], fed_tgt["values"])], abs=2e-4)
    assert difference["standard_error"] is not None and len(fed_map["values"]) == 2
    assert report["mb_up_per_client_per_round"]["mapping"] == pytest.approx(5 * 4 * 4 / 1e6)


def test_the_grid_trains_each_seeds_source_once_and_the_frame_has_one_row_per_score(monkeypatch):
    domains, calls = planted_domains(), []
    train_source = fx.train_source
    monkeypatch.setattr(fx, "train_source", lambda *a, **k: calls.append(a[2]) or train_source(*a, **k))
    runs = fx.run_grid(domains, SMALL, betas=(0.3, 0.6), seeds=(0, 1), central=False)
    assert calls == [0, 1] and sorted(runs) == [(0.3, 0), (0.3, 1), (0.6, 0), (0.6, 1)]
    trained = runs[0.6, 1]["trained"]
    assert trained.source.store.user_vec.shape == (domains.n_users, SMALL.dim)
    assert trained.mapping.shape == (SMALL.dim + 2, SMALL.dim + 1)
    assert np.isin(trained.fit_users, trained.split.warm).all()  # never a cold user in the mapping
    frame = fx.scores_frame(runs)
    assert len(frame) == 2 * 2 * len(SMALL.revealed) * (len(fx.METHODS) - 1)
    row = frame[(frame.beta == 0.6) & (frame.seed == 1) & (frame.revealed == 3) & (frame.method == "fed_map")]
    assert row["RMSE"].item() == runs[0.6, 1]["scores"][3]["fed_map"]["RMSE"]


def test_the_cold_start_plot_shows_one_row_per_method_and_refuses_unmeasured_values():
    import matplotlib.pyplot as plt

    from helpers import plots

    scores = pd.DataFrame([{"beta": 0.5, "seed": s, "revealed": 1, "method": m, "RMSE": 0.9 + 0.01 * s,
                            "MAE": 0.7, "HR@10": 0.1, "NDCG@10": 0.02} for s in range(3) for m in ("fed_tgt", "fed_map")])
    fig = plots.plot_cold_start_scores(scores, 0.5, 1, "RMSE", {"fed_map": "mapping", "fed_tgt": "target-only"}, "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mapping", "target-only"]
    assert ax.get_xlim()[0] == 0 and "stars" in ax.get_xlabel()
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.91, 0.91])  # the bars are the means
    plt.close(fig)
    with pytest.raises(ValueError, match=r"no runs at β = 0.2 .*measured: β in \[0.5\]"):
        plots.plot_cold_start_scores(scores, 0.2, 1, "RMSE", {"fed_map": "m"}, "t")
    with pytest.raises(ValueError, match="metric must be one of"):
        plots.plot_cold_start_scores(scores, 0.5, 1, "AUC", {"fed_map": "m"}, "t")


def test_clipping_alone_keeps_the_leak_and_noise_on_what_the_server_sees_blurs_it():
    dim, stores = 4, random_stores(40, 4, seed=4)
    params = fx.init_mapping(dim).params
    config = fc.FedConfig(clients_per_round=1, local_epochs=1, batch_size=0, client_lr=0.05, l2=0.0)
    plain = fx.leakage(params, stores, np.arange(40), config, group=10)
    clipped = fx.leakage(params, stores, np.arange(40), config, group=10, clip_norm=0.5 * plain["median_upload_norm"])
    assert clipped["single_cosine_min"] > 0.999          # scaling an upload does not change the ratio it reveals
    noisy = fx.leakage(params, stores, np.arange(40), config, group=10, clip_norm=plain["median_upload_norm"],
                       noise_multiplier=1.0)
    assert noisy["single_cosine_mean"] < 0.8 and noisy["noise_multiplier"] == 1.0
    with pytest.raises(ValueError, match="noise needs a clipping norm"):
        fx.leakage(params, stores, np.arange(40), config, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="clipping norm C must be > 0, got 0"):
        fx.leakage(params, stores, np.arange(40), config, clip_norm=0.0)


def test_the_least_squares_reading_is_exact_for_a_rank_one_upload():
    rng = np.random.default_rng(3)
    x, v = rng.normal(size=5), rng.normal(size=5)
    delta = np.vstack([np.outer(x, v), v])
    np.testing.assert_allclose(fx.reconstruct_source_vector(delta), x)


def test_dp_training_of_the_mapping_reports_each_noise_level_against_the_plain_mapping():
    run = fx.cold_start_methods(planted_domains(), 0.5, 0, SMALL, central=False)
    table = fx.mapping_under_dp(run["trained"], SMALL, clip_norm=0.05, noise_multipliers=[0.5, 50.0])
    assert list(table["σ"]) == [0.0, 0.5, 50.0] and np.isinf(table["ε"].iloc[0])
    assert table["ε"].iloc[1] > table["ε"].iloc[2] > 0                       # more noise, smaller ε
    assert table["held-out mapping MSE"].iloc[2] > table["held-out mapping MSE"].iloc[0]
    assert np.isfinite(table["cold RMSE"]).all()
