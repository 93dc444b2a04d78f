"""Federated learning of Keras image classifiers, from scratch or from a pre-trained extractor (lessons 07 and 09).

Lesson 03 federated a recommender whose clients each own one user; here the clients
own photos: the CIFAR-10 target task of lesson 05 (dog, frog, horse, ship, truck) is
dealt to N clients with Dirichlet(α) label skew (:mod:`helpers.partition`). The round
is the federated core's (:func:`helpers.fedcore.run_round`); this module supplies the
task (:class:`ImageTask`) whose client update is:

  (2) client k runs E epochs of plain mini-batch SGD, θ_k ← θ_k − η_c ∇L_k(θ_k), on
      its own images (written out by hand, as in lesson 02) — with FedProx, on
      L_k(θ_k) + (μ/2)‖θ_k − θ‖²;
  (3) it sends back Δ_k = θ_k − θ and its count n_k.

The shared state is every trainable weight plus the batch-norm moving statistics
(averaged like the weights, but never moved by a server optimiser such as FedAdam),
flattened into one row of the core's parameter table, (1, P); a client sends all P
values, float32, without indices. The two starting points are lesson 05's models: a fresh
network, and a copy of the source-trained extractor with a new head. The pre-trained start
spends its first round on that head (:func:`class_mean_head`): the clients send per-class
sums of their features and the server writes the nearest-class-mean classifier into it —
the federated form of lesson 05's "head first, then everything", since a random head's
first gradients pull the source features apart. From then on both train every layer the
same way, batch norm included (``target_model("finetune", …, retrain_batch_norm=True)``).

The cheap baseline, and the model of the lesson's K/E panel, is :class:`HeadTask`: the
extractor frozen, each client's features computed once and standardised with the clients'
pooled statistics (:func:`pooled_standardisation`), and FedAvg trains only a softmax-
regression head, (d + 1)·C numbers each way instead of the whole network.

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

import dataclasses
import time
from dataclasses import dataclass

from helpers.tf_quiet import tf  # first: TensorFlow without its start-up lines
import keras
import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers import metrics, partition
from helpers import vision_transfer as vt
from helpers.fedcore import FedConfig
from helpers.progress import progress as progress_bar

PERSONALISE_TAG = 10**6  # seed-key slot that no round number reaches: personalisation batches
INITS = {"scratch": "random initialisation", "pretrained": "source-pre-trained extractor"}
HEAD_LR = 0.1  # η_c of the linear head on standardised frozen features (:class:`HeadTask`), chosen by measurement


@dataclass(frozen=True)
class ImageClients:
    """A task dealt to N clients. Lists hold one array per client.

    Attributes:
        x_train, x_valid, x_test: uint8 (n_k, 32, 32, 3).  y_train, y_valid, y_test: int (n_k,).
            The validation images are a seeded share of the client's own images held out of
            training; rounds, methods and local steps are chosen on them, never on the test images.
        train_counts: (N, C) training images of each class per client.
    """

    x_train: list[np.ndarray]
    y_train: list[np.ndarray]
    x_valid: list[np.ndarray]
    y_valid: list[np.ndarray]
    x_test: list[np.ndarray]
    y_test: list[np.ndarray]
    train_counts: np.ndarray

    @property
    def n_clients(self) -> int:
        return len(self.x_train)

    @property
    def client_ids(self) -> np.ndarray:
        """0..N-1."""
        return np.arange(self.n_clients)

    def num_examples(self, clients=None) -> np.ndarray:
        """n_k (training images) of ``clients`` (default every client): (K,) int."""
        sizes = np.array([len(y) for y in self.y_train])
        return sizes if clients is None else sizes[np.asarray(clients, dtype=int)]

    def validation_images(self) -> tuple[np.ndarray, np.ndarray]:
        """Every client's validation images together, (V, 32, 32, 3) uint8 and (V,) int: the
        accuracy on them is what the clients report when each sends its count of correct answers."""
        return np.concatenate(self.x_valid), np.concatenate(self.y_valid)


VALIDATION_FRACTION = 0.2  # share of each client's images held out as its validation images


def make_clients(task: vt.Task, n_clients: int, alpha: float, seed: int = 0, min_size: int = 10,
                 validation_fraction: float = VALIDATION_FRACTION) -> ImageClients:
    """Deal ``task``'s training images to clients with Dirichlet(α) label skew; each client then holds
    ``validation_fraction`` of its images (rounded, seeded) out as validation images; the test set is
    split with the same class shares.

    Raises:
        ValueError: a fraction outside [0, 1), or one that leaves some client no training image.
    """
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"the validation share must be in [0, 1), got {validation_fraction}")
    parts, shares = partition.dirichlet_partition(task.y_train, n_clients, alpha, seed, min_size)
    rng = np.random.default_rng([seed, 2])
    held = [rng.permutation(p) for p in parts]
    n_valid = [int(round(validation_fraction * len(p))) for p in parts]
    if any(v >= len(p) for v, p in zip(n_valid, parts)):
        raise ValueError(f"holding out {validation_fraction:.0%} leaves a client of {min(map(len, parts))} images "
                         "no training image; lower the share or raise min_size")
    valid = [np.sort(h[:v]) for h, v in zip(held, n_valid)]
    train = [np.sort(h[v:]) for h, v in zip(held, n_valid)]
    test_parts = partition.split_by_shares(task.y_test, shares, np.random.default_rng([seed, 1]))
    return ImageClients([task.x_train[p] for p in train], [task.y_train[p] for p in train],
                        [task.x_train[p] for p in valid], [task.y_train[p] for p in valid],
                        [task.x_test[p] for p in test_parts], [task.y_test[p] for p in test_parts],
                        partition.class_counts(task.y_train, train, len(task.class_names)))


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
        self._anchor = [tf.Variable(v, trainable=False) for v in self.trainable]  # θ of FedProx's term
        self.extractor, self.head = model.get_layer("extractor"), model.get_layer("head")
        self._shapes = [tuple(v.shape) for v in self.shared]
        self._loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self._step = tf.function(self._sgd_step, reduce_retracing=True)
        self._gradient = tf.function(self._loss_gradient, reduce_retracing=True)

    def _loss_gradient(self, x, y):
        with tf.GradientTape() as tape:
            loss = self._loss(y, self.model(x, training=True))
        return tape.gradient(loss, self.trainable)

    def _sgd_step(self, x, y, learning_rate, prox_mu):
        for variable, gradient, anchor in zip(self.trainable, self._loss_gradient(x, y), self._anchor):
            variable.assign_sub(learning_rate * (gradient + prox_mu * (variable - anchor)))  # θ ← θ − η ∇L

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
        return int(sum(np.prod(shape) for shape in self._shapes))

    def get_flat(self) -> np.ndarray:
        """The shared state as one row of the core's parameter table: (1, P) float32."""
        return np.concatenate([v.numpy().ravel() for v in self.shared])[None, :].astype(np.float32)

    def set_flat(self, params: np.ndarray) -> None:
        """Load a (1, P) row written by :meth:`get_flat`."""
        sizes = [int(np.prod(shape)) for shape in self._shapes]
        parts = np.split(np.asarray(params).ravel(), np.cumsum(sizes)[:-1])
        self.set_shared([part.reshape(shape) for part, shape in zip(parts, self._shapes)])

    def local_train(self, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, learning_rate: float,
                    seed_key: list[int], prox_mu: float = 0.0) -> None:
        """E epochs of mini-batch SGD on (x, y) in batches of ``batch_size`` (0: one full batch; the order
        from :func:`helpers.fedcore.batches`), batch order and augmentation seeded by ``seed_key``;
        with ``prox_mu`` > 0, FedProx's pull (μ/2)‖θ_k − θ‖² towards the weights at the start."""
        rate, mu = tf.constant(learning_rate, tf.float32), tf.constant(prox_mu, tf.float32)
        for anchor, variable in zip(self._anchor, self.trainable):
            anchor.assign(variable)
        augment_seed = int(np.random.default_rng(seed_key).integers(2**31))
        for i, state in enumerate(self._seed_states):
            state.assign(np.array([augment_seed, i], np.int64))
        for epoch in fc.batches(len(y), batch_size, epochs, seed_key):
            for batch in epoch:
                self._step(tf.constant(x[batch]), tf.constant(y[batch]), rate, mu)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy (0..1) of the current weights on (x, y)."""
        return vt.accuracy(self.model, x, y)


def federated_model(init: str, source: keras.Sequential | None, n_classes: int, seed: int = 0) -> FederatedModel:
    """Lesson 05's target model for ``init`` = "scratch" or "pretrained"; every layer trains, batch norm included."""
    if init not in INITS:
        raise ValueError(f"unknown starting point {init!r}; choose from {list(INITS)}")
    if init == "pretrained" and source is None:
        raise ValueError("a pre-trained start needs the source extractor")
    if init == "scratch":
        return FederatedModel(vt.target_model("scratch", None, n_classes, seed=seed))
    return FederatedModel(vt.target_model("finetune", source, n_classes, seed=seed, retrain_batch_norm=True))


def whole_model_bytes(clients, width: int) -> np.ndarray:
    """The whole model, one row of ``width`` float32 values without indices, to each client: (K,) bytes."""
    return np.full(len(clients), fc.row_bytes(width, indexed=False))


@dataclass
class ImageTask:
    """Image clients and the model they train: the task of :mod:`helpers.fedcore`."""

    model: FederatedModel
    clients: ImageClients

    @property
    def client_ids(self) -> np.ndarray:
        return self.clients.client_ids

    @property
    def statistics_columns(self) -> slice:
        """The batch-norm moving statistics, after the trainable weights in the row: averaged, never optimised."""
        return slice(sum(int(np.prod(v.shape)) for v in self.model.trainable), None)

    def num_examples(self, clients) -> np.ndarray:
        return self.clients.num_examples(clients)

    def download_bytes(self, clients, width: int) -> np.ndarray:
        return whole_model_bytes(clients, width)

    def train_clients(self, params, clients_state, clients, config: FedConfig, round_num: int) -> fc.Updates:
        """Step (2) for each client in turn: load θ, train locally, send Δ_k = θ_k − θ as one row."""
        deltas = []
        for k in clients:
            self.model.set_flat(params)
            self.model.local_train(self.clients.x_train[k], self.clients.y_train[k], config.local_epochs,
                                   config.batch_size, config.client_rate(round_num), [config.seed, round_num, int(k)],
                                   config.prox_mu)
            deltas.append(self.model.get_flat()[0] - params[0])
        k = len(clients)
        return fc.Updates(np.asarray(clients), self.num_examples(clients), np.arange(k), np.zeros(k, np.int64),
                          np.stack(deltas), self.download_bytes(clients, params.shape[1]))


def pooled_standardisation(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over every client's rows, (d,) each — what the
    server gets from one round in which each client sends Σf, Σf² and n (2d + 1 numbers, no image)."""
    n = sum(len(f) for f in features)
    total = sum(f.astype(np.float64).sum(axis=0) for f in features)
    squares = sum((f.astype(np.float64) ** 2).sum(axis=0) for f in features)
    mean = total / n
    return mean, np.sqrt(np.maximum(squares / n - mean**2, 1e-12))


@dataclass
class HeadTask:
    """FedAvg of a linear head on frozen features: lesson 05's method (b), federated.

    Each client turns its images into features once (the extractor never changes) and
    trains only a softmax-regression head W (d, C), b (C,) on them, in numpy: E epochs of
    mini-batch SGD on the cross-entropy, θ_k ← θ_k − η_c ∇L_k(θ_k). The model is one row of
    the core's table, (1, d·C + C): W row-major, then b. Small enough to retrain in well
    under a second, so a control panel can rerun it for any K and E.
    """

    features: list[np.ndarray]   # one (n_k, d) float32 array per client
    labels: list[np.ndarray]     # one (n_k,) int array per client
    n_classes: int
    statistics_columns = None    # a linear head keeps no running statistics

    @property
    def client_ids(self) -> np.ndarray:
        return np.arange(len(self.labels))

    @property
    def width(self) -> int:
        """d·C + C scalars: the row's width."""
        return (self.features[0].shape[1] + 1) * self.n_classes

    def num_examples(self, clients) -> np.ndarray:
        return np.array([len(self.labels[k]) for k in clients])

    def download_bytes(self, clients, width: int) -> np.ndarray:
        return whole_model_bytes(clients, width)

    def split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A (1, d·C + C) row → (W (d, C), b (C,)) copies."""
        d = self.features[0].shape[1]
        flat = np.asarray(params, np.float32).ravel()
        return flat[:d * self.n_classes].reshape(d, self.n_classes).copy(), flat[d * self.n_classes:].copy()

    def train_clients(self, params, clients_state, clients, config: FedConfig, round_num: int) -> fc.Updates:
        """Step (2) for each client: E epochs of SGD on its features from θ; sends Δ_k = θ_k − θ."""
        deltas = []
        for k in clients:
            w, b = self.split(params)
            x, y = self.features[k], self.labels[k]
            rate = config.client_rate(round_num)
            for epoch in fc.local_schedule(len(y), config, k, round_num):
                for batch in epoch:
                    logits = x[batch] @ w + b
                    p = np.exp(logits - logits.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    p[np.arange(len(batch)), y[batch]] -= 1.0        # ∂L/∂logits of the mean cross-entropy
                    p /= len(batch)
                    w -= rate * (x[batch].T @ p)
                    b -= rate * p.sum(axis=0)
            deltas.append(np.concatenate([w.ravel(), b]) - np.asarray(params, np.float32).ravel())
        n = len(clients)
        return fc.Updates(np.asarray(clients), self.num_examples(clients), np.arange(n), np.zeros(n, np.int64),
                          np.stack(deltas).astype(np.float32), whole_model_bytes(clients, self.width))

    def accuracy(self, params: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy (0..1) of the head ``params`` on features x (N, d), labels y (N,)."""
        w, b = self.split(params)
        return metrics.accuracy(x @ w + b, y)


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


def nearest_mean_head(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The server's side of :func:`class_mean_head`: per-client feature sums (K, C, d) and counts
    (K, C) → the nearest-class-mean head W (d, C), b (C,), with μ_c the pooled class mean
    (Σ_k s_{k,c} / Σ_k n_{k,c}), W[:, c] = μ_c and b_c = −½‖μ_c‖²."""
    means = sums.sum(axis=0) / counts.sum(axis=0)[:, None]
    return means.T, -0.5 * np.sum(means**2, axis=1)


def class_mean_head(model: FederatedModel, clients: ImageClients) -> fc.RoundReport:
    """One round that sets the head from the clients' class means (FedNCM, Legate et al., *Guiding
    the last layer in federated learning with pre-trained models*, NeurIPS 2023).

    Every client runs its training images through the extractor it received (inference mode, no
    augmentation) and sends, per class c, the sum of its feature vectors s_{k,c} (d numbers) and
    its count n_{k,c}: C·(d + 1) numbers, no gradients. The server forms the class means
    μ_c = Σ_k s_{k,c} / Σ_k n_{k,c} and writes the nearest-class-mean classifier as the linear
    head, logit_c(f) = f·μ_c − ½‖μ_c‖² (= −½‖f − μ_c‖² up to a term equal for every class), so
    fine-tuning starts from a head that already fits the features instead of a random one.

    Changes ``model``'s head in place; returns the round's report (all clients asked).

    Raises:
        ValueError: some class has no training image on any client.
    """
    start = time.perf_counter()
    n_classes, dim = model.head.kernel.shape[1], model.head.kernel.shape[0]
    sums, counts = np.zeros((clients.n_clients, n_classes, dim)), np.zeros((clients.n_clients, n_classes))
    for k, (x, y) in enumerate(zip(clients.x_train, clients.y_train)):                  # on each client
        features = vt.features(model.extractor, x)
        np.add.at(sums[k], y, features)
        counts[k] = np.bincount(y, minlength=n_classes)
    if (counts.sum(axis=0) == 0).any():
        raise ValueError(f"class(es) {np.flatnonzero(counts.sum(axis=0) == 0).tolist()} have no training image on any client")
    kernel, bias = nearest_mean_head(sums, counts)                                      # on the server
    model.head.kernel.assign(kernel.astype(np.float32))
    model.head.bias.assign(bias.astype(np.float32))
    n, model_bytes = clients.n_clients, fc.row_bytes(model.n_shared(), indexed=False)  # the model, to every client
    return fc.RoundReport(round=0, asked=clients.client_ids, trained=clients.client_ids, examples=0, steps=0,
                          bytes_down=n * model_bytes, bytes_up=n * n_classes * (dim + 1) * fc.FLOAT_BYTES,
                          dense_bytes=2 * n * model_bytes, seconds=time.perf_counter() - start,
                          update_norms=np.linalg.norm(sums.reshape(n, -1), axis=1))


class KeepBestOnValidation:
    """The ``evaluate`` of :func:`helpers.fedcore.train` that scores each state on validation data
    (``score``: parameters (1, P) → accuracy 0..1) and keeps the first state with the highest score.

    Attributes:
        scores: one score per call, in order (index = round when called from round 0).
        round: index of the kept state.  params: its parameters (a copy).
    """

    def __init__(self, score):
        self.score, self.scores, self.round, self.params = score, [], -1, None

    def __call__(self, state: fc.ServerState, _=None) -> dict:
        accuracy = self.score(state.params)
        if not self.scores or accuracy > max(self.scores):
            self.round, self.params = len(self.scores), np.array(state.params, copy=True)
        self.scores.append(accuracy)
        return {"valid_accuracy": accuracy}


def train_fedavg(model: FederatedModel, clients: ImageClients, x_test: np.ndarray, y_test: np.ndarray,
                 config: FedConfig, rounds: int, algorithm: fc.Algorithm = fc.FEDAVG, progress: bool = False,
                 head_round: bool = False, measure_dissimilarity: bool = True) -> tuple[np.ndarray, fc.History]:
    """``rounds`` rounds from the model's starting weights: FedAvg through the core (unless
    ``algorithm`` says otherwise); accuracy on the clients' validation images
    (:meth:`ImageClients.validation_images`) before the first round and after every round
    (``valid_accuracy``); the clients' gradient dissimilarity B² at the weights the core's rounds
    start from (``dissimilarity``).

    The round with the highest validation accuracy (the first of equals) is kept
    (``notes["chosen_round"]``, 0 = the start) and only its model is scored on the test images
    (x_test, y_test), once (``notes["test_accuracy"]``).

    ``head_round``: spend the first of the ``rounds`` on :func:`class_mean_head` (for a
    pre-trained extractor with a new head), then rounds 1 … ``rounds`` − 1 of the core; the
    history holds one report and one accuracy per round all the same. ``config.cosine_rounds``
    = ``rounds`` lets the client rate settle over the last rounds (lesson 05 used the same
    schedule). ``measure_dissimilarity`` = False skips B² (a full-batch gradient on every
    client, about as long as a round; ``notes["dissimilarity"]`` is then None).
    Returns (the kept round's parameters (1, P), history).
    """
    config.check(clients.n_clients)
    if head_round and rounds < 2:
        raise ValueError(f"a head round needs at least 2 rounds in all, got {rounds}")
    x_valid, y_valid = clients.validation_images()
    if len(y_valid) == 0:
        raise ValueError("the clients hold no validation images to choose the round on; deal them with "
                         "validation_fraction > 0")
    model.reset()

    def score(params):
        model.set_flat(params)
        return model.accuracy(x_valid, y_valid)

    kept = KeepBestOnValidation(score)
    head_report = None
    if head_round:  # round 0; the core's rounds are then numbered 1 … rounds − 1 (seeds, cosine schedule)
        kept(fc.ServerState(model.get_flat()))
        head_report = class_mean_head(model, clients)
    start = fc.ServerState(model.get_flat(), round=1 if head_round else 0)
    dissimilarity = gradient_dissimilarity(model, model.get_shared(), clients) if measure_dissimilarity else None
    _, history = fc.train(ImageTask(model, clients), start, fc.ClientState(), config, rounds - start.round,
                          kept, algorithm, progress)
    if head_report is not None:
        history.metrics["valid_accuracy"].insert(0, kept.scores[0])
        history.reports.insert(0, head_report)
    model.set_flat(kept.params)
    history.notes.update(dissimilarity=dissimilarity, chosen_round=kept.round,
                         test_accuracy=model.accuracy(x_test, y_test))
    return kept.params, history


def majority_class_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Accuracy on ``y_test`` of always answering the most common class of ``y_train`` (ties: the
    smallest label): what a client gets with no model at all, only its own label counts."""
    if len(y_test) == 0:
        raise ValueError("a client with no test images has no accuracy to measure")
    if len(y_train) == 0:
        raise ValueError("a client with no training images has no most common class")
    return float(np.mean(np.asarray(y_test) == np.bincount(np.asarray(y_train)).argmax()))


def personalise(model: FederatedModel, params: np.ndarray, clients: ImageClients, max_epochs: int,
                learning_rate: float, batch_size: int = 32, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Each client fine-tunes the global model on its own training images, one epoch at a time up to
    ``max_epochs``, and keeps the number of epochs (0 = the global model as it came) whose model
    scores best on its own validation images (the fewest of equals; 0 for a client with none).

    Returns one row per client with test images: ``client, n_train, n_valid, n_test, epochs`` (the
    number kept), ``global`` (accuracy of the global model on the client's own test images),
    ``personalised`` (of the kept model) and ``majority`` (always answering the client's most common
    training class: :func:`majority_class_accuracy`). Nothing leaves the client; the global state is
    not changed.
    """
    if int(max_epochs) != max_epochs or max_epochs < 0:
        raise ValueError(f"max_epochs must be a whole number ≥ 0, got {max_epochs}")
    rows = []
    for k in progress_bar(range(clients.n_clients), "clients personalised", enabled=progress):
        if len(clients.y_test[k]) == 0:
            continue
        model.set_flat(params)
        x_valid, y_valid = clients.x_valid[k], clients.y_valid[k]
        tries = int(max_epochs) if len(y_valid) else 0   # with no validation image, nothing to choose on: keep the global model
        best_epochs, best_score, best_params = 0, model.accuracy(x_valid, y_valid) if tries else 0.0, params
        for epoch in range(1, tries + 1):
            model.local_train(clients.x_train[k], clients.y_train[k], 1, batch_size, learning_rate,
                              [seed, PERSONALISE_TAG, k, epoch])
            score = model.accuracy(x_valid, y_valid)
            if score > best_score:
                best_epochs, best_score, best_params = epoch, score, model.get_flat()
        model.set_flat(params)
        before = model.accuracy(clients.x_test[k], clients.y_test[k])
        model.set_flat(best_params)
        rows.append({"client": k, "n_train": len(clients.y_train[k]), "n_valid": len(y_valid),
                     "n_test": len(clients.y_test[k]), "epochs": best_epochs, "global": before,
                     "personalised": model.accuracy(clients.x_test[k], clients.y_test[k]),
                     "majority": majority_class_accuracy(clients.y_train[k], clients.y_test[k])})
    model.set_flat(params)
    return pd.DataFrame(rows)


class FLTLExperiment:
    """The lesson's experiment, with every run cached: the CIFAR target task over ``n_clients``
    clients, FedAvg from scratch or from the pre-trained extractor.

    One :class:`FederatedModel` per starting point is built once and reset for each run, so
    a new setting (the widget) costs only its rounds. Defaults: K = ``clients_per_round``,
    E = ``local_epochs``; the same client rate η_c for both starting points, decaying on a
    cosine over the rounds. The pre-trained start spends the first of its ``rounds`` on the
    class-mean head (:func:`class_mean_head`), so both starts get the same number of rounds.
    ``methods``: name → (settings that differ from FedAvg's, :class:`helpers.fedcore.Algorithm`),
    e.g. FedProx's μ or FedAdam's server optimiser.

    :meth:`head_view` is the quick version for a control panel: FedAvg of a linear head on
    the source extractor's frozen features (:class:`HeadTask`), retrained in well under a
    second for any K and E.
    """

    def __init__(self, target: vt.Task, source: keras.Sequential, n_clients: int = 20, rounds: int = 30,
                 clients_per_round: int = 10, local_epochs: int = 2, client_lr: float = 0.05,
                 target_accuracy: float = 0.6, seed: int = 0, methods: dict | None = None, head_lr: float = HEAD_LR):
        self.target, self.n_clients, self.rounds, self.source, self.head_lr = target, n_clients, rounds, source, head_lr
        self.clients_per_round, self.local_epochs, self.client_lr = clients_per_round, local_epochs, client_lr
        self.target_accuracy, self.seed = target_accuracy, seed
        self.methods = {"FedAvg": ({}, fc.FEDAVG), **(methods or {})}
        self.models = {init: federated_model(init, source, len(target.class_names), seed) for init in INITS}
        self._clients: dict[float, ImageClients] = {}
        self._runs: dict[tuple, tuple[np.ndarray, fc.History]] = {}
        self._dissimilarity: dict[tuple, float] = {}  # B² depends on (α, start) only: measured once
        self._head_tasks: dict[float, tuple] = {}
        self._test_features: np.ndarray | None = None  # raw source features of the test images
        self._head_runs: dict[tuple, fc.History] = {}

    def clients(self, alpha: float) -> ImageClients:
        """The Dirichlet(α) federation (built once per α)."""
        if alpha not in self._clients:
            self._clients[alpha] = make_clients(self.target, self.n_clients, alpha, self.seed)
        return self._clients[alpha]

    def config(self, init: str, clients_per_round: int | None = None, local_epochs: int | None = None,
               method: str = "FedAvg") -> FedConfig:
        """The settings of one run (None: the experiment's defaults)."""
        if init not in INITS:
            raise ValueError(f"unknown starting point {init!r}; choose from {list(INITS)}")
        if method not in self.methods:
            raise ValueError(f"unknown method {method!r}; choose from {list(self.methods)}")
        config = FedConfig(self.clients_per_round if clients_per_round is None else clients_per_round,
                           self.local_epochs if local_epochs is None else local_epochs, batch_size=32,
                           client_lr=self.client_lr, cosine_rounds=self.rounds, seed=self.seed)
        config = dataclasses.replace(config, **self.methods[method][0])
        config.check(self.n_clients)
        return config

    def run(self, alpha: float, init: str, clients_per_round: int | None = None, local_epochs: int | None = None,
            progress: bool = False, method: str = "FedAvg") -> tuple[np.ndarray, fc.History]:
        """(final parameters, history) of one setting; trained on first request, then cached."""
        config = self.config(init, clients_per_round, local_epochs, method)
        key = (float(alpha), init, config.clients_per_round, config.local_epochs, method)
        start = (float(alpha), init)
        if key not in self._runs:
            params, history = train_fedavg(self.models[init], self.clients(alpha), self.target.x_test,
                                           self.target.y_test, config, self.rounds, self.methods[method][1], progress,
                                           head_round=init == "pretrained",
                                           measure_dissimilarity=start not in self._dissimilarity)
            self._dissimilarity.setdefault(start, history.notes["dissimilarity"])
            history.notes["dissimilarity"] = self._dissimilarity[start]
            self._runs[key] = params, history
        return self._runs[key]

    def sweep(self, alphas, progress: bool = True) -> pd.DataFrame:
        """Every α × starting point at the default K and E; one row per run: ``alpha, init,
        rounds_to_target`` (first round whose validation accuracy reaches the target; None: not
        reached), ``chosen_round`` (highest validation accuracy), ``valid_accuracy`` and
        ``test_accuracy`` (both at the chosen round), ``drift`` (B² at the start), ``seconds``."""
        combos = [(a, i) for a in alphas for i in INITS]
        rows = []
        for alpha, init in progress_bar(combos, "FedAvg runs", enabled=progress):
            _, history = self.run(alpha, init)
            rows.append({"alpha": alpha, "init": init,
                         "rounds_to_target": metrics.first_reaching(history.valid_accuracy, self.target_accuracy),
                         "chosen_round": history.chosen_round,
                         "valid_accuracy": history.valid_accuracy[history.chosen_round],
                         "test_accuracy": history.test_accuracy, "drift": history.dissimilarity,
                         "seconds": history.seconds[-1]})
        return pd.DataFrame(rows)

    def choose_methods(self, alpha: float, init: str, families: dict, progress: bool = False) -> dict:
        """For each family (e.g. "FedProx") the variant of :attr:`methods` with the highest validation
        accuracy at its own chosen round (the first listed of equals), at ``alpha`` from ``init``.

        Args:
            families: family → names of its variants in :attr:`methods`.
        Returns:
            family → the chosen variant's name.
        """
        chosen = {}
        for family, names in families.items():
            scores = {name: self.run(alpha, init, method=name, progress=progress)[1] for name in names}
            chosen[family] = max(names, key=lambda name: (scores[name].valid_accuracy[scores[name].chosen_round],
                                                         -names.index(name)))
        return chosen

    def head_task(self, alpha: float) -> tuple[HeadTask, tuple, tuple]:
        """The clients of α with their images turned into the source extractor's features once,
        standardised with the clients' pooled statistics (:func:`pooled_standardisation`; cached).

        Returns (the task, (validation features (V, d), labels (V,)), (test features (T, d),
        labels (T,))), both standardised the same way.
        """
        alpha = float(alpha)
        if alpha not in self._head_tasks:
            clients = self.clients(alpha)
            raw = [vt.features(self.source, x) for x in clients.x_train]
            mean, std = pooled_standardisation(raw)
            scale = lambda f: ((f - mean) / std).astype(np.float32)
            if self._test_features is None:
                self._test_features = vt.features(self.source, self.target.x_test)
            x_valid, y_valid = clients.validation_images()
            self._head_tasks[alpha] = (HeadTask([scale(f) for f in raw], list(clients.y_train),
                                                len(self.target.class_names)),
                                       (scale(vt.features(self.source, x_valid)), y_valid),
                                       (scale(self._test_features), self.target.y_test))
        return self._head_tasks[alpha]

    def head_run(self, alpha: float, clients_per_round: int, local_epochs: int) -> fc.History:
        """``rounds`` rounds of FedAvg on a linear head over the source's frozen features, from a
        zero head (cached): validation accuracy before the first round and after every round
        (``valid_accuracy``); the round with the highest (``notes["chosen_round"]``) is scored once
        on the test images (``notes["test_accuracy"]``)."""
        config = FedConfig(clients_per_round, local_epochs, batch_size=32, client_lr=self.head_lr, seed=self.seed)
        config.check(self.n_clients)
        key = (float(alpha), clients_per_round, local_epochs)
        if key not in self._head_runs:
            task, valid, test = self.head_task(alpha)
            kept = KeepBestOnValidation(lambda params: task.accuracy(params, *valid))
            start = fc.ServerState(np.zeros((1, task.width), np.float32))
            _, history = fc.train(task, start, fc.ClientState(), config, self.rounds, kept)
            history.notes.update(chosen_round=kept.round, test_accuracy=task.accuracy(kept.params, *test))
            self._head_runs[key] = history
        return self._head_runs[key]

    def head_view(self, alpha: float, clients_per_round: int, local_epochs: int) -> dict:
        """The quick panel's curves, {label: history}: the chosen K and E and, when they differ,
        the experiment's default K and E at the same α.

        Raises:
            ValueError: an impossible K or E.
        """
        curves = {f"K = {clients_per_round}, E = {local_epochs}": self.head_run(alpha, clients_per_round, local_epochs)}
        if (clients_per_round, local_epochs) != (self.clients_per_round, self.local_epochs):
            curves[f"default K = {self.clients_per_round}, E = {self.local_epochs}"] = self.head_run(
                alpha, self.clients_per_round, self.local_epochs)
        return curves
