"""Lessons 07 and 09: Dirichlet partitions, FedAvg on Keras models, update compression, personalisation."""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np
import pandas as pd
import pytest

from helpers import compression as cp
from helpers import fedcore as fc
from helpers import federated as fl
from helpers import federated_vision as fv
from helpers import metrics
from helpers import partition
from helpers import vision_transfer as vt
from test_federated import federation  # noqa: F401  (the planted federation fixture)

# ---------------------------------------------------------------- Dirichlet partition

LABELS = np.repeat(np.arange(5), 400)  # 5 classes × 400 examples


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_every_example_is_assigned_exactly_once(alpha):
    parts, shares = partition.dirichlet_partition(LABELS, 20, alpha, seed=3)
    assert len(parts) == 20 and shares.shape == (5, 20)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(LABELS)))
    assert min(len(p) for p in parts) >= 10


def test_large_alpha_tends_to_equal_class_shares_and_small_alpha_skews():
    iid = partition.class_counts(LABELS, partition.dirichlet_partition(LABELS, 10, 1e4, seed=0)[0], 5)
    fractions = iid / iid.sum(axis=0, keepdims=True)
    assert np.abs(fractions - 0.1).max() < 0.02          # each client holds ≈ 1/N of every class
    skewed = partition.class_counts(LABELS, partition.dirichlet_partition(LABELS, 10, 0.1, seed=0)[0], 5)
    assert partition.classes_seen(skewed).mean() < 2.5 < partition.classes_seen(iid).mean()


def test_partition_is_seeded():
    a, _ = partition.dirichlet_partition(LABELS, 8, 0.5, seed=1)
    b, _ = partition.dirichlet_partition(LABELS, 8, 0.5, seed=1)
    c, _ = partition.dirichlet_partition(LABELS, 8, 0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_test_split_follows_the_same_shares():
    shares = np.array([[1.0, 0.0], [0.25, 0.75]])
    parts = partition.split_by_shares(np.repeat([0, 1], 40), shares, np.random.default_rng(0))
    assert [np.bincount(np.repeat([0, 1], 40)[p], minlength=2).tolist() for p in parts] == [[40, 10], [0, 30]]


@pytest.mark.parametrize("kwargs, message", [
    ({"n_clients": 5, "alpha": 0.0}, "α must be a positive"),
    ({"n_clients": 5, "alpha": float("nan")}, "α must be a positive"),
    ({"n_clients": 0, "alpha": 1.0}, "whole number ≥ 1"),
    ({"n_clients": 300, "alpha": 1.0}, "only 2000 available"),
    ({"n_clients": 150, "alpha": 0.01, "max_tries": 3}, "raise α"),
])
def test_impossible_partitions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        partition.dirichlet_partition(LABELS, **kwargs)


# ---------------------------------------------------------------- compression


def test_top_k_keeps_exactly_the_largest_entries():
    values = np.random.default_rng(0).normal(size=(30, 9)).astype(np.float32)
    kept = cp.top_k(values, 0.1)
    k = cp.kept_count(values.size, 0.1)
    assert k == 27 and np.count_nonzero(kept) == k
    np.testing.assert_array_equal(kept[kept != 0], values[kept != 0])           # kept entries exact
    dropped = np.abs(values[kept == 0])
    assert dropped.max() <= np.abs(values[kept != 0]).min()                       # error ≤ smallest kept
    assert np.abs(values - kept).max() == pytest.approx(dropped.max())
    np.testing.assert_array_equal(cp.top_k(values, 1.0), values)


def test_int8_round_trip_error_is_at_most_half_a_step():
    rng = np.random.default_rng(1)
    for scale in (1e-4, 1.0, 300.0):
        values = (rng.normal(size=(50, 5)) * scale).astype(np.float32)
        codes, step = cp.quantise_int8(values)
        assert codes.dtype == np.int8 and np.abs(codes).max() == 127
        error = np.abs(cp.dequantise_int8(codes, step) - values)
        assert error.max() <= step / 2 * (1 + 1e-5) and step == pytest.approx(np.abs(values).max() / 127)
    codes, step = cp.quantise_int8(np.zeros((3, 2), np.float32))
    assert not codes.any() and step == 1.0


def test_upload_bytes_per_method():
    block = np.ones((10, 33), np.float32)
    assert cp.encode(block, cp.Compressor("none"))[1] == 10 * (4 + 4 * 33)
    assert cp.encode(block, cp.Compressor("int8"))[1] == 10 * (4 + 33) + 4
    assert cp.encode(block, cp.Compressor("topk", 0.05))[1] == cp.kept_count(330, 0.05) * 8


def test_error_feedback_loses_nothing_only_delays():
    """Σ sent over rounds + the final residual = Σ of the true updates."""
    rng = np.random.default_rng(2)
    updates = [rng.normal(size=(6, 4)).astype(np.float32) for _ in range(8)]
    for compressor in (cp.Compressor("topk", 0.1), cp.Compressor("int8")):
        residual, sent = np.zeros((6, 4), np.float32), np.zeros((6, 4), np.float32)
        for update in updates:
            decoded, residual, _ = cp.compress_with_feedback(update, residual, compressor)
            sent += decoded
        np.testing.assert_allclose(sent + residual, np.sum(updates, axis=0), atol=1e-5)
    decoded, residual, _ = cp.compress_with_feedback(updates[0], np.zeros((6, 4), np.float32),
                                                     cp.Compressor("topk", 0.1, error_feedback=False))
    assert not residual.any()


@pytest.mark.parametrize("compressor, message", [
    (cp.Compressor("zip"), "unknown compression"),
    (cp.Compressor("topk", 0.0), r"must lie in \(0, 1\]"),
    (cp.Compressor("topk", 1.5), r"must lie in \(0, 1\]"),
])
def test_bad_compressors_are_refused(compressor, message):
    with pytest.raises(ValueError, match=message):
        compressor.check()


def test_rows_line_up_with_the_clients_ratings(federation):
    state, store = fl.init_state(federation, dim=3)
    clients = np.array([2, 7, 11])
    updates = fl.local_training(federation, state.params, store, clients, fl.FedConfig(3, 1, 4, 0.1), 0)
    for k, client in enumerate(clients):
        np.testing.assert_array_equal(updates.client(k)[0], federation.client_data(client)[0])


def test_uncompressed_uploads_cost_the_touched_rows(federation):
    config = fl.FedConfig(clients_per_round=8, local_epochs=1, batch_size=4, client_lr=0.1, server_lr=2.0)
    history = cp.run_compressed(federation, config, cp.Compressor("none"), rounds=4, dim=3)
    touched_up = [int(federation.download_bytes(r.trained, 4).sum()) for r in history.reports]
    assert [r.bytes_up for r in history.reports] == touched_up
    assert history.mb_up[-1] == pytest.approx(sum(touched_up) / 1e6)


def test_compressed_training_still_learns_and_sends_less(federation):
    config = fl.FedConfig(clients_per_round=10, local_epochs=1, batch_size=4, client_lr=0.1, server_lr=3.0)
    plain = cp.run_compressed(federation, config, cp.Compressor("none"), rounds=15, dim=3)
    for compressor in (cp.Compressor("topk", 0.2), cp.Compressor("int8")):
        history = cp.run_compressed(federation, config, compressor, rounds=15, dim=3)
        assert history.mb_up[-1] < 0.5 * plain.mb_up[-1]
        assert history.train_rmse[-1] < history.train_rmse[0]


def test_client_compute_counts_local_epochs(federation):
    config = fl.FedConfig(clients_per_round=5, local_epochs=3, batch_size=4)
    _, _, history = fl.train_federated(federation, config, rounds=2, dim=3)
    expected = [0]
    for r in range(2):
        expected.append(expected[-1] + 3 * int(federation.num_examples(fc.uniform(federation.client_ids, config, r).reporting).sum()))
    assert history.client_examples == expected


def test_personalisation_on_ratings(federation):
    config = fl.FedConfig(clients_per_round=10, local_epochs=1, batch_size=4, client_lr=0.1, server_lr=3.0)
    server, store, _ = fl.train_federated(federation, config, rounds=10, dim=3)
    before = store.user_vec.copy()
    refit = fl.refit_private(server, store, federation, fl.FedConfig(25, 3, 4, 0.05))
    np.testing.assert_array_equal(store.user_vec, before)                          # the input is untouched
    assert fl.federated_rmse(server, refit, federation, federation.train) < fl.federated_rmse(
        server, store, federation, federation.train)
    per_client = fl.per_client_rmse(server, store, federation, federation.test)
    assert per_client.index.tolist() == sorted(federation.test["user_idx"].unique())
    counts = federation.test.groupby("user_idx").size()
    pooled = np.sqrt((per_client**2 * counts).sum() / counts.sum())
    assert pooled == pytest.approx(fl.federated_rmse(server, store, federation, federation.test), rel=1e-5)
    global_only = fl.without_private(store)
    assert not global_only.user_vec.any() and not global_only.user_bias.any()


# ---------------------------------------------------------------- FedAvg on Keras models


def coloured_task(n_per_class: int = 40, seed: int = 0) -> vt.Task:
    """Synthetic 32×32 images whose colour says the class (unit tests only): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    palette = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30], [30, 220, 220]])

    def images(n):
        y = np.repeat(np.arange(5), n)
        x = np.clip(palette[y][:, None, None, :] + rng.normal(0, 40, (len(y), 32, 32, 3)), 0, 255).astype(np.uint8)
        return x, y

    (x_train, y_train), (x_test, y_test) = images(n_per_class), images(10)
    return vt.Task("colours", x_train, y_train, x_test, y_test, ["r", "g", "b", "y", "c"])


@pytest.fixture(scope="module")
def task():
    return coloured_task()


@pytest.fixture(scope="module")
def source():
    keras.utils.set_random_seed(5)
    extractor = vt.build_extractor(seed=5)
    for layer in extractor.layers:  # "pre-trained": weights moved away from a fresh initialisation
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel.assign(layer.kernel * 1.5 + 0.01)
    return extractor


def test_pretrained_start_is_exactly_the_source_weights(task, source):
    original = [w.numpy().copy() for w in source.weights]
    model = fv.federated_model("pretrained", source, 5)
    extractor = model.model.get_layer("extractor")
    for mine, theirs in zip(extractor.weights, source.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    model.local_train(clients.x_train[0], clients.y_train[0], 1, 16, 0.05, [0, 0, 0])
    assert not np.array_equal(extractor.weights[0].numpy(), source.weights[0].numpy())  # training moved it
    model.reset()
    for mine, theirs in zip(extractor.weights, source.weights):                            # and reset restores it
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for now, before in zip(source.weights, original):                                    # the source is never touched
        np.testing.assert_array_equal(now.numpy(), before)


def test_fedavg_of_one_client_is_that_clients_local_training(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    config = fl.FedConfig(clients_per_round=1, local_epochs=1, batch_size=16, client_lr=0.05)
    model.reset()
    state = fc.ServerState(model.get_flat())
    new, report = fc.run_round(state, fv.ImageTask(model, clients), fc.ClientState(), config)
    (k,) = report.trained
    model.set_flat(state.params)
    model.local_train(clients.x_train[k], clients.y_train[k], 1, 16, 0.05, [config.seed, 0, int(k)])
    np.testing.assert_allclose(new.params, model.get_flat(), atol=1e-6)
    assert report.bytes_up == report.bytes_down == model.n_shared() * 4


def test_a_cnn_client_with_batch_size_0_takes_one_full_batch_per_epoch(task):
    """FedConfig allows batch size 0 (one full batch) for every task; the CNN clients too."""
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    config = fl.FedConfig(clients_per_round=1, local_epochs=2, batch_size=0, client_lr=0.05)
    state = fc.ServerState(model.get_flat())
    new, report = fc.run_round(state, fv.ImageTask(model, clients), fc.ClientState(), config)
    (k,) = report.trained
    model.set_flat(state.params)
    model.local_train(clients.x_train[k], clients.y_train[k], 2, len(clients.y_train[k]), 0.05, [config.seed, 0, int(k)])
    np.testing.assert_allclose(new.params, model.get_flat(), atol=1e-6)


def test_class_mean_head_is_the_nearest_class_mean_classifier(task, source):
    model = fv.federated_model("pretrained", source, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    extractor = [w.numpy().copy() for w in model.extractor.weights]
    started = time.perf_counter()
    report = fv.class_mean_head(model, clients)
    assert 0 < report.seconds <= time.perf_counter() - started                # the round's own wall-clock time
    for now, then in zip(model.extractor.weights, extractor):                   # features only read
        np.testing.assert_array_equal(now.numpy(), then)
    train = vt.features(model.extractor, np.concatenate(clients.x_train))
    test = vt.features(model.extractor, task.x_test)
    central = vt.nearest_mean_accuracy(train, np.concatenate(clients.y_train), test, task.y_test)
    assert model.accuracy(task.x_test, task.y_test) == pytest.approx(central, abs=1e-9)
    assert report.bytes_up == 4 * 5 * (train.shape[1] + 1) * 4 and report.examples == 0 == report.steps
    assert list(report.trained) == list(report.asked) == [0, 1, 2, 3] and report.round == 0
    model_bytes = 4 * model.n_shared()                                         # the whole model, no row indices
    assert report.bytes_down == 4 * model_bytes and report.dense_bytes == 2 * 4 * model_bytes
    features = [vt.features(model.extractor, x) for x in clients.x_train]
    sums = [np.stack([f[y == c].sum(axis=0) for c in range(5)]) for f, y in zip(features, clients.y_train)]
    np.testing.assert_allclose(report.update_norms, [np.linalg.norm(v) for v in sums], rtol=1e-5)


def test_a_class_no_client_holds_is_explained(task, source):
    model = fv.federated_model("pretrained", source, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    without_last = dataclasses.replace(clients, y_train=[np.minimum(y, 3) for y in clients.y_train])
    with pytest.raises(ValueError, match=r"class\(es\) \[4\] have no training image"):
        fv.class_mean_head(model, without_last)


def test_the_head_round_counts_as_one_of_the_rounds(task, source):
    model = fv.federated_model("pretrained", source, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    config = fl.FedConfig(clients_per_round=2, local_epochs=1, batch_size=16, client_lr=0.05, cosine_rounds=3)
    _, history = fv.train_fedavg(model, clients, task.x_test, task.y_test, config, rounds=3, head_round=True)
    assert len(history.valid_accuracy) == 4 and len(history.reports) == 3
    assert history.reports[0].examples == 0 < history.reports[1].examples
    assert [r.round for r in history.reports] == [0, 1, 2]
    with pytest.raises(ValueError, match="at least 2 rounds"):
        fv.train_fedavg(model, clients, task.x_test, task.y_test, config, rounds=1, head_round=True)
    x_valid, y_valid = clients.validation_images()     # lesson 07's "from … (random head) to … after the head round"
    model.reset()
    assert history.valid_accuracy[0] == model.accuracy(x_valid, y_valid)
    fv.class_mean_head(model, clients)
    assert history.valid_accuracy[1] == model.accuracy(x_valid, y_valid) != history.valid_accuracy[0]
    with pytest.raises(ValueError, match="clients"):   # more clients per round than there are
        fv.train_fedavg(model, clients, task.x_test, task.y_test, dataclasses.replace(config, clients_per_round=5), 3)


def test_local_training_runs_the_model_in_training_mode(task):
    """Batch norm learns its moving statistics, and the augmentation draws new images, only in training
    mode: a step taken in inference mode would leave both untouched."""
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    before = [v.numpy().copy() for v in model.model.non_trainable_variables if "moving" in v.path]
    assert before                                        # the CNN has batch norm
    model.local_train(clients.x_train[0], clients.y_train[0], 1, 16, 0.05, [0, 0, 0])
    after = [v.numpy() for v in model.model.non_trainable_variables if "moving" in v.path]
    assert all(not np.allclose(b, a) for b, a in zip(before, after))


def test_local_training_seeds_the_augmentation_from_its_key(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    assert model._seed_states                            # the model augments its images
    model.local_train(clients.x_train[0], clients.y_train[0], 0, 16, 0.05, [3, 1, 2])   # no step: only the seeding
    expected = int(np.random.default_rng([3, 1, 2]).integers(2**31))
    assert [state.numpy().tolist() for state in model._seed_states] == [[expected, i] for i in range(len(model._seed_states))]


def test_the_pretrained_start_alone_gets_the_head_round(task, source):
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=2, clients_per_round=2, local_epochs=1)
    assert experiment.run(1.0, "pretrained")[1].reports[0].examples == 0
    assert experiment.run(1.0, "scratch")[1].reports[0].examples > 0


def test_fedprox_keeps_the_cnn_closer_to_the_global_weights(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    model.reset()
    start = model.get_flat()
    image_task = fv.ImageTask(model, clients)
    config = fl.FedConfig(clients_per_round=2, local_epochs=3, batch_size=16, client_lr=0.05)
    plain = image_task.train_clients(start, None, np.array([0, 1]), config, 0)
    prox = image_task.train_clients(start, None, np.array([0, 1]), dataclasses.replace(config, prox_mu=5.0), 0)
    weights = sum(int(np.prod(v.shape)) for v in model.trainable)  # first in the row; batch-norm statistics follow
    assert np.all(np.linalg.norm(prox.values[:, :weights], axis=1) < np.linalg.norm(plain.values[:, :weights], axis=1))


def test_fedavg_learns_and_is_reproducible(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=5, alpha=100.0, min_size=5)
    config = fl.FedConfig(clients_per_round=3, local_epochs=2, batch_size=16, client_lr=0.05, cosine_rounds=4)
    _, first = fv.train_fedavg(model, clients, task.x_test, task.y_test, config, rounds=4)
    _, again = fv.train_fedavg(model, clients, task.x_test, task.y_test, config, rounds=4)
    assert first.valid_accuracy[-1] > 0.6 > first.valid_accuracy[0]
    assert first.valid_accuracy == again.valid_accuracy and first.dissimilarity == again.dissimilarity
    assert first.test_accuracy == again.test_accuracy
    assert first.dissimilarity >= 1.0
    assert first.mb[1] == pytest.approx(2 * 3 * model.n_shared() * 4 / 1e6)


def test_dissimilarity_grows_with_label_skew(task, monkeypatch):
    model = fv.federated_model("scratch", None, 5)
    state = model.reset()
    iid = fv.gradient_dissimilarity(model, state, fv.make_clients(task, 5, alpha=1e4, min_size=5))
    skewed = fv.gradient_dissimilarity(model, state, fv.make_clients(task, 5, alpha=0.05, min_size=5))
    assert 1.0 <= iid < skewed
    monkeypatch.setattr(model, "gradient", lambda x, y, full=model.gradient: 1e-3 * full(x, y))
    tiny = fv.gradient_dissimilarity(model, state, fv.make_clients(task, 5, alpha=0.05, min_size=5))
    assert tiny == pytest.approx(skewed, rel=1e-5)      # a ratio: gradients 1000× smaller give the same B²


def test_personalisation_leaves_the_global_model_alone(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=0.1, min_size=5)
    model.reset()
    params = model.get_flat()
    table = fv.personalise(model, params, clients, max_epochs=2, learning_rate=0.05)
    assert set(table.columns) == {"client", "n_train", "n_valid", "n_test", "epochs", "global", "personalised", "majority"}
    for row in table.itertuples():
        assert row.majority == fv.majority_class_accuracy(clients.y_train[row.client], clients.y_test[row.client])
    assert table["n_test"].sum() == len(task.y_test) and table["personalised"].mean() > table["global"].mean()
    np.testing.assert_array_equal(model.get_flat(), params)


HARSH_RATE = 5.0  # a client rate at which a step from the start makes things worse for some client


def test_personalisation_keeps_the_epochs_its_validation_images_prefer(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=0.1, min_size=5)
    params = model.reset() and model.get_flat()
    table = fv.personalise(model, params, clients, max_epochs=3, learning_rate=0.05, seed=2)
    for row in table.itertuples():
        k = row.client
        model.set_flat(params)
        scores = [model.accuracy(clients.x_valid[k], clients.y_valid[k])]
        for epoch in (1, 2, 3):   # the same steps, one epoch at a time, as the client takes them
            model.local_train(clients.x_train[k], clients.y_train[k], 1, 32, 0.05, [2, fv.PERSONALISE_TAG, k, epoch])
            scores.append(model.accuracy(clients.x_valid[k], clients.y_valid[k]))
        assert row.epochs == int(np.argmax(scores)) and row.n_valid == len(clients.y_valid[k])
    harsh = fv.personalise(model, params, clients, max_epochs=2, learning_rate=HARSH_RATE, seed=2)
    for row in harsh.itertuples():                      # where local steps only hurt, the global model is kept
        model.set_flat(params)
        scores = [model.accuracy(clients.x_valid[row.client], clients.y_valid[row.client])]
        for epoch in (1, 2):
            model.local_train(clients.x_train[row.client], clients.y_train[row.client], 1, 32, HARSH_RATE,
                              [2, fv.PERSONALISE_TAG, row.client, epoch])
            scores.append(model.accuracy(clients.x_valid[row.client], clients.y_valid[row.client]))
        assert row.epochs == int(np.argmax(scores))
    assert (harsh["epochs"] == 0).any() and (harsh.loc[harsh["epochs"] == 0, "personalised"]
                                               == harsh.loc[harsh["epochs"] == 0, "global"]).all()
    default = fv.personalise(model, params, clients, max_epochs=1, learning_rate=0.05)   # lesson 09 relies on these
    pd.testing.assert_frame_equal(default, fv.personalise(model, params, clients, max_epochs=1, learning_rate=0.05,
                                                          batch_size=32, seed=0))
    none = fv.personalise(model, params, clients, max_epochs=0, learning_rate=0.05)
    assert (none["epochs"] == 0).all() and (none["personalised"] == none["global"]).all()
    blind = dataclasses.replace(clients, x_valid=[x[:0] for x in clients.x_valid], y_valid=[y[:0] for y in clients.y_valid])
    kept = fv.personalise(model, params, blind, max_epochs=2, learning_rate=0.05)
    assert (kept["epochs"] == 0).all() and (kept["personalised"] == kept["global"]).all()   # no validation: no change
    with pytest.raises(ValueError, match="max_epochs"):
        fv.personalise(model, params, clients, max_epochs=-1, learning_rate=0.05)


def test_each_client_holds_a_seeded_fifth_of_its_images_out_for_validation(task):
    parts, _ = partition.dirichlet_partition(task.y_train, 4, 0.5, seed=3, min_size=5)
    clients = fv.make_clients(task, n_clients=4, alpha=0.5, seed=3, min_size=5)
    for k, part in enumerate(parts):
        mine = np.concatenate([clients.y_train[k], clients.y_valid[k]])
        assert len(clients.y_valid[k]) == round(0.2 * len(part))
        np.testing.assert_array_equal(np.sort(mine), np.sort(task.y_train[part]))   # the client's images, split
    assert clients.train_counts.sum() == sum(len(y) for y in clients.y_train) == clients.num_examples().sum()
    x_valid, y_valid = clients.validation_images()
    assert len(x_valid) == len(y_valid) == sum(len(y) for y in clients.y_valid)
    again = fv.make_clients(task, n_clients=4, alpha=0.5, seed=3, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(clients.x_valid, again.x_valid))
    none = fv.make_clients(task, n_clients=4, alpha=0.5, seed=3, min_size=5, validation_fraction=0.0)
    assert sum(len(y) for y in none.y_valid) == 0 and sum(len(y) for y in none.y_train) == len(task.y_train)
    for fraction in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"validation share must be in \[0, 1\)"):
            fv.make_clients(task, n_clients=4, alpha=0.5, validation_fraction=fraction)
    with pytest.raises(ValueError, match="no training image"):
        fv.make_clients(task, n_clients=4, alpha=0.5, min_size=1, validation_fraction=0.99)


def test_fedavg_keeps_the_round_its_validation_images_prefer_and_reads_the_test_images_there(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=5, alpha=100.0, min_size=5)
    config = fl.FedConfig(clients_per_round=3, local_epochs=1, batch_size=16, client_lr=0.05, cosine_rounds=4)
    params, history = fv.train_fedavg(model, clients, task.x_test, task.y_test, config, rounds=4)
    scores = history.valid_accuracy
    assert history.chosen_round == scores.index(max(scores))
    model.set_flat(params)
    assert model.accuracy(*clients.validation_images()) == max(scores)
    assert model.accuracy(task.x_test, task.y_test) == history.test_accuracy
    blind = dataclasses.replace(clients, x_valid=[x[:0] for x in clients.x_valid], y_valid=[y[:0] for y in clients.y_valid])
    with pytest.raises(ValueError, match="no validation images"):
        fv.train_fedavg(model, blind, task.x_test, task.y_test, config, rounds=2)


def test_keep_best_keeps_the_first_of_equal_scores():
    scores = iter([0.2, 0.5, 0.5, 0.4])
    kept = fv.KeepBestOnValidation(lambda params: next(scores))
    for r in range(4):
        assert kept(fc.ServerState(np.full((1, 2), r, np.float32))) == {"valid_accuracy": kept.scores[-1]}
    assert kept.round == 1 and kept.scores == [0.2, 0.5, 0.5, 0.4]
    np.testing.assert_array_equal(kept.params, np.full((1, 2), 1.0))


def test_a_remedy_is_chosen_on_validation_accuracy(task, source):
    variants = {"slow": ({"client_lr": 1e-6}, fc.FEDAVG), "moving": ({}, fc.FEDAVG), "same": ({}, fc.FEDAVG)}
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=3, clients_per_round=2, local_epochs=1,
                                   methods=variants)
    chosen = experiment.choose_methods(1.0, "scratch", {"plain": ["slow", "moving", "same"]})
    best = {name: experiment.run(1.0, "scratch", method=name)[1] for name in variants}
    top = max(h.valid_accuracy[h.chosen_round] for h in best.values())
    assert chosen["plain"] == next(name for name, h in best.items() if h.valid_accuracy[h.chosen_round] == top)
    assert chosen["plain"] != "same"   # "same" repeats "moving": equal scores keep the one listed first


def test_personalisation_reports_the_model_it_kept_and_every_client_with_a_test_image(task):
    model = fv.federated_model("scratch", None, 5)
    clients = fv.make_clients(task, n_clients=4, alpha=1.0, min_size=5)
    params = model.reset() and model.get_flat()
    trimmed = dataclasses.replace(clients, x_test=[clients.x_test[0][:0], clients.x_test[1][:1], *clients.x_test[2:]],
                                  y_test=[clients.y_test[0][:0], clients.y_test[1][:1], *clients.y_test[2:]])
    table = fv.personalise(model, params, trimmed, max_epochs=2, learning_rate=0.05, seed=1)
    assert list(table["client"]) == [1, 2, 3] and table.loc[0, "n_test"] == 1   # none: skipped; one: kept
    for _, row in table.iterrows():
        k = int(row["client"])
        model.set_flat(params)
        assert row["global"] == model.accuracy(trimmed.x_test[k], trimmed.y_test[k])
        for epoch in range(1, int(row["epochs"]) + 1):   # the kept model: that many single epochs, as the client took them
            model.local_train(trimmed.x_train[k], trimmed.y_train[k], 1, 32, 0.05, [1, fv.PERSONALISE_TAG, k, epoch])
        assert row["personalised"] == model.accuracy(trimmed.x_test[k], trimmed.y_test[k])


def test_majority_class_baseline_answers_the_most_common_training_class():
    assert fv.majority_class_accuracy(np.array([2, 2, 1]), np.array([2, 1, 2, 0])) == 0.5
    assert fv.majority_class_accuracy(np.array([2, 2, 1]), np.array([2, 2, 2, 0])) == 0.75
    assert fv.majority_class_accuracy(np.array([3, 1, 1, 3]), np.array([1, 3])) == 0.5   # a tie: the smaller label
    with pytest.raises(ValueError, match="no test images"):
        fv.majority_class_accuracy(np.array([1]), np.array([], dtype=int))
    with pytest.raises(ValueError, match="no training images"):
        fv.majority_class_accuracy(np.array([], dtype=int), np.array([1]))


def test_first_round_reaching_a_target():
    assert metrics.first_reaching([0.2, 0.5, 0.61, 0.58, 0.7], 0.6) == 2
    assert metrics.first_reaching([0.2, 0.5], 0.6) is None
    assert metrics.first_reaching([1.1, 0.95, 0.9], 0.9, higher_is_better=False) == 2


def test_dissimilarity_is_measured_once_per_alpha_and_start(task, source):
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=2, clients_per_round=2, local_epochs=1,
                                   target_accuracy=0.5)
    sweep = experiment.sweep([1.0], progress=False)
    assert list(sweep["init"]) == list(fv.INITS) and sweep["drift"].ge(1.0).all()
    other = experiment.run(1.0, "scratch", clients_per_round=3)[1]
    assert len(other.valid_accuracy) == 3
    assert other.dissimilarity == float(sweep.query("init == 'scratch'")["drift"].iloc[0])  # B² depends on (α, start)
    _, skipped = fv.train_fedavg(experiment.models["scratch"], experiment.clients(1.0), task.x_test, task.y_test,
                                 experiment.config("scratch"), 2, measure_dissimilarity=False)
    assert skipped.dissimilarity is None and skipped.valid_accuracy == experiment.run(1.0, "scratch")[1].valid_accuracy
    assert list(sweep.columns) == ["alpha", "init", "rounds_to_target", "chosen_round", "valid_accuracy",
                                   "test_accuracy", "drift", "seconds"]
    for row in sweep.itertuples():
        history = experiment.run(row.alpha, row.init)[1]
        assert row.rounds_to_target == fv.metrics.first_reaching(history.valid_accuracy, 0.5)
        assert (row.chosen_round, row.valid_accuracy, row.test_accuracy) == (
            history.chosen_round, history.valid_accuracy[history.chosen_round], history.test_accuracy)
        assert row.seconds == history.seconds[-1] > 0


def test_head_task_step_is_softmax_regression_sgd():
    """One client, one full batch, one epoch from a zero head: Δ = −η Xᵀ(softmax − onehot)/n, and b likewise."""
    x = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], np.float32)
    y = np.array([0, 1, 1])
    head = fv.HeadTask([x], [y], n_classes=2)
    config = fc.FedConfig(1, 1, batch_size=0, client_lr=0.5)
    updates = head.train_clients(np.zeros((1, head.width), np.float32), None, [0], config, 0)
    error = np.full((3, 2), 0.5) - np.eye(2)[y]                                   # softmax of zeros − one-hot
    assert head.width == 6 and updates.upload_bytes[0] == 24
    np.testing.assert_allclose(updates.values[0], np.concatenate([(-0.5 * x.T @ error / 3).ravel(),
                                                                  -0.5 * error.mean(axis=0)]), rtol=1e-6)


def test_head_task_clients_run_seeded_minibatch_sgd_on_the_cross_entropy():
    """From a non-zero head, E = 2 epochs of batches of 4 in the order (seed, round, client, epoch)
    draws, at the schedule's rate for this round: Keras's SGD on the mean cross-entropy, step by step.
    The logits are large (features × 30), as a stable softmax must handle."""
    import tensorflow as tf

    rng = np.random.default_rng(4)
    features = [(30 * rng.normal(size=(10, 3))).astype(np.float32) for _ in range(2)]
    labels = [rng.integers(0, 4, 10) for _ in range(2)]
    head = fv.HeadTask(features, labels, n_classes=4)
    params = rng.normal(size=(1, head.width)).astype(np.float32)
    config = fc.FedConfig(2, 2, batch_size=4, client_lr=0.01, seed=7, cosine_rounds=5)
    updates = head.train_clients(params, None, [1, 0], config, 2)
    for slot, k in enumerate([1, 0]):
        w0, b0 = head.split(params)
        w, b = tf.Variable(w0), tf.Variable(b0)
        for epoch in range(2):
            order = np.random.default_rng([7, 2, k, epoch]).permutation(10)
            for start in range(0, 10, 4):
                batch = order[start:start + 4]
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels[k][batch], features[k][batch] @ w + b))
                for variable, gradient in zip((w, b), tape.gradient(loss, (w, b))):
                    variable.assign_sub(config.client_rate(2) * gradient)
        expected = np.concatenate([w.numpy().ravel(), b.numpy()]) - params.ravel()
        np.testing.assert_allclose(updates.values[slot], expected, rtol=1e-4, atol=1e-4)
    x = np.zeros((3, 3), np.float32)
    biased = np.concatenate([np.zeros(12), [0.0, 0.0, 1.0, 0.0]])[None, :]     # W = 0, b favours class 2
    assert head.accuracy(biased, x, np.array([2, 2, 1])) == pytest.approx(2 / 3)


def test_federated_head_learns_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 8))
    y = rng.integers(0, 3, 300)
    x = (centres[y] + rng.normal(0, 0.3, (300, 8))).astype(np.float32)
    head = fv.HeadTask([x[k::4] for k in range(4)], [y[k::4] for k in range(4)], n_classes=3)
    _, history = fc.train(head, fc.ServerState(np.zeros((1, head.width), np.float32)), fc.ClientState(),
                          fc.FedConfig(2, 1, batch_size=8, client_lr=0.1), 5,
                          lambda state, _: {"accuracy": head.accuracy(state.params, x, y)})
    assert history.accuracy[0] < 0.5 < 0.95 < history.accuracy[-1]


def test_pooled_standardisation_equals_the_central_one():
    rng = np.random.default_rng(1)
    parts = [rng.normal(3, 2, (n, 4)) for n in (5, 17, 40)]
    mean, std = fv.pooled_standardisation(parts)
    np.testing.assert_allclose(mean, np.concatenate(parts).mean(axis=0))
    np.testing.assert_allclose(std, np.concatenate(parts).std(axis=0))
    narrow = [0.05 * part for part in parts]                           # variances far below 1 are kept as they are
    np.testing.assert_allclose(fv.pooled_standardisation(narrow)[1], np.concatenate(narrow).std(axis=0))


def test_the_head_task_standardises_every_split_with_the_clients_pooled_statistics(task, source):
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=3, clients_per_round=2, local_epochs=1)
    head, (x_valid, _), (x_test, _) = experiment.head_task(1.0)
    clients = experiment.clients(1.0)
    raw = [vt.features(source, x) for x in clients.x_train]
    mean, std = fv.pooled_standardisation(raw)
    pooled = np.concatenate(head.features)
    np.testing.assert_allclose(pooled.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(x_valid, (vt.features(source, clients.validation_images()[0]) - mean) / std, atol=1e-4)
    np.testing.assert_allclose(x_test, (vt.features(source, task.x_test) - mean) / std, atol=1e-4)
    history = experiment.head_run(1.0, 2, 1)
    kept = fv.KeepBestOnValidation(lambda params: head.accuracy(params, *experiment.head_task(1.0)[1]))
    config = fc.FedConfig(2, 1, batch_size=32, client_lr=experiment.head_lr, seed=experiment.seed)
    _, again = fc.train(head, fc.ServerState(np.zeros((1, head.width), np.float32)), fc.ClientState(), config, 3, kept)
    assert history.valid_accuracy == again.valid_accuracy and history.chosen_round == kept.round


def test_head_panel_retrains_quickly_caches_and_explains_bad_settings(task, source):
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=5, clients_per_round=2, local_epochs=1)
    default = experiment.head_view(1.0, 2, 1)
    (history,) = default.values()
    assert len(history.valid_accuracy) == 6 and 0 <= history.chosen_round <= 5 and 0 <= history.test_accuracy <= 1
    other = experiment.head_view(1.0, 4, 3)
    assert list(other) == ["K = 4, E = 3", "default K = 2, E = 1"] and other["default K = 2, E = 1"] is history
    assert other["K = 4, E = 3"].client_examples[-1] == 5 * 3 * sum(len(y) for y in experiment.clients(1.0).y_train)
    for k in (0, 5):
        with pytest.raises(ValueError, match="clients per round"):
            experiment.head_view(1.0, k, 1)


def test_compression_widget_values_are_checked(federation):
    config = fl.FedConfig(clients_per_round=5, local_epochs=1, batch_size=4, client_lr=0.1)
    with pytest.raises(ValueError, match="share of entries kept"):
        cp.run_compressed(federation, config, cp.Compressor("topk", 0.0), rounds=2, dim=3)
    history = cp.run_compressed(federation, config, cp.Compressor("topk", 1e-4, False), rounds=2, dim=3)
    assert len(history.mb_up) == 3 and history.mb_up[-1] > 0 and len(history.test_rmse) == 3


def test_comparison_table_reports_targets(federation):
    config = fl.FedConfig(clients_per_round=8, local_epochs=1, batch_size=4, client_lr=0.1, server_lr=2.0)
    runs = {k: v for k, v in cp.comparison_runs(config, fedsgd_rate=1.0).items() if "0.1%" not in k}
    curves = cp.compare_uploads(federation, runs, rounds=3, dim=3, progress=False)
    table = cp.upload_table(curves, target_rmse=10.0)                                  # reached at round 0
    assert list(table.index) == list(runs) and (table["rounds to target"] == 0).all()
    never = cp.upload_table(curves, target_rmse=0.0)
    assert never["rounds to target"].isna().all() and never["MB up to target"].isna().all()
    with pytest.raises(AttributeError, match="valid_rmse"):   # this federation holds no validation ratings
        cp.upload_table(curves, target_rmse=10.0, on="valid_rmse")


def test_comparison_table_reads_the_target_on_the_curve_it_is_told():
    """The rounds to target come from the named curve (validation), the final RMSE from the test curve."""
    history = fc.History({"test_rmse": [1.2, 1.0, 0.9], "valid_rmse": [1.2, 1.1, 0.95]})
    history.reports = [fc.RoundReport(round=r, asked=np.arange(2), trained=np.arange(2), examples=4, steps=2, bytes_down=0,
                                      bytes_up=10**6, dense_bytes=0, seconds=0.0, update_norms=np.ones(2))
                       for r in range(2)]
    table = cp.upload_table({"run": history}, target_rmse=1.0, on="valid_rmse")
    assert table.loc["run", "rounds to target"] == 2 and table.loc["run", "MB up to target"] == 2.0
    assert table.loc["run", "final test RMSE"] == 0.9
    assert cp.upload_table({"run": history}, target_rmse=1.0).loc["run", "rounds to target"] == 1


def test_the_compression_panel_runs_are_the_lessons_runs(federation):
    """Lesson 09's panel keeps one extendable run per compressor: the same rounds, test RMSE and
    uploaded bytes as a direct run, and a setting seen again is the same object (no retraining)."""
    config = fl.FedConfig(clients_per_round=6, local_epochs=1, batch_size=4, client_lr=0.1, server_lr=2.0)
    runs = fl.RunCache(federation, dim=3)
    for compressor in (cp.Compressor("topk", 0.1), cp.Compressor("int8", error_feedback=False)):
        run = runs.get(config, cp.compressed_fedavg(compressor), key=("compress", compressor))
        panel = run.first(4)
        direct = cp.run_compressed(federation, config, compressor, rounds=4, dim=3)
        np.testing.assert_allclose(panel.test_rmse, direct.test_rmse, rtol=1e-6)
        assert panel.mb_up == pytest.approx(direct.mb_up)
        assert runs.get(config, cp.compressed_fedavg(compressor), key=("compress", compressor)) is run


def test_the_experiment_s_config_is_its_defaults_or_the_setting_asked(task, source):
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=6, clients_per_round=2, local_epochs=1,
                                   client_lr=0.07, seed=3, methods={"FedProx": ({"prox_mu": 0.5}, fc.FEDAVG)})
    default = fc.FedConfig(2, 1, batch_size=32, client_lr=0.07, cosine_rounds=6, seed=3)
    assert experiment.config("scratch") == default
    assert experiment.config("pretrained", 3, 2) == dataclasses.replace(default, clients_per_round=3, local_epochs=2)
    assert experiment.config("scratch", method="FedProx") == dataclasses.replace(default, prox_mu=0.5)
    with pytest.raises(ValueError, match=r"unknown starting point 'imagenet'; choose from \['scratch', 'pretrained'\]"):
        experiment.config("imagenet")
    with pytest.raises(ValueError, match=r"unknown method 'FedNova'; choose from \['FedAvg', 'FedProx'\]"):
        experiment.config("scratch", method="FedNova")
    with pytest.raises(ValueError, match="clients per round"):
        experiment.config("scratch", 5)                                   # more than the 4 clients


def test_a_run_trains_the_setting_it_is_asked_for_and_caches_it_by_that_setting(task, source, monkeypatch):
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=2, clients_per_round=2, local_epochs=1,
                                   methods={"FedProx": ({"prox_mu": 0.5}, fc.FEDAVG)})
    asked = []
    real = fv.train_fedavg

    def recording(model, clients, x_test, y_test, config, rounds, algorithm, progress, **kwargs):
        asked.append((config, kwargs["measure_dissimilarity"]))
        return real(model, clients, x_test, y_test, config, rounds, algorithm, progress, **kwargs)

    monkeypatch.setattr(fv, "train_fedavg", recording)
    _, history = experiment.run(1.0, "scratch", clients_per_round=3, local_epochs=2, method="FedProx")
    assert asked[0][0] == experiment.config("scratch", 3, 2, "FedProx") and asked[0][1]
    assert [len(r.trained) for r in history.reports] == [3, 3]
    experiment.run(1.0, "scratch")                     # another setting of the same start: B² is not measured again
    assert asked[1][0] == experiment.config("scratch") and not asked[1][1]
    experiment.run(1.0, "pretrained")                  # another start: measured
    assert asked[2][1]
    assert experiment.run(1.0, "scratch", clients_per_round=3, local_epochs=2, method="FedProx")[1] is history
    assert len(asked) == 3                             # the same setting again: from the cache


def test_the_head_run_trains_the_setting_asked_with_the_experiments_seed(task, source, monkeypatch):
    """Lesson 07's head-only model: mini-batches of 32 at the head's rate, seeded by the experiment's
    seed (a run at seed 3 must not quietly train seed 0's batches); an impossible K is refused."""
    experiment = fv.FLTLExperiment(task, source, n_clients=4, rounds=2, clients_per_round=2, local_epochs=1, seed=3)
    trained = []
    real = fv.fc.train

    def recording(task_, start, clients_state, config, rounds, *args, **kwargs):
        trained.append((config, rounds))
        return real(task_, start, clients_state, config, rounds, *args, **kwargs)

    monkeypatch.setattr(fv.fc, "train", recording)
    experiment.head_run(1.0, 3, 2)
    assert trained == [(fc.FedConfig(3, 2, batch_size=32, client_lr=experiment.head_lr, seed=3), 2)]
    with pytest.raises(ValueError, match="clients per round must be a whole number in 1..4, got 5"):
        experiment.head_run(1.0, 5, 1)


@pytest.mark.parametrize("train, test, message", [([0, 1], [], "a client with no test images has no accuracy to measure"),
                                                  ([], [0], "a client with no training images has no most common class")])
def test_the_majority_baseline_explains_an_empty_client(train, test, message):
    with pytest.raises(ValueError, match=message):
        fv.majority_class_accuracy(np.array(train, int), np.array(test, int))
