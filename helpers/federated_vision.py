"""FedAvg for Keras image classifiers, from scratch or from a pre-trained extractor (lesson 06).

Lesson 03 federated a recommender whose clients each own one user; here the clients
own photos: the CIFAR-10 target task of lesson 04 (dog, frog, horse, ship, truck) is
dealt to N clients with Dirichlet(α) label skew (:mod:`helpers.partition`). One round:

  (1) the server samples K clients and sends them the global weights θ;
  (2) client k runs E epochs of plain mini-batch SGD, θ_k ← θ_k − η_c ∇L_k(θ_k), on
      its own images (written out by hand, as in lesson 02);
  (3) it sends back Δ_k = θ_k − θ and its count n_k;
  (4)–(5) the server moves to θ + Σ_k (n_k / Σ_j n_j) Δ_k.

The shared state is every trainable weight plus the batch-norm moving statistics
(averaged like the weights). The two starting points are lesson 04's models: a fresh
network, and a copy of the source-trained extractor with a new head. Both train every
layer the same way, batch norm included (``target_model("finetune", …,
retrain_batch_norm=True)``), so they differ only in their initial weights.

How much the clients disagree — what drives client drift, local models wandering off
towards their own data — is measured as the gradient dissimilarity of Li et al.
(FedProx, 2020):
at the global weights θ, each client's full-batch gradient g_k = ∇L_k(θ) against their
average ḡ = Σ_k p_k g_k,

    B² = Σ_k p_k ‖g_k‖² / ‖ḡ‖²  (≥ 1; 1 when every client wants the same step).

Mini-batch noise does not enter (each g_k uses all of client k's images), so B² grows
with label skew, not with the learning rate: when a client holds two classes, its
gradient pulls the head towards them and away from what the others need. It is measured
at the starting weights, the same for every α: later in training ḡ shrinks towards 0 and
B² grows for every α, so values from different runs are no longer comparable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from helpers import metrics, partition
from helpers import vision_transfer as vt
from helpers.progress import progress as progress_bar

FLOAT_BYTES = 4
PERSONALISE_TAG = 10**6  # seed-key slot that no round number reaches: personalisation batches
INITS = {"scratch": "random initialisation", "pretrained": "source-pre-trained extractor"}


@dataclass(frozen=True)
class ImageClients:
    """A task dealt to N clients. Lists hold one array per client.

    Attributes:
        x_train, x_test: uint8 (n_k, 32, 32, 3).  y_train, y_test: int (n_k,).
        train_counts: (N, C) training images of each class per client.
    """

    x_train: list[np.ndarray]
    y_train: list[np.ndarray]
    x_test: list[np.ndarray]
    y_test: list[np.ndarray]
    train_counts: np.ndarray

    @property
    def n_clients(self) -> int:
        return len(self.x_train)

    def num_examples(self) -> np.ndarray:
        """n_k of every client: (N,) int."""
        return np.array([len(y) for y in self.y_train])


def make_clients(task: vt.Task, n_clients: int, alpha: float, seed: int = 0, min_size: int = 10) -> ImageClients:
    """Deal ``task`` to clients with Dirichlet(α) label skew; the test set is split with the same shares."""
    parts, shares = partition.dirichlet_partition(task.y_train, n_clients, alpha, seed, min_size)
    test_parts = partition.split_by_shares(task.y_test, shares, np.random.default_rng([seed, 1]))
    return ImageClients([task.x_train[p] for p in parts], [task.y_train[p] for p in parts],
                        [task.x_test[p] for p in test_parts], [task.y_test[p] for p in test_parts],
                        partition.class_counts(task.y_train, parts, len(task.class_names)))


@dataclass(frozen=True)
class VisionFedConfig:
    """FedAvg settings: K clients per round, E local epochs, batch B, client rate η_c, seed."""

    clients_per_round: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    client_lr: float = 0.05
    seed: int = 0

    def check(self, n_clients: int) -> None:
        """Raise ValueError for settings that cannot run on ``n_clients`` clients."""
        if int(self.clients_per_round) != self.clients_per_round or not 1 <= self.clients_per_round <= n_clients:
            raise ValueError(f"clients per round must be a whole number in 1..{n_clients}, got {self.clients_per_round}")
        if int(self.local_epochs) != self.local_epochs or self.local_epochs < 1:
            raise ValueError(f"local epochs must be a whole number ≥ 1, got {self.local_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be ≥ 1, got {self.batch_size}")
        if not (np.isfinite(self.client_lr) and self.client_lr > 0):
            raise ValueError(f"client learning rate must be > 0, got {self.client_lr}")


def _layers(model) -> list:
    """Every layer inside ``model``, nested models included, depth first."""
    found = []
    for child in getattr(model, "layers", []):
        found += [child] + _layers(child)
    return found


class FederatedModel:
    """A Keras classifier (logits out) with what FedAvg needs.

    ``shared`` lists the variables the server aggregates: the trainable weights first,
    then the batch-norm moving statistics. :meth:`reset` returns every variable to its
    value at construction, so each run starts the same way. The augmentation layers'
    random state is re-seeded from each local run's seed key, so a client's training
    depends on (seed, round, client) only, not on which clients ran before it.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.trainable = list(model.trainable_variables)
        layers = _layers(model)
        self.shared = self.trainable + [v for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
                                        for v in (layer.moving_mean, layer.moving_variance)]
        self._seed_states = [layer.generator.state for layer in layers
                             if isinstance(getattr(layer, "generator", None), keras.random.SeedGenerator)]
        self._initial = [v.numpy() for v in model.variables]
        self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._step = tf.function(self._sgd_step, reduce_retracing=True)
        self._gradient = tf.function(self._loss_gradient, reduce_retracing=True)

    def _loss_gradient(self, x, y):
        with tf.GradientTape() as tape:
            loss = self._loss(y, self.model(x, training=True))
        return tape.gradient(loss, self.trainable)

    def _sgd_step(self, x, y, learning_rate):
        for variable, gradient in zip(self.trainable, self._loss_gradient(x, y)):
            variable.assign_sub(learning_rate * gradient)  # θ ← θ − η ∇L

    def gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """∇L on all of (x, y) in one batch at the current weights, flattened: (trainable scalars,).

        Batch-norm statistics are those of this batch, and the moving averages are left as they were.
        """
        saved = [v.numpy() for v in self.model.non_trainable_variables]
        grads = self._gradient(tf.constant(x), tf.constant(y))
        for variable, value in zip(self.model.non_trainable_variables, saved):
            variable.assign(value)
        return np.concatenate([g.numpy().ravel() for g in grads])

    def reset(self) -> list[np.ndarray]:
        """Back to the starting weights; returns the shared state there."""
        for variable, value in zip(self.model.variables, self._initial):
            variable.assign(value)
        return self.get_shared()

    def get_shared(self) -> list[np.ndarray]:
        """The shared state as numpy arrays (a copy)."""
        return [v.numpy() for v in self.shared]

    def set_shared(self, state: list[np.ndarray]) -> None:
        """Load a shared state (the global model, or a client's)."""
        for variable, value in zip(self.shared, state):
            variable.assign(value)

    def n_shared(self) -> int:
        """Number of shared scalars (what one client downloads and uploads per round)."""
        return int(sum(np.prod(v.shape) for v in self.shared))

    def local_train(self, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, learning_rate: float,
                    seed_key: list[int]) -> None:
        """E epochs of mini-batch SGD on (x, y), batch order and augmentation seeded by ``seed_key``."""
        rate = tf.constant(learning_rate, tf.float32)
        augment_seed = int(np.random.default_rng(seed_key).integers(2**31))
        for i, state in enumerate(self._seed_states):
            state.assign(np.array([augment_seed, i], np.int64))
        for epoch in range(epochs):
            order = np.random.default_rng([*seed_key, epoch]).permutation(len(y))
            for start in range(0, len(y), batch_size):
                batch = order[start:start + batch_size]
                self._step(tf.constant(x[batch]), tf.constant(y[batch]), rate)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy (0..1) of the current weights on (x, y)."""
        return vt.accuracy(self.model, x, y)


def federated_model(init: str, source: keras.Sequential | None, n_classes: int, seed: int = 0) -> FederatedModel:
    """Lesson 04's target model for ``init`` = "scratch" or "pretrained"; every layer trains, batch norm included."""
    if init not in INITS:
        raise ValueError(f"unknown starting point {init!r}; choose from {list(INITS)}")
    if init == "pretrained" and source is None:
        raise ValueError("a pre-trained start needs the source extractor")
    if init == "scratch":
        return FederatedModel(vt.target_model("scratch", None, n_classes, seed=seed))
    return FederatedModel(vt.target_model("finetune", source, n_classes, seed=seed, retrain_batch_norm=True))


@dataclass
class VisionFedHistory:
    """Per round (index 0 = before round 1): global test accuracy, cumulative MB (down + up),
    cumulative seconds. ``dissimilarity``: B² over all clients at the starting weights.
    """

    accuracy: list[float] = field(default_factory=list)
    mb: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    dissimilarity: float = float("nan")


def sample_clients(n_clients: int, config: VisionFedConfig, round_num: int) -> np.ndarray:
    """K distinct client ids, seeded by (seed, round): (K,) int, sorted."""
    rng = np.random.default_rng([config.seed, round_num])
    return np.sort(rng.choice(n_clients, config.clients_per_round, replace=False))


def gradient_dissimilarity(model: FederatedModel, state: list[np.ndarray], clients: ImageClients) -> float:
    """B² = Σ_k p_k ‖g_k‖² / ‖Σ_k p_k g_k‖² over all clients at the global ``state`` (see module doc).

    g_k is client k's full-batch gradient over the trainable weights (batch norm in
    training mode, as in local training); p_k = n_k / Σ n_j.
    """
    model.set_shared(state)
    grads = np.stack([model.gradient(x, y) for x, y in zip(clients.x_train, clients.y_train)])
    p = clients.num_examples() / clients.num_examples().sum()
    mean = p @ grads
    return float(p @ np.sum(grads**2, axis=1) / max(float(mean @ mean), 1e-30))


def fedavg_round(model: FederatedModel, state: list[np.ndarray], clients: ImageClients, config: VisionFedConfig,
                 round_num: int, client_lr: float | None = None) -> list[np.ndarray]:
    """One FedAvg round from global ``state`` (clients use ``client_lr``, default η_c); returns the new state."""
    rate = config.client_lr if client_lr is None else client_lr
    chosen = sample_clients(clients.n_clients, config, round_num)
    deltas, counts = [], clients.num_examples()[chosen]
    for k in chosen:
        model.set_shared(state)                                                                   # (1)
        model.local_train(clients.x_train[k], clients.y_train[k], config.local_epochs,            # (2)
                          config.batch_size, rate, [config.seed, round_num, int(k)])
        deltas.append([new - old for new, old in zip(model.get_shared(), state)])                # (3)
    p = counts / counts.sum()
    mean = [sum(w * d[i] for w, d in zip(p, deltas)) for i in range(len(state))]                  # (4)
    return [s + m for s, m in zip(state, mean)]                                                   # (5)


def train_fedavg(model: FederatedModel, clients: ImageClients, x_test: np.ndarray, y_test: np.ndarray,
                 config: VisionFedConfig, rounds: int, progress: bool = False
                 ) -> tuple[list[np.ndarray], VisionFedHistory]:
    """``rounds`` FedAvg rounds from the model's starting weights; global accuracy on (x_test, y_test)
    after every round, and the clients' gradient dissimilarity B² at the start.

    The client rate decays on a cosine over the rounds, η_c · ½(1 + cos(π (t + ½) / rounds)),
    so the last rounds settle instead of jumping around (lesson 04 used the same schedule).
    Returns (final shared state, history).
    """
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a whole number ≥ 1, got {rounds}")
    config.check(clients.n_clients)
    state = model.reset()
    history = VisionFedHistory([model.accuracy(x_test, y_test)], [0.0], [0.0],
                               gradient_dissimilarity(model, state, clients))
    round_mb = 2 * config.clients_per_round * model.n_shared() * FLOAT_BYTES / 1e6
    for round_num in progress_bar(range(rounds), "rounds", enabled=progress):
        start = time.perf_counter()
        rate = config.client_lr * 0.5 * (1 + np.cos(np.pi * (round_num + 0.5) / rounds))  # cosine decay
        state = fedavg_round(model, state, clients, config, round_num, rate)
        history.seconds.append(history.seconds[-1] + time.perf_counter() - start)
        model.set_shared(state)
        history.accuracy.append(model.accuracy(x_test, y_test))
        history.mb.append(history.mb[-1] + round_mb)
    return state, history


def personalise(model: FederatedModel, state: list[np.ndarray], clients: ImageClients, epochs: int,
                learning_rate: float, batch_size: int = 32, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Each client fine-tunes the global model on its own training images for ``epochs`` epochs.

    Returns one row per client with a test set: ``client, n_train, n_test, global`` (accuracy
    of the global model on the client's own test images) and ``personalised`` (after its
    local fine-tuning). Nothing leaves the client; the global state is not changed.
    """
    rows = []
    for k in progress_bar(range(clients.n_clients), "clients personalised", enabled=progress):
        if len(clients.y_test[k]) == 0:
            continue
        model.set_shared(state)
        before = model.accuracy(clients.x_test[k], clients.y_test[k])
        model.local_train(clients.x_train[k], clients.y_train[k], epochs, batch_size, learning_rate, [seed, PERSONALISE_TAG, k])
        rows.append({"client": k, "n_train": len(clients.y_train[k]), "n_test": len(clients.y_test[k]),
                     "global": before, "personalised": model.accuracy(clients.x_test[k], clients.y_test[k])})
    model.set_shared(state)
    return pd.DataFrame(rows)


class FLTLExperiment:
    """The lesson's experiment, with every run cached: the CIFAR target task over ``n_clients``
    clients, FedAvg from scratch or from the pre-trained extractor.

    One :class:`FederatedModel` per starting point is built once and reset for each run, so
    a new setting (the widget) costs only its rounds. Defaults: K = ``clients_per_round``,
    E = ``local_epochs``; the same client rate η_c for both starting points.
    """

    def __init__(self, target: vt.Task, source: keras.Sequential, n_clients: int = 20, rounds: int = 30,
                 clients_per_round: int = 10, local_epochs: int = 2, client_lr: float = 0.05,
                 target_accuracy: float = 0.6, seed: int = 0):
        self.target, self.n_clients, self.rounds = target, n_clients, rounds
        self.clients_per_round, self.local_epochs, self.client_lr = clients_per_round, local_epochs, client_lr
        self.target_accuracy, self.seed = target_accuracy, seed
        self.models = {init: federated_model(init, source, len(target.class_names), seed) for init in INITS}
        self._clients: dict[float, ImageClients] = {}
        self._runs: dict[tuple, tuple[list[np.ndarray], VisionFedHistory]] = {}

    def clients(self, alpha: float) -> ImageClients:
        """The Dirichlet(α) federation (built once per α)."""
        if alpha not in self._clients:
            self._clients[alpha] = make_clients(self.target, self.n_clients, alpha, self.seed)
        return self._clients[alpha]

    def config(self, init: str, clients_per_round: int | None = None, local_epochs: int | None = None) -> VisionFedConfig:
        """The FedAvg settings of one run (None: the experiment's defaults)."""
        if init not in INITS:
            raise ValueError(f"unknown starting point {init!r}; choose from {list(INITS)}")
        config = VisionFedConfig(self.clients_per_round if clients_per_round is None else clients_per_round,
                                 self.local_epochs if local_epochs is None else local_epochs,
                                 client_lr=self.client_lr, seed=self.seed)
        config.check(self.n_clients)
        return config

    def run(self, alpha: float, init: str, clients_per_round: int | None = None, local_epochs: int | None = None,
            progress: bool = False) -> tuple[list[np.ndarray], VisionFedHistory]:
        """(final state, history) of one setting; trained on first request, then cached."""
        config = self.config(init, clients_per_round, local_epochs)
        key = (float(alpha), init, config.clients_per_round, config.local_epochs)
        if key not in self._runs:
            self._runs[key] = train_fedavg(self.models[init], self.clients(alpha), self.target.x_test,
                                           self.target.y_test, config, self.rounds, progress)
        return self._runs[key]

    def sweep(self, alphas, progress: bool = True) -> pd.DataFrame:
        """Every α × starting point at the default K and E; one row per run: ``alpha, init,
        final_accuracy, best_accuracy, rounds_to_target`` (None: not reached), ``drift`` (B² at the start), ``seconds``."""
        combos = [(a, i) for a in alphas for i in INITS]
        rows = []
        for alpha, init in progress_bar(combos, "FedAvg runs", enabled=progress):
            _, history = self.run(alpha, init)
            rows.append({"alpha": alpha, "init": init, "final_accuracy": history.accuracy[-1],
                         "best_accuracy": max(history.accuracy),
                         "rounds_to_target": metrics.first_reaching(history.accuracy, self.target_accuracy),
                         "drift": history.dissimilarity, "seconds": history.seconds[-1]})
        return pd.DataFrame(rows)

    def view(self, alpha: float, pretrained: bool, clients_per_round: int, local_epochs: int,
             progress: bool = True) -> dict:
        """The widget's curves: {label: history} for the chosen setting and, when K or E differ from
        the defaults, the default setting at the same α and start for comparison.

        Raises:
            ValueError: an impossible K or E, or an α that is not a positive number.
        """
        init = "pretrained" if pretrained else "scratch"
        config = self.config(init, clients_per_round, local_epochs)
        curves = {f"{INITS[init]}, K = {config.clients_per_round}, E = {config.local_epochs}":
                  self.run(alpha, init, config.clients_per_round, config.local_epochs, progress)[1]}
        if (config.clients_per_round, config.local_epochs) != (self.clients_per_round, self.local_epochs):
            curves[f"default K = {self.clients_per_round}, E = {self.local_epochs}"] = self.run(alpha, init)[1]
        return curves
