"""helpers.fedsoftmax: the softmax recommender as a task of the federated core, on planted data.

The planted users fall in ten taste groups; each interacts with items of its own group, in time
order, so a model that learns the groups ranks a user's held-out item high and most-popular does not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import fedcore as fc
from helpers import fedsoftmax as fs
from helpers.metrics import rank_of_targets

N_USERS, N_ITEMS, GROUPS = 60, 150, 10


@pytest.fixture(scope="module")
def split() -> fs.RankingSplit:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(N_USERS):
        group = u % GROUPS
        mine = np.arange(group, N_ITEMS, GROUPS)  # 15 items of the user's group
        popular = np.arange(0, 6)                  # a few items everyone may pick
        items = np.unique(np.concatenate([rng.choice(mine, 8 + u % 4, replace=False), rng.choice(popular, 2)]))
        rng.shuffle(items)
        rows += [(u, int(i), float(t)) for t, i in enumerate(items)]
    ratings = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp"])
    return fs.ranking_split(ratings, N_USERS, N_ITEMS)


@pytest.fixture(scope="module")
def evaluator(split) -> fs.Evaluator:
    return fs.Evaluator(split)


def config(**changes) -> fc.FedConfig:
    return fc.FedConfig(**{**dict(clients_per_round=8, local_epochs=2, batch_size=0, client_lr=0.5, server_lr=3.0,
                                  l2=0.01, seed=5), **changes})


def test_the_split_holds_out_the_last_two_interactions_of_every_user(split):
    assert len(split.valid) == len(split.test) == N_USERS
    for frame in (split.valid, split.test):
        for u, item in zip(frame["user_idx"], frame["item_idx"]):
            assert item not in split.positives[u]
    assert split.item_counts.sum() == sum(len(p) for p in split.positives)


@pytest.mark.parametrize("form, batch_size, prox_mu", [("sampled", 0, 0.0), ("sampled", 3, 0.0), ("full", 0, 0.0),
                                                       ("full", 4, 0.1), ("touched", 0, 0.0)])
def test_the_vectorised_closed_form_equals_autodiff_one_client_at_a_time(split, form, batch_size, prox_mu):
    task = fs.SoftmaxFederation(split, form, negatives=12)
    settings = config(batch_size=batch_size, prox_mu=prox_mu)
    states = []
    for client_update in (None, fs.reference_training):
        state, store = fs.init_state(split, 6, seed=2)
        for _ in range(2):
            state, report = fc.run_round(state, task, store, settings, fc.Algorithm(client_update=client_update))
        states.append((state.params, store.user_vec, report.bytes_up))
    (a, pa, up_a), (b, pb, up_b) = states
    assert np.abs(a - b).max() < 2e-5 and np.abs(pa - pb).max() < 2e-5 and up_a == up_b


def test_sampled_negatives_are_new_to_the_client_corrected_and_seeded_per_client(split):
    task = fs.SoftmaxFederation(split, "sampled", negatives=10)
    together = task.candidates(np.array([3, 7, 11]), round_num=4, seed=1)
    alone = task.candidates(np.array([7]), round_num=4, seed=1)
    n = len(split.positives[7])
    assert np.array_equal(together.rows[1, :n + 10], alone.rows[0, :n + 10])  # independent of who else trains
    mine, negatives = together.rows[1, :n], together.rows[1, n:n + 10]
    assert np.array_equal(mine, split.positives[7]) and len(set(negatives)) == 10
    assert not set(negatives) & set(mine)
    q = fs.sampling_distribution(split.item_counts)
    q_k = q.copy()
    q_k[mine] = 0
    q_k /= q_k.sum()
    assert np.allclose(together.offset[1, n:n + 10], np.log(10 * q_k[negatives]))
    assert np.all(together.offset[1, :n] == 0)
    assert not np.array_equal(task.candidates(np.array([7]), 5, 1).rows, alone.rows)  # a new draw each round


@pytest.mark.parametrize("form", list(fs.FORMS))
def test_what_each_form_sends_and_what_it_costs(split, form):
    task = fs.SoftmaxFederation(split, form, negatives=12)
    state, store = fs.init_state(split, 6, seed=0)
    clients = np.array([1, 4, 9])
    before = store.user_vec.copy()
    updates = task.train_clients(state.params, store, clients, config(), 0)
    width, n = 7, np.array([len(split.positives[c]) for c in clients])
    expected_rows = {"full": np.full(3, N_ITEMS), "sampled": n + 12, "touched": n}[form]
    assert [len(updates.client(k)[0]) for k in range(3)] == expected_rows.tolist()
    per_row = 4 * width + (0 if form == "full" else 4)  # a dense table needs no row indices
    assert updates.upload_bytes.tolist() == (expected_rows * per_row).tolist()
    if form == "touched":
        assert all(np.array_equal(updates.client(k)[0], split.positives[c]) for k, c in enumerate(clients))
    changed = np.flatnonzero(np.any(store.user_vec != before, axis=1))
    assert changed.tolist() == clients.tolist()  # only the trained clients' private vectors moved


def test_fedsgd_is_one_full_batch_gradient_per_client_weighted_by_examples(split):
    task = fs.SoftmaxFederation(split, "full")
    state, store = fs.init_state(split, 5, seed=3)
    fedsgd = fc.FedConfig.fedsgd(clients_per_round=6, learning_rate=2.0, client_lr=0.5, l2=0.0, seed=1)
    new, report = fc.run_round(state, task, fs.UserVectors(store.user_vec.copy()), fedsgd)
    gradient, total = np.zeros_like(state.params), 0
    for c in report.trained:
        items = split.positives[c]
        q, b, p = state.params[:, :-1], state.params[:, -1], store.user_vec[c]
        s = q @ p + b
        pi = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        y = np.zeros(N_ITEMS)
        y[items] = 1 / len(items)
        gradient[:, :-1] += len(items) * np.outer(pi - y, p)
        gradient[:, -1] += len(items) * (pi - y)
        total += len(items)
    assert np.allclose(new.params, state.params - 2.0 * gradient / total, atol=1e-6)


def test_the_full_protocol_is_lesson_01_s_and_the_sampled_one_ranks_among_99_new_items(split, evaluator):
    state, store = fs.init_state(split, 6, seed=4)
    users = split.test["user_idx"].to_numpy()
    scores = fs.scores(state, store, users)
    valid_item = dict(zip(split.valid["user_idx"], split.valid["item_idx"]))
    seen = [np.append(split.positives[u], valid_item[u]) for u in users]
    assert np.array_equal(evaluator.ranks(scores, "test", "full"),
                          rank_of_targets(scores, split.test["item_idx"].to_numpy(), seen))
    negatives = evaluator.negatives["test"]
    assert negatives.shape == (len(users), 99)
    for row, u in enumerate(users[:10]):
        assert len(set(negatives[row])) == 99 and not set(negatives[row]) & (set(seen[row]) | {split.test["item_idx"][row]})
    sampled = evaluator.ranks(scores, "test", "sampled")
    assert sampled.max() <= 99 and np.all(sampled <= evaluator.ranks(scores, "test", "full"))


def test_fedavg_and_centralised_learn_the_groups_and_beat_most_popular(split, evaluator):
    popular = evaluator.popularity("valid")["HR@10"]
    federated = fs.run_federated(split, evaluator, config(local_epochs=5, client_lr=1.0, server_lr=10.0), rounds=40,
                                 form="sampled", negatives=20, dim=6)
    central = fs.train_centralised(split, evaluator, dim=6, epochs=20, learning_rate=0.05, batch_users=8)
    for run in (federated, central):
        assert max(run.history.valid_hr) > popular + 0.4
        assert run.test["full"]["HR@10"] > popular and run.test["sampled"]["HR@10"] >= run.test["full"]["HR@10"]
        hr = run.history.valid_hr
        smoothed = [np.mean(hr[max(0, i - 4):i + 1]) for i in range(len(hr))]
        assert run.best_round == int(np.argmax(smoothed))  # chosen on validation, first best


def test_the_update_reveals_the_client_s_items(split):
    state, store = fs.init_state(split, 6, seed=0)
    clients = np.arange(10)
    for form, attack, exact in (("touched", "rows sent", True), ("full", "bias rose", True),
                                ("sampled", "bias rose", True), ("sampled", "rows sent", False)):
        task = fs.SoftmaxFederation(split, form, negatives=20)
        updates = task.train_clients(state.params, fs.UserVectors(store.user_vec.copy()), clients, config(), 0)
        found = fs.leak(updates, split, attack)
        assert found["recall"] == 1.0 and found["clients"] == 10
        assert (found["precision"] == 1.0) is exact


def test_impossible_settings_are_refused_with_what_is_allowed(split, evaluator):
    with pytest.raises(ValueError, match="form must be one of"):
        fs.SoftmaxFederation(split, "dense")
    with pytest.raises(ValueError, match=r"negatives m must be a whole number in 1\.\."):
        fs.SoftmaxFederation(split, "sampled", negatives=N_ITEMS)
    with pytest.raises(ValueError, match="clients per round must be a whole number in 1..60"):
        fs.run_federated(split, evaluator, config(clients_per_round=61), rounds=1)
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluator.metrics(np.zeros(N_ITEMS), "test", "leave-one-out")
    with pytest.raises(ValueError, match="evaluate on 'valid' or 'test'"):
        evaluator.metrics(np.zeros(N_ITEMS), "train")


def test_the_panel_s_runs_are_cached_extended_and_warmed_one_move_at_a_time(split, evaluator):
    """Lesson 04's panel: a setting asked again is a lookup (the same history, no round trained), more
    rounds train only the missing ones, a different setting is a different run; the warm-up list holds
    the default at the slider's maximum and every single menu move, and offers only what the menus do."""
    from helpers import widgets as w

    playground = fs.Playground(split, evaluator, config(), dim=4)
    first = playground.history(rounds=4, negatives=20, clients_per_round=8, client_lr=0.5, server_lr=3.0)
    again = playground.history(rounds=4, negatives=20, clients_per_round=8, client_lr=0.5, server_lr=3.0)
    longer = playground.history(rounds=6, negatives=20, clients_per_round=8, client_lr=0.5, server_lr=3.0)
    assert len(first.valid_hr) == 5 and again.valid_hr == first.valid_hr and longer.valid_hr[:5] == first.valid_hr
    assert len(playground.runs._runs) == 1
    other = playground.history(rounds=4, negatives=40, clients_per_round=8, client_lr=0.5, server_lr=3.0)
    assert len(playground.runs._runs) == 2 and other.reports[0].bytes_up > first.reports[0].bytes_up
    settings = w.softmax_warm_settings()
    assert settings[0] == {**w.SOFTMAX_PANEL, "rounds": w.SOFTMAX_PANEL_MAX_ROUNDS}
    assert len(settings) == 1 + sum(len(options) - 1 for options in w.SOFTMAX_PANEL_OPTIONS.values())
    for setting in settings[1:]:
        moved = [name for name in w.SOFTMAX_PANEL if setting[name] != w.SOFTMAX_PANEL[name]]
        assert len(moved) == 1 and setting[moved[0]] in w.SOFTMAX_PANEL_OPTIONS[moved[0]]


def test_metrics_can_give_each_held_out_user_s_hit_and_ndcg(split, evaluator):
    state, store = fs.init_state(split, 6, seed=0)
    for protocol in ("full", "sampled"):
        plain = evaluator.of_state(state, store, "test", protocol)
        with_units = evaluator.of_state(state, store, "test", protocol, units=True)
        assert "units" not in plain and {k: v for k, v in with_units.items() if k != "units"} == plain
        hits, ndcg = with_units["units"]["HR@10"], with_units["units"]["NDCG@10"]
        assert hits.shape == ndcg.shape == (len(split.held_out("test")),)
        assert set(np.unique(hits)) <= {0.0, 1.0} and np.all((ndcg > 0) == (hits > 0))
        assert hits.mean() == pytest.approx(plain["HR@10"]) and ndcg.mean() == pytest.approx(plain["NDCG@10"])
    popular = evaluator.metrics(split.item_counts.astype(np.float64), "valid", units=True)
    assert popular["units"]["HR@10"].mean() == pytest.approx(popular["HR@10"])
