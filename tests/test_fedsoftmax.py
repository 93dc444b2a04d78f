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


def tiny_split() -> fs.RankingSplit:
    """Three users, six items: users 0 and 2 rated three items each (so one is left to train on),
    user 1 and item 5 never appear."""
    ratings = pd.DataFrame({"user_idx": [0, 0, 0, 2, 2, 2], "item_idx": [0, 1, 2, 3, 1, 4],
                            "timestamp": [1, 2, 3, 1, 2, 3]})
    return fs.ranking_split(ratings, 3, 6)


def config(**changes) -> fc.FedConfig:
    return fc.FedConfig(**{**dict(clients_per_round=8, local_epochs=2, batch_size=0, client_lr=0.5, server_lr=3.0,
                                  l2=0.01, seed=5), **changes})


def test_the_split_holds_out_the_last_two_interactions_of_every_user(split):
    assert len(split.valid) == len(split.test) == N_USERS
    for frame in (split.valid, split.test):
        for u, item in zip(frame["user_idx"], frame["item_idx"]):
            assert item not in split.positives[u]
    assert split.item_counts.sum() == sum(len(p) for p in split.positives)


@pytest.mark.parametrize("form, batch_size, prox_mu, cosine_rounds", [
    ("sampled", 0, 0.0, 0), ("sampled", 3, 0.0, 0), ("full", 0, 0.0, 0), ("full", 4, 0.1, 0), ("touched", 0, 0.0, 0),
    ("sampled", 3, 0.0, 4)])
def test_the_vectorised_closed_form_equals_autodiff_one_client_at_a_time(split, form, batch_size, prox_mu, cosine_rounds):
    task = fs.SoftmaxFederation(split, form, negatives=12)
    settings = config(batch_size=batch_size, prox_mu=prox_mu, cosine_rounds=cosine_rounds)
    states = []
    for client_update in (None, fs.reference_training):
        state, store = fs.init_state(split, 6, seed=2)
        for _ in range(3 if cosine_rounds else 2):   # a schedule's rate differs from round to round
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
        assert run.valid_hits.shape == (len(hr), len(split.held_out("valid"))) and run.valid_hits.dtype == bool
        assert run.valid_hits.mean(axis=1) == pytest.approx(hr)      # each user's hit, every evaluation
        for protocol in fs.PROTOCOLS:                                 # each test user's hit and NDCG
            units = run.test[protocol]["units"]
            assert units["HR@10"].mean() == pytest.approx(run.test[protocol]["HR@10"])
            assert units["NDCG@10"].mean() == pytest.approx(run.test[protocol]["NDCG@10"])


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
    first = updates.client(0)[0][0]
    updates.values[np.flatnonzero(updates.slot == 0)[0], -1] = 0.0      # a row whose bias did not move
    assert first not in fs.guessed_items(updates, 0, "bias rose")
    with pytest.raises(ValueError, match=r"attack must be one of \['rows sent', 'bias rose'\], got 'timing'"):
        fs.guessed_items(updates, 0, "timing")


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
    offered = w.softmax_panel_settings()
    labels = list(offered)
    assert labels[0] == "defaults (m = 100, η_c = 1, η_s = 10, K = 50)" and "K = 100, the rest as the defaults" in labels
    assert offered[labels[0]] == {k: v for k, v in w.SOFTMAX_PANEL.items() if k != "rounds"}
    assert len(offered) == 1 + sum(len(options) - 1 for options in w.SOFTMAX_PANEL_OPTIONS.values())
    for label in labels[1:]:                      # each offers one value changed from the defaults, and says which
        moved = [name for name in offered[label] if offered[label][name] != w.SOFTMAX_PANEL[name]]
        assert len(moved) == 1 and offered[label][moved[0]] in w.SOFTMAX_PANEL_OPTIONS[moved[0]]
        assert label.startswith(f"{w.SOFTMAX_PANEL_SYMBOLS[moved[0]]} = {offered[label][moved[0]]:g},")
    warm = w.softmax_warm_settings()              # every setting offered, to the slider's maximum: moves are lookups
    assert warm == [{**setting, "rounds": w.SOFTMAX_PANEL_MAX_ROUNDS} for setting in offered.values()]
    w.softmax_controls(lambda rounds, setting: None)
    controls = w.PANELS[-1].controls
    assert w.PANELS[-1].name == "federated_softmax" and set(controls) == {"rounds", "setting"}
    assert list(controls["setting"].options) == labels and controls["rounds"].max == w.SOFTMAX_PANEL_MAX_ROUNDS


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


def test_the_upload_table_gives_each_form_s_mean_rows_and_megabytes_per_client(split):
    """Lesson 04's cost table: a full-softmax client sends and receives the whole table (no indices);
    a sampled one its n_k + m candidate rows each way, a touched one the whole table down and its
    own n_k rows up, indexed rows carrying a 4-byte index; 1 MB = 10⁶ bytes; shares of the full upload."""
    dim, m = 5, 12
    table = fs.upload_costs(split, dim, m)
    n = np.mean([len(p) for p in split.positives])
    dense, indexed = 4 * (dim + 1), 4 * (dim + 1) + 4
    expected = {"full": (N_ITEMS, N_ITEMS * dense, N_ITEMS * dense), "sampled": (n + m, (n + m) * indexed, (n + m) * indexed),
                "touched": (n, n * indexed, N_ITEMS * dense)}
    assert list(table.index) == list(fs.FORMS)
    assert list(table.columns) == ["rows up", "MB up", "MB down", "share of full upload"]
    for form, (rows, up, down) in expected.items():
        assert table.loc[form, "rows up"] == pytest.approx(rows)
        assert table.loc[form, "MB up"] == pytest.approx(up / 1e6, rel=1e-9)
        assert table.loc[form, "MB down"] == pytest.approx(down / 1e6, rel=1e-9)
        assert table.loc[form, "share of full upload"] == pytest.approx(up / (N_ITEMS * dense))


def test_the_results_table_gives_mean_and_sd_over_seeds_and_the_rounds_chosen():
    def run(hr, ndcg, best):
        scores = {"full": {"HR@10": hr, "NDCG@10": ndcg}, "sampled": {"HR@10": 2 * hr, "NDCG@10": 2 * ndcg}}
        return fs.SelectedRun(fc.History(), best, scores, 1.0, np.zeros((1, 1), bool))

    popular = {"full": {"HR@10": 0.01, "NDCG@10": 0.005}, "sampled": {"HR@10": 0.2, "NDCG@10": 0.1}}
    table = fs.results_table({"FedAvg": [run(0.1, 0.04, 3), run(0.3, 0.08, 7)]}, popular)
    assert list(table.index) == ["FedAvg", "most popular"]
    fedavg = table.loc["FedAvg"]
    assert fedavg["HR@10 (full)"] == "0.2000 ± 0.1000" and fedavg["NDCG@10 (full)"] == "0.0600 ± 0.0200"
    assert fedavg["HR@10 (sampled)"] == "0.4000 ± 0.2000" and fedavg["NDCG@10 (sampled)"] == "0.1200 ± 0.0400"
    assert fedavg["seeds"] == 2 and fedavg["chosen round/epoch"] == "3, 7"
    most = table.loc["most popular"]
    assert [most["HR@10 (full)"], most["NDCG@10 (full)"], most["HR@10 (sampled)"], most["NDCG@10 (sampled)"]] == [
        "0.0100", "0.0050", "0.2000", "0.1000"]
    assert most["seeds"] == most["chosen round/epoch"] == "-"


def test_the_first_round_above_a_level_reads_the_seeds_mean_trailing_curve():
    histories = [fc.History({"valid_hr": [0.0, 0.1, 0.5, 0.1, 0.5, 0.5]}),
                 fc.History({"valid_hr": [0.0, 0.1, 0.3, 0.1, 0.3, 0.5]})]
    assert fs.first_round_above(histories, 0.35, window=1) == 2          # mean curve 0, .1, .4, .1, .4, .5
    assert fs.first_round_above(histories, 0.4, window=1) == 5             # strictly above
    assert fs.first_round_above(histories, 0.3, window=2) == 5             # trailing pairs 0, .05, .25, .25, .25, .45
    assert fs.first_round_above(histories, 0.25, window=3) == 4            # trailing threes …, .2, .3, .33
    assert fs.first_round_above(histories, 0.25) == 5                      # default window 5: …, .2, .3
    assert fs.first_round_above(histories, 0.5, window=1) == "never"


def record_epochs(monkeypatch) -> list:
    """The (item table, user vectors) the centralised trainer hands its validation selector after
    every epoch (the first: before training)."""
    seen = []

    class Recording(fs.ValidationSelector):
        def __call__(self, state, store):
            seen.append((state.params.copy(), store.user_vec.copy()))
            return super().__call__(state, store)

    monkeypatch.setattr(fs, "ValidationSelector", Recording)
    return seen


def test_a_centralised_batch_s_gradients_are_autodiff_of_its_pooled_loss(split):
    """The mean cross-entropy over the batch's interactions plus l2 · Σ_u (n_u / N_b) ‖p_u‖²."""
    import tensorflow as tf

    state, store = fs.init_state(split, 3, seed=4)
    batch = np.array([7, 2, 31, 50])
    grad_table, grad_users = fs.pooled_gradients(split, state.params, store.user_vec, batch, l2=0.3)
    table, users = tf.Variable(state.params), tf.Variable(store.user_vec[batch])
    target = np.zeros((len(batch), N_ITEMS), np.float32)
    for row, u in enumerate(batch):
        target[row, split.positives[u]] = 1.0
    n = target.sum(axis=1)
    with tf.GradientTape() as tape:
        log_p = tf.nn.log_softmax(users @ tf.transpose(table[:, :-1]) + table[:, -1])
        loss = -tf.reduce_sum(target * log_p) / n.sum() + 0.3 * tf.reduce_sum(n / n.sum() * tf.reduce_sum(users**2, 1))
    want_table, want_users = tape.gradient(loss, [table, users])
    assert np.allclose(grad_table, want_table.numpy(), atol=1e-7) and np.allclose(grad_users, want_users.numpy(), atol=1e-7)


def test_the_centralised_adam_step_is_keras_adam_on_the_rows_given():
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, gradients = rng.normal(size=(5, 3)), rng.normal(size=(3, 2, 3))          # gradients ≫ ε
    ours, moments, rows = x.copy(), (np.zeros_like(x), np.zeros_like(x)), np.array([1, 4])
    theirs, adam = tf.Variable(x[rows]), keras.optimizers.Adam(learning_rate=0.05, beta_1=0.9, beta_2=0.999)
    for step, gradient in enumerate(gradients, start=1):
        fs.adam_update(ours, moments, gradient, step, 0.05, rows)
        adam.apply_gradients([(tf.constant(gradient), theirs)])
        assert np.allclose(ours[rows], theirs.numpy(), rtol=1e-5, atol=1e-7)
    assert np.array_equal(np.delete(ours, rows, axis=0), np.delete(x, rows, axis=0))     # other rows untouched


def test_centralised_training_visits_every_user_once_an_epoch_in_seeded_batches(split, evaluator, monkeypatch):
    """Batches of ``batch_users`` users in the order of (seed, epoch)'s permutation: a user's first Adam
    step moves each coordinate by the learning rate if its batch came first, by less later (Adam's
    bias correction counts every batch's step)."""
    seen = record_epochs(monkeypatch)
    run = fs.train_centralised(split, evaluator, dim=3, epochs=1, learning_rate=0.01, batch_users=25, seed=4)
    start = fs.init_state(split, 3, seed=4)
    assert np.array_equal(seen[0][0], start[0].params) and np.array_equal(seen[0][1], start[1].user_vec)
    moved = np.abs(seen[1][1] - seen[0][1])
    first = np.random.default_rng([4, 0]).permutation(N_USERS)[:25]
    later = np.setdiff1d(np.arange(N_USERS), first)
    assert np.allclose(moved[first], 0.01, rtol=5e-3)
    assert np.all(moved[later] > 0.001) and np.all(moved[later] < 0.008)
    assert 0 < run.seconds < 600


def test_centralised_training_skips_users_with_nothing_to_train_on_and_applies_its_penalty(monkeypatch):
    seen = []

    class Recording:                                  # no evaluator needed: records what it is handed
        best_round, hits = 0, []

        def __init__(self, evaluator, *args, **kwargs):
            pass

        def __call__(self, state, store):
            seen.append(store.user_vec.copy())
            return {"valid_hr": 0.0, "valid_ndcg": 0.0}

        def test(self):
            return {}

    monkeypatch.setattr(fs, "ValidationSelector", Recording)
    tiny = tiny_split()
    fs.train_centralised(tiny, None, dim=2, epochs=2, learning_rate=0.1, batch_users=1, seed=0)
    moved = np.any(seen[-1] != seen[0], axis=1)
    assert moved.tolist() == [True, False, True] and np.isfinite(seen[-1]).all()
    fs.train_centralised(tiny, None, dim=2, epochs=2, learning_rate=0.1, batch_users=1, l2=5.0, seed=0)
    assert not np.array_equal(seen[-1], seen[2])       # the penalty reaches the gradients


class ScriptedEvaluator:
    """Stands in for :class:`fs.Evaluator`: validation HR@10 from a script, NDCG half of it; a test
    evaluation names its protocol and the round of the model it was given."""

    k = 10

    def __init__(self, hit_rates):
        self.hit_rates = iter(hit_rates)

    def of_state(self, state, store, on, protocol="full", units=False):
        assert units, "the selector keeps each user's values, for a bootstrap over users"
        if on == "valid":
            hr = next(self.hit_rates)
            return {"HR@10": hr, "NDCG@10": hr / 2, "units": {"HR@10": np.array([hr > 0.25, True])}}
        return {"protocol": protocol, "round": state.round, "first user": float(store.user_vec[0, 0])}


def test_the_selector_keeps_the_first_best_round_and_tests_it_under_both_protocols():
    selector = fs.ValidationSelector(ScriptedEvaluator([0.1, 0.3, 0.3, 0.2]), window=1)
    curves = [selector(fs.ServerState(np.zeros((2, 2)), r), fs.UserVectors(np.full((1, 1), float(r)))) for r in range(4)]
    assert curves[1] == {"valid_hr": 0.3, "valid_ndcg": 0.15} and selector.best_round == 1     # a tie keeps the first
    assert np.array(selector.hits).tolist() == [[False, True], [True, True], [True, True], [False, True]]
    assert selector.test() == {p: {"protocol": p, "round": 1, "first user": 1.0} for p in fs.PROTOCOLS}
    last = fs.ValidationSelector(ScriptedEvaluator([0.1, 0.3, 0.2]), window=1, choose=False)
    for r in range(3):
        last(fs.ServerState(np.zeros((2, 2)), r), fs.UserVectors(np.full((1, 1), float(r))))
    assert last.best_round == 2 and last.test()["full"]["round"] == 2


def test_a_federated_run_passes_on_its_negatives_start_and_choice(split, evaluator, monkeypatch):
    chosen, starts = [], []

    class Recording(fs.ValidationSelector):
        def __init__(self, evaluator, window=5, choose=True):
            chosen.append(choose)
            super().__init__(evaluator, window, choose)

        def __call__(self, state, store):
            if not self.hr:
                starts.append((state.params.copy(), store.user_vec.copy()))
            return super().__call__(state, store)

    monkeypatch.setattr(fs, "ValidationSelector", Recording)
    run = fs.run_federated(split, evaluator, config(), 1, "sampled", negatives=7, dim=3, init_seed=2)
    fs.run_federated(split, evaluator, config(), 1, "sampled", negatives=7, dim=3, choose_round=False)
    assert chosen == [True, False]
    report = run.history.reports[0]
    n = np.array([len(split.positives[c]) for c in report.trained])
    assert report.bytes_up == ((n + 7) * (4 * 4 + 4)).sum()
    table, vectors = fs.init_state(split, 3, 2)
    assert np.array_equal(starts[0][0], table.params) and np.array_equal(starts[0][1], vectors.user_vec)
    assert 0 < run.seconds < 600 and set(run.test) == set(fs.PROTOCOLS)


def test_the_evaluator_draws_its_negatives_at_its_own_seed_and_ranks_popularity_under_either_protocol(split):
    seeded = fs.Evaluator(split, seed=3)
    users = split.held_out("test")["user_idx"].to_numpy()
    assert np.array_equal(seeded.negatives["test"], fs.eval_negatives(split, users, seed=3))
    assert not np.array_equal(seeded.negatives["test"], fs.Evaluator(split).negatives["test"])
    counts = split.item_counts.astype(np.float64)
    for protocol in fs.PROTOCOLS:
        assert seeded.popularity("test", protocol) == seeded.metrics(counts, "test", protocol)
        with_units = seeded.popularity("test", protocol, units=True)["units"]["HR@10"]
        assert np.array_equal(with_units, seeded.metrics(counts, "test", protocol, units=True)["units"]["HR@10"])


def test_a_user_with_no_training_interaction_has_no_positives():
    split = tiny_split()
    assert [p.tolist() for p in split.positives] == [[0], [], [3]]
    assert split.positives[1].dtype == np.int64 and split.item_counts.tolist() == [1, 0, 0, 1, 0, 0]


def test_the_panel_s_menus_reach_the_round(split, evaluator):
    playground = fs.Playground(split, evaluator, config(), dim=4)
    four = playground.history(rounds=1, negatives=20, clients_per_round=4, client_lr=0.5, server_lr=3.0)
    assert len(four.reports[0].trained) == 4
    slow = playground.history(rounds=1, negatives=20, clients_per_round=4, client_lr=0.05, server_lr=3.0)
    assert slow.valid_hr[0] == four.valid_hr[0] and slow.reports[0].update_norms.sum() < four.reports[0].update_norms.sum()
    step = dict(rounds=2, negatives=20, clients_per_round=4, client_lr=0.5)
    seconds = playground.warm([{**step, "server_lr": 1.0}, {**step, "server_lr": 3.0}])
    assert 0 < seconds < 600 and playground.history(**step, server_lr=1.0).valid_hr != playground.history(
        **step, server_lr=3.0).valid_hr


def test_a_device_scores_every_item_by_its_vector_and_the_item_s_row():
    table = np.array([[1.0, 0.0, 0.5], [0.0, 2.0, -1.0], [1.0, 1.0, 0.0]], np.float32)   # rows (q_c, b_c)
    users = np.array([[0.5, 1.0], [2.0, -1.0]], np.float32)
    got = fs.scores(fs.ServerState(table), fs.UserVectors(users), [1, 0])
    assert got.tolist() == [[2.0 + 0.5, -2.0 - 1.0, 1.0], [0.5 + 0.5, 2.0 - 1.0, 1.5]]


def test_the_start_and_the_negative_sampling_distribution(split):
    state, store = fs.init_state(split, 8, seed=1, scale=0.1)
    vectors = np.concatenate([state.params[:, :-1].ravel(), store.user_vec.ravel()])
    assert abs(vectors.mean()) < 0.01 and 0.09 < vectors.std() < 0.11 and not state.params[:, -1].any()
    assert fs.sampling_distribution(np.array([0, 1, 4, 9]), 0.5) == pytest.approx(np.array([1, 1, 2, 3]) / 7)
    assert fs.sampling_distribution(np.array([0, 1, 4, 9]), 1.0) == pytest.approx(np.array([1, 1, 4, 9]) / 15)
    task = fs.SoftmaxFederation(split, "sampled", negatives=5, exponent=1.0)
    busiest = int(np.argmax([len(p) for p in split.positives]))
    q = fs.sampling_distribution(split.item_counts, 1.0)
    q_k = q.copy()
    q_k[split.positives[busiest]] = 0
    n = len(split.positives[busiest])
    drawn = task.candidates(np.array([busiest]), 0, 0)
    assert np.allclose(drawn.offset[0, n:n + 5], np.log(5 * q_k[drawn.rows[0, n:n + 5]] / q_k.sum()))


def test_a_sampled_client_may_draw_from_one_to_every_item_it_has_not_seen(split):
    sizes = [len(p) for p in split.positives]
    largest = N_ITEMS - max(sizes)
    busiest = int(np.argmax(sizes))
    everything = fs.SoftmaxFederation(split, "sampled", negatives=largest).candidates(np.array([busiest]), 0, 0)
    negatives = everything.rows[0, sizes[busiest]:sizes[busiest] + largest]
    assert sorted(negatives) == sorted(set(range(N_ITEMS)) - set(split.positives[busiest]))   # each once
    assert fs.SoftmaxFederation(split, "sampled", negatives=1).rows_used([busiest]).tolist() == [sizes[busiest] + 1]
    for impossible in (0, largest + 1):
        with pytest.raises(ValueError, match=f"1..{largest}"):
            fs.SoftmaxFederation(split, "sampled", negatives=impossible)


def test_clients_are_the_users_with_a_training_interaction():
    tiny = tiny_split()
    assert fs.SoftmaxFederation(tiny, "full").client_ids.tolist() == tiny.active_users.tolist() == [0, 2]


def test_the_softmax_residual_is_row_wise_and_safe_for_large_and_batched_scores():
    scores = np.array([[0.0, 1.0, 2.0], [300.0, 301.0, 302.0]], np.float32)   # the second row: exp overflows unshifted
    target = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], np.float32)
    pi = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    expected = np.stack([pi - target[0], pi - target[1]])
    assert fs.softmax_residual(scores, target) == pytest.approx(expected, abs=1e-6)
    batched = fs.softmax_residual(np.stack([scores, scores[::-1]]), np.stack([target, target[::-1]]))   # (K, B, M)
    assert batched.shape == (2, 2, 3) and batched == pytest.approx(np.stack([expected, expected[::-1]]), abs=1e-6)


def test_the_evaluator_reads_the_held_out_items_it_is_asked_for_at_its_own_k(split):
    assert split.held_out("valid") is split.valid and split.held_out("test") is split.test
    five = fs.Evaluator(split, k=5)
    rng = np.random.default_rng(3)
    everyone = rng.normal(size=(len(split.held_out("test")), N_ITEMS))
    ranks = five.ranks(everyone, "test", "full")
    got = five.metrics(everyone, "test", "full", units=True)
    assert got["HR@5"] == pytest.approx(np.mean(ranks < 5)) and got["units"]["HR@5"].tolist() == (ranks < 5).tolist()
    gains = np.where(ranks < 5, 1 / np.log2(ranks + 2), 0.0)
    assert got["NDCG@5"] == pytest.approx(gains.mean()) and got["units"]["NDCG@5"] == pytest.approx(gains)
    one_list = rng.normal(size=N_ITEMS)                                   # a non-personalised model: one score row
    assert five.metrics(one_list, "test") == five.metrics(np.tile(one_list, (len(everyone), 1)), "test")
