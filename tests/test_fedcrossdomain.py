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
    fit = fx.train_mapping(stores, np.arange(30), np.arange(30, 40), config, 40, dim, checkpoints=(0, 10, 99))
    history, best = fit.history, fit.best_round
    assert best == int(np.argmin(history.valid_mse)) and history.valid_mse[best] < history.valid_mse[0]
    assert fx.mapping_mse(fit.table, stores, np.arange(30, 40)) == pytest.approx(history.valid_mse[best], rel=1e-6)
    assert sorted(fit.checkpoints) == [0, 10]  # round 99 was never run
    np.testing.assert_array_equal(fit.checkpoints[0], fx.init_mapping(dim).params)
    assert fx.mapping_mse(fit.checkpoints[10], stores, np.arange(30, 40)) == pytest.approx(history.valid_mse[10], rel=1e-6)


def test_the_server_rate_is_the_one_with_the_lowest_held_out_error():
    dim, stores = 3, random_stores(40, 3, seed=8)
    settings = replace(SMALL, mapping_server="adam", mapping_server_rates=(0.001, 0.05), mapping_rounds=30)
    fit, by_rate = fx.choose_mapping(stores, np.arange(30), np.arange(30, 40), settings, "linear", seed=0)
    assert sorted(by_rate) == [0.001, 0.05] and fit.server_lr == min(by_rate, key=by_rate.get)
    assert fit.valid_mse == by_rate[fit.server_lr]


def test_a_single_upload_reveals_the_clients_source_vector_and_a_sum_hides_it():
    dim, stores = 4, random_stores(40, 4, seed=4)
    params = fx.init_mapping(dim).params
    config = fc.FedConfig(clients_per_round=1, local_epochs=1, batch_size=0, client_lr=0.05, l2=0.0)
    update = fx.MappingTask(np.arange(40), dim).train_clients(params, stores, np.array([7]), config, 0)
    x, _ = stores.pairs(np.array([7]))
    np.testing.assert_allclose(fx.reconstruct_source_vector(update.values.astype(np.float64)), x[0], rtol=1e-3)
    leak = fx.leakage(params, stores, np.arange(40), config, group=10)
    assert leak["single_cosine_min"] > 0.999 and leak["summed_cosine_mean"] < 0.95 and leak["clients"] == 40


def test_an_mlp_upload_reveals_the_source_vector_too():
    """With one step and no penalty, each row of ΔW₁ᵀ is x times that hidden unit's Δb₁."""
    dim, stores = 4, random_stores(40, 4, seed=4)
    params = fx.init_mapping(dim, "mlp", seed=3).params
    config = fc.FedConfig(clients_per_round=1, local_epochs=1, batch_size=0, client_lr=0.05, l2=0.0)
    update = fx.MappingTask(np.arange(40), dim, "mlp").train_clients(params, stores, np.array([7]), config, 0)
    x, _ = stores.pairs(np.array([7]))
    np.testing.assert_allclose(fx.reconstruct_source_vector(update.values.astype(np.float64), "mlp"), x[0], rtol=1e-3)
    assert fx.leakage(params, stores, np.arange(40), config, kind="mlp")["single_cosine_min"] > 0.999


def mlp_loss(table: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> float:
    """The mean over clients of each one's MLP loss, written from the layers' definition."""
    dim = x.shape[1]
    hidden = 2 * dim
    w1, b1 = table[:hidden].T, table[hidden:hidden + 2].reshape(-1)
    w2, b2 = table[hidden + 2:2 * hidden + 2], table[-1]
    out = np.tanh(x @ w1 + b1) @ w2 + b2
    return float(np.mean(np.mean((out - y) ** 2, axis=1)) + l2 * ((w1 ** 2).sum() + (w2 ** 2).sum()))


def test_the_mlp_client_step_is_the_gradient_of_its_loss():
    """One MLP client step is −η ∇L (checked by central differences), and one round of every client
    with one step is the centralised full-batch step on the mean loss."""
    dim, n, l2 = 3, 12, 0.01
    stores = random_stores(n, dim, seed=9)
    x, y = stores.pairs(np.arange(n))
    table = fx.init_mapping(dim, "mlp", seed=1).params.astype(np.float64)
    table[2 * (dim + 1):2 * (dim + 1) + 2] = 0.1  # non-zero b₁ so every row of the table matters
    grad = np.zeros_like(table)
    for index in np.ndindex(table.shape):
        step = np.zeros_like(table)
        step[index] = 1e-6
        grad[index] = (mlp_loss(table + step, x, y, l2) - mlp_loss(table - step, x, y, l2)) / 2e-6
    task = fx.MappingTask(np.arange(n), dim, "mlp")
    config = fc.FedConfig(clients_per_round=n, local_epochs=1, batch_size=0, client_lr=0.1, l2=l2)
    after, report = fc.run_round(fc.ServerState(table.astype(np.float32)), task, stores, config)
    np.testing.assert_allclose(after.params, table - 0.1 * grad, rtol=1e-4, atol=1e-5)
    assert report.bytes_up == n * (4 * (dim + 1) + 3) * (dim + 1) * 4
    mapped = fx.apply_mapping(table, x, "mlp")
    assert mapped.shape == (n, dim + 1)


def test_an_unknown_mapping_or_checkpoint_is_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"one of \['linear', 'mlp'\], got 'cnn'"):
        fx.MappingTask(np.arange(3), 2, "cnn")
    scores = pd.DataFrame([{"beta": 0.5, "seed": 0, "revealed": 1, "method": m, "RMSE": 1.0, "MAE": 0.8,
                            "HR@10": 0.1, "NDCG@10": 0.05} for m in fx.METHODS])
    curve = pd.DataFrame([{"beta": 0.5, "seed": 0, "mapping": kind, "round": r, "revealed": 1, "tuned": t,
                           "valid_mse": 0.1, "RMSE": 0.5 + r / 100, "MAE": 0.4, "HR@10": 0.2, "NDCG@10": 0.1}
                          for kind in ("linear", "mlp") for r in (0, 10) for t in (False, True)])
    at = fx.scores_at_round(scores, curve, "mlp", 10)
    assert set(at["method"]) == set(fx.METHODS) - {"fed_map", "fed_map_tuned", "central_map"}
    assert at.loc[at.method == "fed_map_mlp", "RMSE"].item() == pytest.approx(0.6)
    assert at.loc[at.method == "fed_tgt", "RMSE"].item() == 1.0
    with pytest.raises(ValueError, match=r"round 5 of the linear mapping was not kept; the checkpoints are \[0, 10\]"):
        fx.scores_at_round(scores, curve, "linear", 5)


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
                             mapping_rounds=60, mapping_server_rates=(1.0,), revealed=(1, 3), tune_steps=20, tune_lr=0.1)


def test_the_whole_pipeline_on_planted_domains_learns_the_map():
    """Every method is scored on the same hidden ratings; with a planted linear map between the
    domains, the federated mapping predicts the cold users better than target-only MF."""
    result = fx.cold_start_methods(planted_domains(), 0.5, 0, SMALL, central=False)
    assert set(result["scores"]) == {1, 3} and result["test_ratings"][1] > result["test_ratings"][3]
    scores = result["scores"][3]
    assert set(scores) == set(fx.METHODS) - {"central_map", "central_map_mlp"}
    assert all(np.isfinite(list(s.values())).all() for s in scores.values())
    assert scores["fed_map"]["RMSE"] < scores["fed_tgt"]["RMSE"]
    assert scores["fed_map_mlp"]["RMSE"] < scores["fed_tgt"]["RMSE"]
    assert 0 <= result["rounds"]["mapping"] <= SMALL.mapping_rounds
    assert result["mb_up_per_client"]["mapping_mlp"] == pytest.approx(19 * 4 * 4 / 1e6)  # (4D + 3) rows of D
    curve = pd.DataFrame(result["curve"])
    assert sorted(curve["round"].unique()) == [0, 10, 25, 50]  # the checkpoints up to 60 rounds
    at_best = curve[(curve["mapping"] == "mlp") & (curve["round"] == 0) & (curve["revealed"] == 3) & ~curve["tuned"]]
    assert at_best["valid_mse"].item() == result["trained"].mappings["mlp"].history.valid_mse[0]
    assert result["cold_users"] == 60 and result["mb_up_per_client"]["mapping"] == pytest.approx(5 * 4 * 4 / 1e6)
    assert scores["fed_map_tuned"]["RMSE"] < scores["fed_map"]["RMSE"]  # three own ratings refine the mapped vector
    units = result["units"][3]
    assert set(units) == set(scores) and "units" not in scores["fed_map"]
    assert units["fed_map"]["RMSE"][:, 1].sum() == result["test_ratings"][3]   # (error sum, ratings) per user
    for method in scores:   # each score is the units' mean (RMSE: the root of Σ sums / Σ counts)
        sums = units[method]["RMSE"]
        assert np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()) == pytest.approx(scores[method]["RMSE"], rel=1e-5)
        assert units[method]["HR@10"].mean() == pytest.approx(scores[method]["HR@10"], rel=1e-5)
        assert units[method]["NDCG@10"].mean() == pytest.approx(scores[method]["NDCG@10"], rel=1e-5)
    assert fx.unit_values({(0.5, 0): result}, 0.5, 3, "fed_map", "HR@10", [0])[0] is units["fed_map"]["HR@10"]


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
    assert set(result["paired_over_seeds"]) == {"fed_map - fed_tgt", "fed_map_mlp - fed_tgt",
                                                 "fed_map RMSE / central_map RMSE - 1",
                                                 "fed_map_mlp RMSE / central_map_mlp RMSE - 1"}
    difference = result["paired_over_seeds"]["fed_map - fed_tgt"]["RMSE"]
    assert difference["values"] == pytest.approx([m - t for m, t in zip(fed_map["values"], fed_tgt["values"])], abs=2e-4)
    assert difference["standard_error"] is not None and len(fed_map["values"]) == 2
    assert report["mb_up_per_client_per_round"]["mapping"] == pytest.approx(5 * 4 * 4 / 1e6)
    decided = result["decided_at_95"]["RMSE"]
    assert set(decided) == {"fed_map - fed_tgt", "fed_map - fed_bias", "fed_map - central_map", "fed_map_mlp - fed_tgt",
                            "fed_map_mlp - fed_bias", "fed_map_mlp - central_map_mlp", "fed_map_mlp - fed_map"}
    assert all(v["winner"] is None for v in decided.values())  # two seeds: t has one degree of freedom, no claim
    assert decided["fed_map - fed_tgt"]["difference"] == pytest.approx(np.mean(difference["values"]), abs=2e-4)


def test_the_grid_trains_each_seeds_source_once_and_the_frame_has_one_row_per_score(monkeypatch):
    domains, calls = planted_domains(), []
    train_source = fx.train_source
    monkeypatch.setattr(fx, "train_source", lambda *a, **k: calls.append(a[2]) or train_source(*a, **k))
    runs = fx.run_grid(domains, SMALL, betas=(0.3, 0.6), seeds=(0, 1), central=False)
    assert calls == [0, 1] and sorted(runs) == [(0.3, 0), (0.3, 1), (0.6, 0), (0.6, 1)]
    trained = runs[0.6, 1]["trained"]
    assert trained.source.store.user_vec.shape == (domains.n_users, SMALL.dim)
    assert trained.mappings["linear"].table.shape == (SMALL.dim + 2, SMALL.dim + 1)
    assert trained.mappings["mlp"].table.shape == (4 * SMALL.dim + 7, SMALL.dim + 1)
    assert np.isin(trained.fit_users, trained.split.warm).all()  # never a cold user in the mapping
    frame = fx.scores_frame(runs)
    assert len(frame) == 2 * 2 * len(SMALL.revealed) * (len(fx.METHODS) - 2)
    assert len(fx.curve_frame(runs)) == 2 * 2 * 2 * 4 * len(SMALL.revealed) * 2  # β, seed, kind, round, k, tuned
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
    table = fx.mapping_under_dp(run["trained"], SMALL, clip_norm=0.05, noise_multipliers=[0.5, 50.0],
                                sampling_rates=(1.0, 0.2))
    assert list(table["σ"]) == [0.0, 0.5, 50.0, 0.5, 50.0] and list(table["q"]) == [1.0, 1.0, 1.0, 0.2, 0.2]
    assert np.isinf(table["ε"].iloc[0])
    assert table["ε"].iloc[1] > table["ε"].iloc[2] > 0                       # more noise, smaller ε
    assert table["ε"].iloc[1] > table["ε"].iloc[3]                           # fewer clients a round, smaller ε
    with pytest.raises(ValueError, match=r"sampling rates must lie in \(0, 1\], got \[0.0\]"):
        fx.mapping_under_dp(run["trained"], SMALL, 0.05, [1.0], sampling_rates=(0.0,))
    assert table["held-out mapping MSE"].iloc[2] > table["held-out mapping MSE"].iloc[0]
    assert np.isfinite(table["cold RMSE"]).all()


def test_the_partitioned_top_k_is_the_full_sort_with_ties_against_relevant_items():
    """The lists equal a full stable sort by (score desc, relevant last, item) on scores with many
    ties, excluded items and rows whose ties crowd the top."""
    rng = np.random.default_rng(11)
    scores = np.round(rng.normal(size=(60, 200)), 1)
    scores[5] = 1.0                                                  # one row all tied
    scores[6, :50] = 9.0                                             # 50 ties at the top
    scores[7, 3] = np.nan
    relevant, excluded = rng.random((60, 200)) < 0.1, rng.random((60, 200)) < 0.05
    ordered = np.where(excluded, -np.inf, np.nan_to_num(scores, nan=-np.inf))
    for k in (1, 10):
        full = np.array([np.lexsort((np.arange(200), relevant[u], -ordered[u]))[:k] for u in range(60)])
        np.testing.assert_array_equal(fx.top_k_lists(scores, excluded, relevant, k), full)
    small = fx.top_k_lists(scores[:, :12], excluded[:, :12], relevant[:, :12], 10)   # 4k ≥ I: sorted whole
    np.testing.assert_array_equal(small, [np.lexsort((np.arange(12), relevant[u, :12], -ordered[u, :12]))[:10]
                                          for u in range(60)])
