"""The federated core: samplers, transforms, aggregators, server optimisers, and honest round reports."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from helpers import compression as cp
from helpers import fedcore as fc
from helpers import federated as fl
from helpers import privacy as pv
from helpers import security as sec
from test_federated import planted_federation


@pytest.fixture(scope="module")
def federation():
    return planted_federation(n_users=40)


CONFIG = fl.FedConfig(clients_per_round=12, local_epochs=2, batch_size=4, client_lr=0.1, server_lr=2.0, l2=0.02)
ALGORITHMS = {
    "uniform": fc.FEDAVG,
    "poisson (DP)": pv.dp_fedavg(pv.DPConfig(0.5, 1.0, 12), 0.3),
    "dropout 50%": sec.threatened(sec.Threat(dropout=0.5)),
    "top-10% compression": fc.Algorithm(transforms=(cp.compress(cp.Compressor("topk", 0.1)),)),
    "dropout + 8-bit": fc.Algorithm(sampler=fc.with_dropout(fc.uniform, 0.3),
                                    transforms=(cp.compress(cp.Compressor("int8")),)),
}


class Recorder:
    """The MF task, recording which clients really ran local training and what they uploaded."""

    statistics_columns = None

    def __init__(self, federation):
        self.federation, self.trained = federation, []
        self.client_ids = federation.client_ids

    def num_examples(self, clients):
        return self.federation.num_examples(clients)

    def download_bytes(self, clients, width):
        return self.federation.download_bytes(clients, width)

    def train_clients(self, params, store, clients, config, round_num):
        self.trained.append(np.array(clients))
        return self.federation.train_clients(params, store, clients, config, round_num)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_history_costs_are_sums_over_clients_that_really_trained(federation, name):
    algorithm = ALGORITHMS[name]
    task = Recorder(federation)
    state, store = fl.init_state(federation, dim=4, seed=0)
    state, history = fc.train(task, state, store, CONFIG, 6, lambda s, c: {"rmse": 0.0}, algorithm)
    width = state.params.shape[1]
    for trained, report in zip(task.trained, history.reports):
        assert np.array_equal(report.trained, trained)
        n = federation.num_examples(trained)
        assert report.examples == int(n.sum()) * CONFIG.local_epochs
        assert report.steps == int(np.sum(CONFIG.local_epochs * -(-n // CONFIG.batch_size)))
        assert report.bytes_down == int(federation.download_bytes(report.asked, width).sum())
        assert len(report.update_norms) == len(trained)
        if "compression" in name or "8-bit" in name:
            assert report.bytes_up < int(federation.download_bytes(trained, width).sum())
        else:
            assert report.bytes_up == int(federation.download_bytes(trained, width).sum())
    assert history.client_examples[-1] == sum(r.examples for r in history.reports)
    assert history.mb[-1] == pytest.approx(sum(r.bytes_down + r.bytes_up for r in history.reports) / 1e6)
    if "dropout" in name:
        asked = sum(len(r.asked) for r in history.reports)
        trained = sum(len(r.trained) for r in history.reports)
        assert trained < asked and history.mb_up[-1] < history.mb_down[-1]


def test_dropout_sends_fewer_bytes_and_computes_less(federation):
    runs = {p: fl.train_federated(federation, CONFIG, 5, dim=4, algorithm=sec.threatened(sec.Threat(dropout=p)))[2]
            for p in (0.0, 0.5)}
    assert runs[0.5].mb_up[-1] < runs[0.0].mb_up[-1]
    assert runs[0.5].client_examples[-1] < runs[0.0].client_examples[-1]
    assert runs[0.5].mb_down[-1] == runs[0.0].mb_down[-1]  # the same clients were asked


def test_poisson_sampler_varies_the_number_of_clients(federation):
    sampler = fc.poisson(0.3)
    sizes = [len(sampler(federation.client_ids, CONFIG, r).reporting) for r in range(30)]
    assert len(set(sizes)) > 3 and abs(np.mean(sizes) - 0.3 * 40) < 3
    with pytest.raises(ValueError, match="sampling rate"):
        fc.poisson(0.0)


def test_a_round_without_clients_changes_nothing_but_the_round(federation):
    state, store = fl.init_state(federation, dim=4, seed=0)
    nobody = fc.Algorithm(sampler=lambda ids, config, r: fc.Sample(ids[:0], ids[:0]))
    new, report = fc.run_round(state, federation, store, CONFIG, nobody)
    assert np.array_equal(new.params, state.params) and new.round == 1
    assert report.bytes_up == report.bytes_down == report.examples == 0


def test_clip_transform_bounds_every_client_norm(federation):
    state, store = fl.init_state(federation, dim=4, seed=0)
    updates = federation.train_clients(state.params, store, federation.client_ids[:8], CONFIG, 0)
    clipped = fc.clip(0.05)(updates, None)
    assert np.all(clipped.norms() <= 0.05 + 1e-6)
    small = updates.norms() <= 0.05
    assert np.allclose(clipped.norms()[small], updates.norms()[small])
    with pytest.raises(ValueError, match="clipping norm"):
        fc.clip(0.0)


def test_weighted_mean_by_hand():
    updates = fc.Updates(np.array([10, 11]), np.array([30, 10]), np.array([0, 0, 1]), np.array([0, 2, 2]),
                         np.array([[1.0, 1.0], [1.0, 1.0], [3.0, 3.0]], np.float32), np.zeros(2, int))
    dense = fc.weighted_mean(updates, (4, 2))
    assert dense[0].tolist() == pytest.approx([0.75, 0.75])         # weight 30/40
    assert dense[2].tolist() == pytest.approx([0.75 + 0.75] * 2)    # 30/40·1 + 10/40·3
    assert not dense[[1, 3]].any()
    assert not fc.weighted_mean(fc.Updates.empty(2), (4, 2)).any()
    kept = updates.keep([1])
    assert kept.clients.tolist() == [11] and kept.slot.tolist() == [0] and kept.rows.tolist() == [2]


def test_server_optimisers():
    params, delta, config = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32), fl.FedConfig(server_lr=0.5)
    assert fc.server_sgd(params, delta, {}, config)[0].tolist() == [[0.5, 0.5]] * 2
    momentum = fc.server_momentum(0.9)
    first, state = momentum(params, delta, {}, config)
    second, state = momentum(first, delta, state, config)
    assert second[0, 0] == pytest.approx(0.5 + 0.5 * 1.9)          # v = 0.9·1 + 1
    adam = fc.server_adam(0.9, 0.99, 1e-3)
    step, state = adam(params, delta, {}, config)
    assert step[0, 0] == pytest.approx(0.5 * 0.1 / (np.sqrt(0.01) + 1e-3), rel=1e-5)  # m = 0.1, v = 0.01
    with pytest.raises(ValueError):
        fc.server_adam(tau=0.0)


@pytest.mark.parametrize("name", ["FedAvgM", "FedAdam", "FedProx"])
def test_drift_remedies_learn(federation, name):
    config, algorithm = {
        "FedAvgM": (dataclasses.replace(CONFIG, server_lr=0.5), fc.Algorithm(server_optimizer=fc.server_momentum(0.9))),
        "FedAdam": (dataclasses.replace(CONFIG, server_lr=0.03), fc.Algorithm(server_optimizer=fc.server_adam())),
        "FedProx": (dataclasses.replace(CONFIG, prox_mu=0.1), fc.FEDAVG)}[name]
    history = fl.train_federated(federation, config, 15, dim=4, algorithm=algorithm)[2]
    assert history.train_rmse[-1] < history.train_rmse[0] - 0.05
    assert set(history.reports[0].__dict__) >= {"bytes_up", "examples"}


@pytest.mark.parametrize("bad, message", [
    (dict(clients_per_round=0), "clients per round"), (dict(clients_per_round=2.5), "clients per round"),
    (dict(local_epochs=0), "local epochs"), (dict(batch_size=-1), "batch size"),
    (dict(client_lr=0.0), "client learning rate"), (dict(server_lr=float("nan")), "server learning rate"),
    (dict(prox_mu=-1.0), "FedProx"),
])
def test_impossible_settings_are_explained(bad, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CONFIG, **bad).check(40)
    with pytest.raises(ValueError, match="1..40"):
        dataclasses.replace(CONFIG, clients_per_round=41).check(40)


def test_history_reads_metrics_and_notes_as_attributes():
    history = fc.History({"accuracy": [0.1, 0.2]}, [], {"dissimilarity": 3.0})
    assert history.accuracy == [0.1, 0.2] and history.dissimilarity == 3.0 and history.mb == [0.0]
    with pytest.raises(AttributeError, match="no attribute or metric 'rmse'"):
        history.rmse


class TwoClients:
    """A task of two clients whose update is fixed: Δ = (1, 1, 1) from client 0, (3, 3, 3) from client 1;
    column 2 holds a running statistic."""

    client_ids = np.array([0, 1])
    statistics_columns = slice(2, None)

    def num_examples(self, clients):
        return np.ones(len(clients), int)

    def download_bytes(self, clients, width):
        return np.full(len(clients), 4 * width)

    def train_clients(self, params, state, clients, config, round_num):
        values = np.array([[1.0] * 3, [3.0] * 3], np.float32)[clients]
        return fc.Updates(clients, self.num_examples(clients), np.arange(len(clients)), np.zeros(len(clients), int),
                          values, self.download_bytes(clients, 3))


def test_running_statistics_are_averaged_whatever_the_server_optimiser():
    config = fl.FedConfig(clients_per_round=2, server_lr=0.01)
    state, report = fc.run_round(fc.ServerState(np.zeros((1, 3), np.float32)), TwoClients(), fc.ClientState(), config,
                                 fc.Algorithm(server_optimizer=fc.server_adam()))
    assert state.params[0, 2] == pytest.approx(2.0)                        # the plain mean of 1 and 3
    assert state.params[0, 0] == pytest.approx(0.01 * 0.2 / (np.sqrt(0.04) + 1e-3), rel=1e-5)  # Adam's step
    assert report.bytes_down == report.bytes_up == 2 * 12


@pytest.mark.parametrize("name", ["uniform", "poisson (DP)", "top-10% compression"])
def test_an_extended_run_equals_a_run_of_that_many_rounds(federation, name):
    """The rounds slider of a panel: asking for 2, then 5, then 3 rounds gives exactly the runs of 2, 5 and 3
    rounds (DP noise, compression residuals and server state included), and trains only missing rounds."""
    algorithm = ALGORITHMS[name]

    def evaluate(state, store):
        return {"test_rmse": fl.federated_rmse(state, store, federation, federation.test)}

    def fresh():
        state, store = fl.init_state(federation, 4)
        return state, store

    run = fc.ExtendableRun(federation, *fresh(), CONFIG, evaluate, algorithm)
    for rounds, trained_after in ((2, 2), (5, 5), (3, 5)):
        extended = run.first(rounds)
        _, direct = fc.train(federation, *fresh(), CONFIG, rounds, evaluate, algorithm)
        assert extended.test_rmse == direct.test_rmse and run.rounds_run == trained_after
        assert [r.bytes_up for r in extended.reports] == [r.bytes_up for r in direct.reports]
    with pytest.raises(ValueError, match="whole number"):
        run.first(0)


def test_every_task_of_the_course_implements_the_task_protocol(federation):
    from helpers import federated_vision as fv, flower_rounds as fr, fedsoftmax as fs

    assert isinstance(federation, fc.Task) and isinstance(TwoClients(), fc.Task)
    for task_class in (fv.ImageTask, fv.HeadTask, fr.NodeFederation, fs.SoftmaxFederation):  # client_ids: per instance
        missing = [name for name in ("statistics_columns", "num_examples", "download_bytes", "train_clients")
                   if not hasattr(task_class, name)]
        assert not missing, f"{task_class.__name__} lacks {missing} of fedcore.Task"
    assert not isinstance(object(), fc.Task)


def test_the_run_cache_is_generic_over_tasks_and_metrics():
    starts = []

    def start(key):
        starts.append(key)
        return TwoClients(), fc.ServerState(np.zeros((1, 3), np.float32)), fc.ClientState()

    cache = fc.RunCache(start, lambda task, state, cs: {"first": float(state.params[0, 0])})
    config = fl.FedConfig(clients_per_round=2)
    assert cache.get(config, key="a").first(3).first == pytest.approx([0.0, 2.0, 4.0, 6.0])
    assert cache.get(config, key="a") is cache.get(config, key="a") and starts == ["a"]
    cache.get(config, key="b").first(1)
    assert starts == ["a", "b"]
    with pytest.raises(ValueError, match="key"):
        cache.get(config, fc.Algorithm(server_optimizer=fc.server_adam()))


def test_transforms_read_the_rounds_own_task_config_and_state(federation):
    """A transform sees the task being trained, the config of the run and the state before the round."""
    seen = []

    def spy(updates, context):
        seen.append((context.task, context.config, context.state.round, context.clients_state))
        return updates

    state, store = fl.init_state(federation, 4)
    fc.train(federation, state, store, CONFIG, 2, lambda s, c: {}, fc.Algorithm(transforms=(spy,)))
    assert [(task, config, r) for task, config, r, _ in seen] == [(federation, CONFIG, 0), (federation, CONFIG, 1)]
    assert all(clients_state is store for *_, clients_state in seen)


def test_an_extended_runs_history_keeps_its_notes(federation):
    state, store = fl.init_state(federation, 4)
    run = fc.ExtendableRun(federation, state, store, CONFIG, lambda s, c: {})
    run.history.notes["source accuracy"] = 0.75
    first = run.first(1)
    assert first.notes == {"source accuracy": 0.75}
    first.notes["other"] = 1.0                                   # a copy: the run's own notes stay as they were
    assert run.history.notes == {"source accuracy": 0.75}


# ---------------------------------------------------------------- what mutation testing found unchecked


def three_clients():
    """Clients 10, 11, 12 with rows {0, 2}, {2}, {1, 3} of a (4, 2) table."""
    return fc.Updates(np.array([10, 11, 12]), np.array([30, 10, 20]), np.array([0, 0, 1, 2, 2]),
                      np.array([0, 2, 2, 1, 3]), np.arange(10, dtype=np.float32).reshape(5, 2),
                      np.array([100, 200, 300]))


def test_keep_carries_every_field_of_the_kept_clients_in_client_order():
    kept = three_clients().keep([2, 0])                      # positions in any order: kept in client order
    assert kept.clients.tolist() == [10, 12] and kept.num_examples.tolist() == [30, 20]
    assert kept.upload_bytes.tolist() == [100, 300]
    assert kept.slot.tolist() == [0, 0, 1, 1] and kept.rows.tolist() == [0, 2, 1, 3]
    assert kept.values.tolist() == [[0, 1], [2, 3], [6, 7], [8, 9]]
    empty = fc.Updates.empty(3)
    assert empty.values.shape == (0, 3) and empty.values.dtype == np.float32
    assert not fc.weighted_mean(empty, (2, 3)).any()


def test_server_optimisers_carry_their_state_from_round_to_round():
    params, delta, config = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32), fl.FedConfig(server_lr=0.5)
    adam = fc.server_adam(0.9, 0.99, 1e-3)
    first, state = adam(params, delta, {}, config)
    second, state = adam(first, delta, state, config)
    m, v = 0.9 * 0.1 + 0.1, 0.99 * 0.01 + 0.01                      # second round: m = 0.19, v = 0.0199
    assert second[0, 0] == pytest.approx(first[0, 0] + 0.5 * m / (np.sqrt(v) + 1e-3), rel=1e-5)
    assert state["m"][0, 0] == pytest.approx(m) and state["v"][0, 0] == pytest.approx(v)
    assert second.dtype == np.float32
    plain, _ = fc.server_adam(0.0, 0.0, 1e-3)(params, delta, {}, config)   # β = 0 allowed: sign-like steps
    assert plain[0, 0] == pytest.approx(0.5 / (1 + 1e-3), rel=1e-5)
    velocity, _ = fc.server_momentum(0.0)(params, delta, {}, config)      # β = 0 is plain server SGD
    assert velocity.tolist() == fc.server_sgd(params, delta, {}, config)[0].tolist()


@pytest.mark.parametrize("make, message", [
    (lambda: fc.server_momentum(1.0), r"momentum β must lie in \[0, 1\), got 1.0"),
    (lambda: fc.server_momentum(-0.1), "momentum β"),
    (lambda: fc.server_adam(beta1=1.0), "need 0 ≤ β₁, β₂ < 1 and τ > 0, got β₁ = 1.0"),
    (lambda: fc.server_adam(beta1=1.5), "β₁ = 1.5"),
    (lambda: fc.server_adam(beta2=1.0), "β₂ = 1.0"),
    (lambda: fc.server_adam(beta2=1.5), "β₂ = 1.5"),
    (lambda: fc.poisson(1.5), r"sampling rate q = clients per round / N must lie in \(0, 1\], got 1.5"),
    (lambda: fc.poisson(0.0), "sampling rate"),
    (lambda: fc.with_dropout(fc.uniform, 1.0), r"dropout share must lie in \[0, 1\), got 1.0"),
    (lambda: fc.with_dropout(fc.uniform, 1.5), "dropout share"),
    (lambda: fc.noisy_sum(-1.0, 5.0), "noise standard deviation must be ≥ 0, got -1.0"),
    (lambda: fc.noisy_sum(1.0, 0.0), r"the denominator \(expected clients per round\) must be > 0, got 0.0"),
])
def test_impossible_hook_settings_are_explained(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_hooks_accept_their_boundary_values():
    ids, config = np.arange(50), fl.FedConfig(clients_per_round=5, seed=3)
    assert fc.poisson(1.0)(ids, config, 0).reporting.tolist() == ids.tolist()   # q = 1: everyone, every round
    assert fc.with_dropout(fc.uniform, 0.0)(ids, config, 0).reporting.size == 5  # no dropout: all asked report
    context = fc.RoundContext(fc.ServerState(np.zeros((4, 2), np.float32), 0), None, None, config)
    noiseless = fc.noisy_sum(0.0, 0.5)(three_clients(), (4, 2), context)         # σ = 0 allowed, q·N below 1 too
    assert noiseless.dtype == np.float32
    np.testing.assert_allclose(noiseless, fc.sum_rows(three_clients(), (4, 2), np.ones(3)) / 0.5)


def test_dropout_is_seeded_by_seed_and_round():
    ids, config = np.arange(200), fl.FedConfig(clients_per_round=100)
    drop = fc.with_dropout(fc.uniform, 0.5, seed=4)
    assert drop(ids, config, 3).reporting.tolist() == drop(ids, config, 3).reporting.tolist()
    assert drop(ids, config, 3).reporting.tolist() != drop(ids, config, 4).reporting.tolist()
    assert drop(ids, config, 3).reporting.tolist() != fc.with_dropout(fc.uniform, 0.5, seed=5)(ids, config, 3).reporting.tolist()


def test_clip_keeps_float32_values():
    clipped = fc.clip(0.5)(three_clients(), None)
    assert clipped.values.dtype == np.float32 and np.all(clipped.norms() <= 0.5 + 1e-6)


def test_fedsgd_config_keeps_its_penalty_and_seed():
    config = fc.FedConfig.fedsgd(20, learning_rate=3.0)
    assert (config.local_epochs, config.batch_size, config.l2, config.seed) == (1, 0, 0.02, 0)
    assert config.client_lr == 0.1     # the rate of the private vectors' step on the device
    assert config.client_lr * config.server_lr == pytest.approx(3.0)
    assert fc.FedConfig.fedsgd(20, 3.0, l2=0.1, seed=7).l2 == 0.1
    assert fc.FedConfig.fedsgd(20, 3.0, seed=7).seed == 7


def test_a_run_grows_by_exactly_the_rounds_asked_and_training_prints_nothing_by_default(federation, capsys):
    cache = fl.RunCache(federation, dim=4)
    run = cache.get(CONFIG)
    run.first(1)
    assert run.rounds_run == 1
    run.first(2)                                                   # one missing round is trained, not skipped
    assert run.rounds_run == 2 and len(run.first(2).test_rmse) == 3
    state, store = fl.init_state(federation, dim=4, seed=0)
    fc.train(federation, state, store, CONFIG, 2, lambda s, c: {"rmse": 0.0})
    printed = capsys.readouterr()
    assert printed.err == "" and printed.out == ""               # no progress bar unless asked for
    with pytest.raises(ValueError, match="^a run with its own algorithm needs a key that names its settings$"):
        cache.get(CONFIG, fc.Algorithm(server_optimizer=fc.server_adam()))
    history = run.first(2)
    assert history.seconds == pytest.approx([0.0, *np.cumsum([r.seconds for r in history.reports])])
    assert history.mb_up == pytest.approx([0.0, *np.cumsum([r.bytes_up / 1e6 for r in history.reports])])
    with pytest.raises(AttributeError, match="History has no attribute or metric 'nothing'"):
        fc.History().nothing


def test_local_steps_count_every_epoch_and_none_for_an_empty_client():
    full_batch = fc.FedConfig(local_epochs=3, batch_size=0)
    assert full_batch.local_steps([0, 1, 5]).tolist() == [0, 3, 3]     # one full batch per epoch, if any data
    batches = fc.FedConfig(local_epochs=2, batch_size=4)
    assert batches.local_steps([0, 1, 4, 5, 9]).tolist() == [0, 2, 2, 4, 6]   # E · ⌈n / B⌉


def test_weighted_mean_of_one_example_is_that_client_s_update():
    one = fc.Updates(np.array([7]), np.array([1]), np.array([0]), np.array([1]), np.array([[2.0, -4.0]], np.float32),
                     np.array([8]))
    assert fc.weighted_mean(one, (3, 2)).tolist() == [[0.0, 0.0], [2.0, -4.0], [0.0, 0.0]]


def test_defaults_are_the_documented_ones():
    ids, config = np.arange(100), fl.FedConfig(clients_per_round=40)
    params, delta, step_config = np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32), fl.FedConfig(server_lr=1.0)
    state = fc.server_momentum()(params, delta, {}, step_config)[1]
    assert fc.server_momentum()(params, delta, state, step_config)[0][0, 0] == pytest.approx(1.9)  # v = 0.9 · 1 + 1
    assert fc.with_dropout(fc.uniform, 0.5)(ids, config, 2).reporting.tolist() == \
        fc.with_dropout(fc.uniform, 0.5, seed=0)(ids, config, 2).reporting.tolist()
    context = fc.RoundContext(fc.ServerState(np.zeros((4, 2), np.float32), 3), None, None, config)
    np.testing.assert_array_equal(fc.noisy_sum(1.0, 2.0)(three_clients(), (4, 2), context),
                                  fc.noisy_sum(1.0, 2.0, seed=0)(three_clients(), (4, 2), context))


def test_training_refuses_impossible_rounds_and_shows_progress_when_asked(federation, capsys):
    state, store = fl.init_state(federation, dim=4, seed=0)
    for rounds in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"^rounds must be a whole number ≥ 1, got {rounds}$"):
            fc.train(federation, state, store, CONFIG, rounds, lambda s, c: {"rmse": 0.0})
    fc.train(federation, state, store, CONFIG, 1, lambda s, c: {"rmse": 0.0}, progress=True)
    assert "rounds" in capsys.readouterr().err                     # the bar, named
    fl.RunCache(federation, dim=4).get(CONFIG).first(1, progress=True)
    assert "rounds" in capsys.readouterr().err


def test_a_cached_run_uses_its_own_algorithm(federation):
    cache = fl.RunCache(federation, dim=4)
    adam = fc.Algorithm(server_optimizer=fc.server_adam())
    plain = cache.get(CONFIG).first(2)
    with_adam = cache.get(CONFIG, adam, key="FedAdam").first(2)
    direct = fl.train_federated(federation, CONFIG, 2, dim=4, algorithm=adam)[2]
    assert with_adam.test_rmse == direct.test_rmse != plain.test_rmse


def test_sum_rows_takes_its_dense_shortcut_only_for_whole_tables_in_row_order():
    # two clients, each sending every row of a (2, 1) table, but the second in reverse order: no shortcut
    shuffled = fc.Updates(np.array([1, 2]), np.array([1, 1]), np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]),
                          np.array([[1.0], [2.0], [10.0], [20.0]], np.float32), np.array([8, 8]))
    assert fc.sum_rows(shuffled, (2, 1), np.ones(2)).ravel().tolist() == [21.0, 12.0]
    in_order = dataclasses.replace(shuffled, rows=np.array([0, 1, 0, 1]))
    assert fc.sum_rows(in_order, (2, 1), np.ones(2)).ravel().tolist() == [11.0, 22.0]
    for updates in (shuffled, in_order):                           # both paths honour the dtype asked for
        assert fc.sum_rows(updates, (2, 1), np.ones(2), np.float64).dtype == np.float64
        assert fc.sum_rows(updates, (2, 1), np.ones(2)).dtype == np.float32
    wide = dataclasses.replace(in_order, rows=np.array([0, 1, 0, 1]), values=np.ones((4, 2), np.float32))
    assert fc.sum_rows(wide, (2, 2), np.array([1.0, 2.0])).tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_norms_cover_every_client_and_row_bytes_count_the_index():
    silent = fc.Updates(np.array([1, 2, 3]), np.array([1, 1, 1]), np.array([0, 1]), np.array([0, 0]),
                        np.array([[3.0, 4.0], [0.0, 1.0]], np.float32), np.zeros(3, int))
    assert silent.norms().tolist() == [5.0, 1.0, 0.0]             # the third client sent no row
    assert fc.row_bytes(3) == 3 * 4 + 4 and fc.row_bytes(3, indexed=False) == 12


def test_a_round_reports_its_own_round_and_time_and_keeps_the_optimiser_state(federation):
    state, store = fl.init_state(federation, dim=4, seed=0)
    state = fc.ServerState(state.params, 5)
    new, report = fc.run_round(state, federation, store, CONFIG, fc.Algorithm(server_optimizer=fc.server_adam()))
    assert report.round == 5 and new.round == 6 and 0 <= report.seconds < 60
    assert set(new.optimizer) == {"m", "v"} and report.trained.dtype == np.int64
    with pytest.raises(ValueError, match="clients per round must be a whole number ≥ 1"):
        dataclasses.replace(CONFIG, clients_per_round=0).check()


def test_batches_cover_every_example_once_a_pass_in_seeded_order():
    passes = fc.batches(10, 4, 3, [7, 1])
    assert len(passes) == 3 and [len(b) for b in passes[0]] == [4, 4, 2]
    for epoch, batches in enumerate(passes):
        order = np.concatenate(batches)
        assert np.array_equal(order, np.random.default_rng([7, 1, epoch]).permutation(10))
    assert not np.array_equal(np.concatenate(passes[0]), np.concatenate(passes[1]))   # a new order each pass
    whole = fc.batches(10, 0, 2, [7, 1])                                                # 0: one full batch
    assert [[len(x) for x in b] for b in whole] == [[10], [10]]
    assert [[len(x) for x in b] for b in fc.batches(10, 25, 1, [0])] == [[10]]          # larger than the data
    assert fc.batches(0, 0, 2, [0]) == [[], []] and fc.batches(0, 3, 1, [0]) == [[]]  # nothing to train on
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="batch size must be a whole number"):
            fc.batches(10, bad, 1, [0])


def test_a_client_s_local_schedule_is_its_batches_seeded_by_seed_round_and_client():
    config = fc.FedConfig(clients_per_round=1, local_epochs=3, batch_size=4, seed=5)
    schedule = fc.local_schedule(10, config, np.int64(8), 2)
    expected = fc.batches(10, 4, 3, [5, 2, 8])
    assert [[b.tolist() for b in epoch] for epoch in schedule] == [[b.tolist() for b in epoch] for epoch in expected]


def test_client_rate_follows_the_cosine_schedule_from_its_first_round():
    """η_c(t) = η_c · ½ (1 + cos(π (t + ½) / R)): lessons 07 and 09 decay the client rate on it. The
    half-round offset means round 0 already steps a little below η_c and round R − 1 a little above 0,
    and a one-round schedule (R = 1) runs at half the rate, not the full one."""
    config = dataclasses.replace(CONFIG, client_lr=0.2, cosine_rounds=10)
    for t in (0, 3, 9):
        assert config.client_rate(t) == pytest.approx(0.2 * 0.5 * (1 + np.cos(np.pi * (t + 0.5) / 10)), rel=1e-12)
    assert config.client_rate(0) == pytest.approx(0.19877, abs=1e-5)     # just below η_c
    assert config.client_rate(9) == pytest.approx(0.00123, abs=1e-5)     # just above 0
    assert dataclasses.replace(config, cosine_rounds=1).client_rate(0) == pytest.approx(0.1)
    assert dataclasses.replace(config, cosine_rounds=0).client_rate(7) == 0.2   # no schedule: constant


@pytest.mark.parametrize("rates, named", [((0.0, 1.0), "client learning rate must be > 0, got 0.0"),
                                          ((1.0, -2.0), "server learning rate must be > 0, got -2.0")])
def test_a_config_names_the_rate_it_refuses(rates, named):
    """The panels print the refusal as it is: it must say which of the two rates is wrong."""
    with pytest.raises(ValueError, match=named):
        dataclasses.replace(CONFIG, client_lr=rates[0], server_lr=rates[1]).check()


@pytest.mark.parametrize("optimizer", [fc.server_momentum(0.9), fc.server_adam()], ids=["momentum", "adam"])
def test_server_optimiser_state_starts_at_zero_in_the_update_dtype(optimizer):
    """The first round starts the velocity (or m and v) at zeros shaped and typed like Δ, so the state
    a cache keeps is a plain float array, never a NumPy object array."""
    params, delta = np.zeros((3, 2), np.float32), np.full((3, 2), 0.5, np.float32)
    new_params, state = optimizer(params, delta, {}, CONFIG)
    assert new_params.dtype == np.float32
    for value in state.values():
        assert value.dtype == np.float32 and value.shape == delta.shape


def test_a_history_survives_copying_and_pickling():
    """copy and pickle look attributes up on an instance that has no metrics yet; the lookup of a
    metric must then say "no such attribute", not crash (a cached run is copied, a bench result pickled)."""
    import copy
    import pickle

    history = fc.History({"valid_hr": [0.1, 0.2]}, notes={"chosen": 1})
    for twin in (copy.deepcopy(history), pickle.loads(pickle.dumps(history))):
        assert twin.valid_hr == [0.1, 0.2] and twin.chosen == 1
    with pytest.raises(AttributeError, match="no attribute or metric 'missing'"):
        history.missing


def test_keeping_no_client_gives_empty_updates():
    """A round where every sampled client dropped out keeps none of them: an empty message, not an
    indexing error (an empty list of positions is still a list of integer positions)."""
    updates = fc.Updates(np.array([3, 7]), np.array([5, 2]), np.array([0, 0, 1]), np.array([0, 2, 1]),
                         np.ones((3, 4), np.float32), np.array([40, 20]))
    none = updates.keep([])
    assert len(none.clients) == 0 and none.values.shape == (0, 4) and len(none.rows) == 0
    second = updates.keep([1])
    assert second.clients.tolist() == [7] and second.slot.tolist() == [0] and second.rows.tolist() == [1]
