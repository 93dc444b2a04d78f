"""The federated core: one round, ``(state, report) = run_round(state, …)``, with hooks.

Every federated experiment of the course — biased MF over MovieLens users (lessons 03,
09, 10), a Keras CNN over CIFAR-10 clients (lessons 07, 09), DP-FedAvg, attacks, compressed
uploads, FedProx and FedAdam — runs through :func:`run_round`. What differs between
them is passed in as hooks; the round itself is written once:

  (1) **sample**: ``algorithm.sampler`` picks who is asked this round and who reports
      (uniform K, Poisson with rate q, either with dropouts); the server sends the
      global parameters to every client asked;
  (2) **train**: the client-update function (the task's own ``train_clients``, or
      ``algorithm.client_update(task, …)`` with the same arguments after the task) trains each reporting client on its own data and
      returns its update Δ_k = θ_k − θ; private per-client values stay in ``clients``;
  (3) **transform**: ``algorithm.transforms`` rewrite each client's update before it is
      sent (clipping, compression with its residual kept on the client, attacks);
  (4) **aggregate**: ``algorithm.aggregator`` turns the updates into one Δ (weighted
      mean, clipped sum + Gaussian noise, coordinate median, trimmed mean);
  (5) **server step**: ``algorithm.server_optimizer`` moves θ with Δ (plain step η_s,
      momentum — FedAvgM —, or Adam — FedAdam, Reddi et al. 2021).

The round returns the new :class:`ServerState` and a :class:`RoundReport` of what really
happened: who trained, the bytes that travelled each way, the examples and gradient steps
the clients processed. :func:`train` only sums reports into a :class:`History`; it never
recomputes costs on its own.

**Parameters as a table.** The global parameters are one float32 array of shape
(n_rows, W). For MF a row is an item, (q_i, b_i), W = d + 1, and a client's update
touches only the rows of the items it rated. For a CNN the whole model is one row of
W = P scalars. An update is a set of rows (:class:`Updates`), so clipping, compression,
attacks and robust aggregation are written once for both.

**A task** is a model and its clients' data, as the round sees them: anything that
implements :class:`Task` — ``client_ids`` (N,), ``num_examples(clients)``,
``download_bytes(clients, width)``, ``train_clients(params, clients_state, clients, config,
round_num) -> Updates`` (step (2), the only place a task trains) and ``statistics_columns``: the
columns of the table that hold running statistics (batch-norm means and variances), whose averaged
change the server adds as it is, whatever the server optimiser; None for a task without them. The
course's tasks: :class:`helpers.federated.Federation` (biased MF),
:class:`helpers.fedsoftmax.SoftmaxFederation` (the softmax recommender),
:class:`helpers.federated_vision.ImageTask` (a Keras CNN), :class:`helpers.federated_vision.HeadTask`
(a linear head on frozen features), :class:`helpers.fedcrossdomain.MappingTask` (a cross-domain mapping),
:class:`helpers.fedinteraction.InteractionTask` (MF with a shared interaction network) and :class:`helpers.flower_rounds.NodeFederation` (step (2) over
Flower's network). **Client state** is any object with a ``residual`` dict (client id → its
compression residual); the task keeps its private per-client values there too (MF: user vectors
and biases). Only the client-update function and the transforms write to it, each where its
docstring says so.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Protocol, runtime_checkable

import numpy as np

from helpers.progress import progress as progress_bar

FLOAT_BYTES = 4
INDEX_BYTES = 4


# ---------------------------------------------------------------- settings and state


@dataclass(frozen=True)
class FedConfig:
    """Hyper-parameters of federated training (one type for every model of the course).

    Attributes:
        clients_per_round: K, clients the uniform sampler asks each round.
        local_epochs: E, passes over its own data each client makes per round.
        batch_size: B, local mini-batch size; 0 means one full batch per client.
        client_lr: η_c, the local SGD rate.  server_lr: η_s, the server step's rate.
        l2: penalty λ of the local loss (MF, as in lesson 02).
        prox_mu: μ of FedProx, the proximal term (μ/2)‖θ_k − θ‖² added to each client's
            local loss (0: plain FedAvg).
        cosine_rounds: when > 0, η_c decays over that many rounds as
            η_c · ½(1 + cos(π (t + ½) / T)); 0 keeps η_c constant.
        seed: seeds client sampling and local batch order.
    """

    clients_per_round: int = 10
    local_epochs: int = 1
    batch_size: int = 32
    client_lr: float = 0.05
    server_lr: float = 1.0
    l2: float = 0.0
    prox_mu: float = 0.0
    cosine_rounds: int = 0
    seed: int = 0

    @staticmethod
    def fedsgd(clients_per_round: int, learning_rate: float, client_lr: float = 0.1, l2: float = 0.02,
               seed: int = 0) -> "FedConfig":
        """FedSGD: θ ← θ − η Σ_k (n_k/n) ∇L_k with one full-batch gradient per client.

        Each client returns Δ_k = −η_c ∇L_k; the server step η_s = η / η_c makes the
        global rate exactly η.
        """
        return FedConfig(clients_per_round, 1, 0, client_lr, learning_rate / client_lr, l2, seed=seed)

    def check(self, n_clients: int | None = None) -> None:
        """Raise ValueError for settings that cannot run (on ``n_clients`` clients, if given)."""
        k = self.clients_per_round
        if int(k) != k or k < 1 or (n_clients is not None and k > n_clients):
            allowed = f"in 1..{n_clients}" if n_clients is not None else "≥ 1"
            raise ValueError(f"clients per round must be a whole number {allowed}, got {k}")
        if int(self.local_epochs) != self.local_epochs or self.local_epochs < 1:
            raise ValueError(f"local epochs must be a whole number ≥ 1, got {self.local_epochs}")
        if self.batch_size < 0:
            raise ValueError(f"batch size must be ≥ 1 (or 0 for full batch), got {self.batch_size}")
        for name, value in (("client learning rate", self.client_lr), ("server learning rate", self.server_lr)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        if not (np.isfinite(self.prox_mu) and self.prox_mu >= 0):
            raise ValueError(f"the FedProx μ must be ≥ 0, got {self.prox_mu}")

    def client_rate(self, round_num: int) -> float:
        """η_c in round ``round_num`` (constant, or on the cosine schedule of ``cosine_rounds``)."""
        if self.cosine_rounds <= 0:
            return float(self.client_lr)
        return float(self.client_lr * 0.5 * (1 + np.cos(np.pi * (round_num + 0.5) / self.cosine_rounds)))

    def local_steps(self, num_examples: np.ndarray) -> np.ndarray:
        """Gradient steps each client takes in one round: E · ⌈n_k / B⌉ (E for full batch): (K,) int."""
        n = np.asarray(num_examples, np.int64)
        per_epoch = np.where(n > 0, 1, 0) if self.batch_size == 0 else -(-n // self.batch_size)
        return self.local_epochs * per_epoch


@dataclass
class ServerState:
    """The global model: ``params`` (n_rows, W) float32, the ``round`` about to run, and the
    server optimiser's state (e.g. Adam's moments), keyed by name."""

    params: np.ndarray
    round: int = 0
    optimizer: dict = field(default_factory=dict)


@dataclass
class ClientState:
    """What stays on the clients between rounds when a task has no private parameters:
    ``residual``, client id → the (m_k, W) error-feedback residual of its compressed upload."""

    residual: dict = field(default_factory=dict)


@dataclass
class Updates:
    """What the reporting clients send in one round, as rows of the parameter table.

    Attributes:
        clients: (K,) client ids.  num_examples: (K,) n_k, the aggregation weights.
        slot: (R,) which client (index into ``clients``) each row belongs to.
        rows: (R,) the row of the parameter table each update row changes.
        values: (R, W) float32, the change Δ of that row.
        upload_bytes: (K,) what each client's upload costs on the wire.
    """

    clients: np.ndarray
    num_examples: np.ndarray
    slot: np.ndarray
    rows: np.ndarray
    values: np.ndarray
    upload_bytes: np.ndarray

    @staticmethod
    def empty(width: int) -> "Updates":
        """No client reported."""
        none = np.zeros(0, np.int64)
        return Updates(none, none, none, none, np.zeros((0, width), np.float32), none)

    def client(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows (m,), values (m, W)) of the k-th client (k indexes ``clients``)."""
        mine = self.slot == k
        return self.rows[mine], self.values[mine]

    def norms(self) -> np.ndarray:
        """L2 norm of each client's whole update: (K,) float64."""
        squared = (self.values.astype(np.float64) ** 2).sum(axis=1)
        return np.sqrt(np.bincount(self.slot, weights=squared, minlength=len(self.clients)))

    def keep(self, positions) -> "Updates":
        """The updates of the clients at ``positions`` (indices into ``clients``)."""
        positions = np.sort(np.asarray(positions, dtype=int))
        new_slot = np.full(len(self.clients), -1)
        new_slot[positions] = np.arange(len(positions))
        kept = new_slot[self.slot] >= 0
        return Updates(self.clients[positions], self.num_examples[positions], new_slot[self.slot[kept]],
                       self.rows[kept], self.values[kept], self.upload_bytes[positions])


def row_bytes(width: int, indexed: bool = True) -> int:
    """Bytes of one row of W float32 values on the wire, with its 4-byte row index if ``indexed``."""
    return width * FLOAT_BYTES + (INDEX_BYTES if indexed else 0)


def batches(n: int, batch_size: int, epochs: int, key) -> list[list[np.ndarray]]:
    """``epochs`` passes over n examples, each a permutation of 0 … n − 1 seeded by (*key, epoch) and
    cut into consecutive batches of ``batch_size`` (0: the whole pass is one batch; the last batch of
    a pass may be smaller): ``epochs`` lists of int index arrays. Every local training in the course
    (every task, and the CNN clients' Keras loop) takes its batches from here.

    Raises:
        ValueError: a batch size that is not a whole number ≥ 0.
    """
    if int(batch_size) != batch_size or batch_size < 0:
        raise ValueError(f"batch size must be a whole number ≥ 1 (or 0 for full batch), got {batch_size}")
    size = int(batch_size) or max(n, 1)
    passes = (np.random.default_rng([*key, epoch]).permutation(n) for epoch in range(epochs))
    return [[order[i:i + size] for i in range(0, n, size)] for order in passes]


def local_schedule(n: int, config: FedConfig, client: int, round_num: int) -> list[list[np.ndarray]]:
    """A client's batches for each of its E local epochs (:func:`batches` of its n examples at the
    config's batch size), seeded by (seed, round, client, epoch), so that the vectorised and the
    one-client-at-a-time implementations of a task see the same batches."""
    return batches(n, config.batch_size, config.local_epochs, [config.seed, round_num, int(client)])


@runtime_checkable
class Task(Protocol):
    """The contract between :func:`run_round` and a model with its clients (see the module docstring).

    Attributes:
        client_ids: (N,) int, every client the sampler may ask.
        statistics_columns: columns of the parameter table that are running statistics (averaged,
            never optimised), or None.
    """

    client_ids: np.ndarray
    statistics_columns: slice | None

    def num_examples(self, clients: np.ndarray) -> np.ndarray:
        """n_k, the aggregation weight of each client in ``clients``: (K,) int."""

    def download_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """Bytes of the model each client in ``clients`` receives in step (1): (K,) int."""

    def train_clients(self, params: np.ndarray, clients_state, clients: np.ndarray, config: "FedConfig",
                      round_num: int) -> "Updates":
        """Step (2): train ``clients`` from the global ``params`` (n_rows, W) on their own data; keep
        their private values in ``clients_state``; return what they send."""


# ---------------------------------------------------------------- (1) samplers


@dataclass(frozen=True)
class Sample:
    """Who was asked this round (received the model) and who reported back; sorted ids."""

    asked: np.ndarray
    reporting: np.ndarray


Sampler = Callable[[np.ndarray, FedConfig, int], Sample]


def uniform(client_ids: np.ndarray, config: FedConfig, round_num: int) -> Sample:
    """K distinct clients, seeded by (seed, round); all of them report."""
    config.check(len(client_ids))
    rng = np.random.default_rng([config.seed, round_num])
    chosen = np.sort(rng.choice(client_ids, config.clients_per_round, replace=False))
    return Sample(chosen, chosen)


def poisson(rate: float) -> Sampler:
    """A sampler in which every client takes part independently with probability q = ``rate``
    (what DP accountants assume); the number of clients varies from round to round."""
    if not 0 < rate <= 1:
        raise ValueError(f"sampling rate q = clients per round / N must lie in (0, 1], got {rate:.3g}")

    def sample(client_ids: np.ndarray, config: FedConfig, round_num: int) -> Sample:
        rng = np.random.default_rng([config.seed, round_num, 1])
        chosen = client_ids[rng.random(len(client_ids)) < rate]
        return Sample(chosen, chosen)

    return sample


def with_dropout(sampler: Sampler, share: float, seed: int = 0) -> Sampler:
    """``sampler``, after which each asked client drops out with probability ``share``: it
    received the model but never trains or reports (its download still counts)."""
    if not 0 <= share < 1:
        raise ValueError(f"dropout share must lie in [0, 1), got {share}")

    def sample(client_ids: np.ndarray, config: FedConfig, round_num: int) -> Sample:
        asked = sampler(client_ids, config, round_num).asked
        stays = np.random.default_rng([seed, round_num, 2]).random(len(asked)) >= share
        return Sample(asked, asked[stays])

    return sample


# ---------------------------------------------------------------- (3) transforms


@dataclass
class RoundContext:
    """What transforms and aggregators may read: the state being updated, the round, the
    task and the client state (transforms that keep client state write only their clients')."""

    state: ServerState
    task: object
    clients_state: object
    config: FedConfig


Transform = Callable[[Updates, RoundContext], Updates]


def clip(clip_norm: float) -> Transform:
    """Scale each client's whole update to L2 norm ≤ C (the others unchanged)."""
    if not clip_norm > 0:
        raise ValueError(f"clipping norm C must be > 0, got {clip_norm}")

    def transform(updates: Updates, context: RoundContext) -> Updates:
        factor = np.minimum(1.0, clip_norm / np.maximum(updates.norms(), 1e-12))
        return dataclasses.replace(updates, values=(updates.values * factor[updates.slot, None]).astype(np.float32))

    return transform


# ---------------------------------------------------------------- (4) aggregators


Aggregator = Callable[[Updates, tuple, RoundContext], np.ndarray]


def sum_rows(updates: Updates, shape: tuple, client_weights: np.ndarray, dtype=np.float32) -> np.ndarray:
    """Σ_k w_k Δ_k as a dense (n_rows, W) table of ``dtype``: each client's rows added where they belong.

    When every client sent the whole table in row order (a full-softmax or CNN update), the sum is one
    matrix product; otherwise each row is added at its index (``np.add.at``). Same sums either way.
    """
    weights = np.asarray(client_weights, dtype)
    k = len(updates.clients)
    if len(updates.rows) == k * shape[0] and np.array_equal(updates.rows, np.tile(np.arange(shape[0]), k)):
        return np.tensordot(weights, updates.values.reshape(k, *shape).astype(dtype, copy=False), axes=1)
    total = np.zeros(shape, dtype)
    np.add.at(total, updates.rows, weights[updates.slot, None] * updates.values.astype(dtype, copy=False))
    return total


def weighted_mean(updates: Updates, shape: tuple, context: RoundContext | None = None) -> np.ndarray:
    """FedAvg: Δ = Σ_k (n_k / Σ_j n_j) Δ_k, dense (n_rows, W); zeros when nobody reported."""
    total = max(int(np.sum(updates.num_examples)), 1)
    return sum_rows(updates, shape, np.asarray(updates.num_examples) / total)


def noisy_sum(noise_std: float, denominator: float, seed: int = 0) -> Aggregator:
    """(Σ_k Δ_k + N(0, noise_std²) on every coordinate) / ``denominator``, seeded by (seed, round).

    With clipped updates this is the Gaussian mechanism of DP-FedAvg (every row gets noise,
    so the sum no longer tells which rows any client touched).
    """
    if noise_std < 0:
        raise ValueError(f"noise standard deviation must be ≥ 0, got {noise_std}")
    if not denominator > 0:
        raise ValueError(f"the denominator (expected clients per round) must be > 0, got {denominator}")

    def aggregate(updates: Updates, shape: tuple, context: RoundContext) -> np.ndarray:
        total = sum_rows(updates, shape, np.ones(len(updates.clients)), np.float64)
        total += np.random.default_rng([seed, context.state.round]).normal(0, noise_std, shape)
        return (total / denominator).astype(np.float32)

    return aggregate


# ---------------------------------------------------------------- (5) server optimisers


ServerOptimizer = Callable[[np.ndarray, np.ndarray, dict, FedConfig], tuple[np.ndarray, dict]]


def server_sgd(params: np.ndarray, delta: np.ndarray, state: dict, config: FedConfig) -> tuple[np.ndarray, dict]:
    """θ ← θ + η_s Δ (FedAvg with η_s = 1 is plain averaging of the clients' models)."""
    return (params + config.server_lr * delta).astype(np.float32), state


def server_momentum(beta: float = 0.9) -> ServerOptimizer:
    """FedAvgM (Hsu et al. 2019): v ← β v + Δ, θ ← θ + η_s v."""
    if not 0 <= beta < 1:
        raise ValueError(f"momentum β must lie in [0, 1), got {beta}")

    def step(params, delta, state, config):
        velocity = beta * state.get("velocity", np.zeros_like(delta)) + delta
        return (params + config.server_lr * velocity).astype(np.float32), {"velocity": velocity}

    return step


def server_adam(beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> ServerOptimizer:
    """FedAdam (Reddi et al. 2021): m ← β₁m + (1−β₁)Δ, v ← β₂v + (1−β₂)Δ², θ ← θ + η_s m / (√v + τ).

    τ (the paper's adaptivity) bounds the step where v is tiny; there is no bias correction,
    as in the paper.
    """
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1 and tau > 0):
        raise ValueError(f"need 0 ≤ β₁, β₂ < 1 and τ > 0, got β₁ = {beta1}, β₂ = {beta2}, τ = {tau}")

    def step(params, delta, state, config):
        m = beta1 * state.get("m", np.zeros_like(delta)) + (1 - beta1) * delta
        v = beta2 * state.get("v", np.zeros_like(delta)) + (1 - beta2) * delta**2
        return (params + config.server_lr * m / (np.sqrt(v) + tau)).astype(np.float32), {"m": m, "v": v}

    return step


# ---------------------------------------------------------------- the round


@dataclass(frozen=True)
class Algorithm:
    """The hooks of a round. The defaults are FedAvg: uniform K, no transforms, weighted mean,
    θ ← θ + η_s Δ, and the task's own client update."""

    sampler: Sampler = uniform
    client_update: Callable | None = None
    transforms: tuple = ()
    aggregator: Aggregator = weighted_mean
    server_optimizer: ServerOptimizer = server_sgd


FEDAVG = Algorithm()


@dataclass(frozen=True)
class RoundReport:
    """What happened in one round.

    Attributes:
        round: the round's number (0 first).  asked, trained: client ids sent the model / that
            trained and reported.
        examples: Σ_k n_k · E, per-example gradients computed by the clients that trained.
        steps: local gradient steps summed over those clients.
        bytes_down: bytes of the model sent to the clients asked.
        bytes_up: bytes the clients uploaded (after any compression; attackers included).
        dense_bytes: what the same clients would have exchanged, both ways, had every message
            been the whole parameter table in float32.
        seconds: wall-clock time of the round.
        update_norms: (len(trained),) L2 norm of each trained client's update before transforms.
    """

    round: int
    asked: np.ndarray
    trained: np.ndarray
    examples: int
    steps: int
    bytes_down: int
    bytes_up: int
    dense_bytes: int
    seconds: float
    update_norms: np.ndarray


def run_round(state: ServerState, task: Task, clients_state, config: FedConfig,
              algorithm: Algorithm = FEDAVG) -> tuple[ServerState, RoundReport]:
    """One federated round (steps (1)–(5) of the module docstring); returns (new state, report).

    ``clients_state`` is updated in place by the client update (private values) and by
    transforms that keep client state (compression residuals); ``state`` is not changed.
    """
    start = time.perf_counter()
    shape = state.params.shape
    sample = algorithm.sampler(task.client_ids, config, state.round)                        # (1)
    if len(sample.reporting) and algorithm.client_update is not None:
        updates = algorithm.client_update(task, state.params, clients_state, sample.reporting, config, state.round)
    elif len(sample.reporting):                                                                    # (2)
        updates = task.train_clients(state.params, clients_state, sample.reporting, config, state.round)
    else:
        updates = Updates.empty(shape[1])
    trained = np.asarray(updates.clients, dtype=np.int64)  # who really reported (on a network, not always all asked)
    norms = updates.norms()
    context = RoundContext(state, task, clients_state, config)
    for transform in algorithm.transforms:                                                    # (3)
        updates = transform(updates, context)
    delta = algorithm.aggregator(updates, shape, context)                                    # (4)
    params, optimizer = algorithm.server_optimizer(state.params, delta, state.optimizer, config)  # (5)
    if task.statistics_columns is not None:  # running statistics (batch norm) are averaged, never optimised
        columns = task.statistics_columns
        params[:, columns] = state.params[:, columns] + delta[:, columns]
    counts = task.num_examples(trained)
    table = shape[0] * shape[1] * FLOAT_BYTES
    report = RoundReport(state.round, sample.asked, trained,
                         int(np.sum(counts)) * config.local_epochs, int(np.sum(config.local_steps(counts))),
                         int(np.sum(task.download_bytes(sample.asked, shape[1]))), int(np.sum(updates.upload_bytes)),
                         (len(sample.asked) + len(updates.clients)) * table, time.perf_counter() - start, norms)
    return ServerState(params, state.round + 1, optimizer), report


# ---------------------------------------------------------------- training and its history


@dataclass
class History:
    """Evaluations and round reports of one training run.

    ``metrics[name]`` has one value before round 1 and one after every round (e.g.
    ``test_rmse``, ``accuracy``); ``notes`` holds single numbers measured once (e.g. the
    clients' gradient dissimilarity at the start). Both read as attributes:
    ``history.test_rmse``. Costs are sums of the :class:`RoundReport` s, cumulative, 0 first.
    """

    metrics: dict = field(default_factory=dict)
    reports: list = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    def __getattr__(self, name):
        for store in ("metrics", "notes"):
            values = self.__dict__.get(store, {})
            if name in values:
                return values[name]
        raise AttributeError(f"History has no attribute or metric {name!r}")

    def _cumulative(self, key: str, scale: float = 1.0) -> list:
        return [0.0] + list(np.cumsum([getattr(r, key) for r in self.reports]) / scale)

    @property
    def mb(self) -> list[float]:
        """Cumulative MB exchanged, down + up (1 MB = 10⁶ bytes)."""
        return [down + up for down, up in zip(self.mb_down, self.mb_up)]

    @property
    def mb_down(self) -> list[float]:
        """Cumulative MB sent to the clients."""
        return self._cumulative("bytes_down", 1e6)

    @property
    def mb_up(self) -> list[float]:
        """Cumulative MB uploaded by the clients."""
        return self._cumulative("bytes_up", 1e6)

    @property
    def mb_dense(self) -> list[float]:
        """Cumulative MB had every message been the whole parameter table."""
        return self._cumulative("dense_bytes", 1e6)

    @property
    def seconds(self) -> list[float]:
        """Cumulative wall-clock seconds of the rounds (evaluation not included)."""
        return self._cumulative("seconds")

    @property
    def client_examples(self) -> list[int]:
        """Cumulative per-example gradients computed by clients, Σ_rounds Σ_k n_k · E."""
        return [0] + list(np.cumsum([r.examples for r in self.reports]).astype(int))

    @property
    def clients_trained(self) -> list[int]:
        """Clients that trained in each round."""
        return [len(r.trained) for r in self.reports]


def train(task: Task, state: ServerState, clients_state, config: FedConfig, rounds: int,
          evaluate: Callable[[ServerState, object], dict], algorithm: Algorithm = FEDAVG,
          progress: bool = False, desc: str = "rounds") -> tuple[ServerState, History]:
    """``rounds`` calls of :func:`run_round` from ``state``; ``evaluate(state, clients_state)``
    → {metric: value} before the first round and after every round.

    Returns (final state, :class:`History`). ``clients_state`` ends in its final state.
    """
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a whole number ≥ 1, got {rounds}")
    config.check()  # the sampler checks K against the clients it draws from
    history = History({name: [value] for name, value in evaluate(state, clients_state).items()})
    for _ in progress_bar(range(int(rounds)), desc, enabled=progress):
        state, report = run_round(state, task, clients_state, config, algorithm)
        history.reports.append(report)
        for name, value in evaluate(state, clients_state).items():
            history.metrics[name].append(value)
    return state, history


class ExtendableRun:
    """One training run that grows on demand, for control panels whose slider sets the rounds.

    :meth:`first` returns the :class:`History` of the run's first ``rounds`` rounds and trains
    only the rounds not run yet. Every round's randomness is keyed by (seed, round) — sampling,
    local batches, DP noise — and the server optimiser's state travels in the
    :class:`ServerState`, so the first r rounds of a longer run are exactly a run of r rounds.
    The states reached are those after the most rounds asked for so far.
    """

    def __init__(self, task: Task, state: ServerState, clients_state, config: FedConfig,
                 evaluate: Callable[[ServerState, object], dict], algorithm: "Algorithm | None" = None):
        self.task, self.state, self.clients_state, self.config = task, state, clients_state, config
        self.evaluate, self.algorithm = evaluate, algorithm or FEDAVG
        self.history = History({name: [value] for name, value in evaluate(state, clients_state).items()})

    @property
    def rounds_run(self) -> int:
        return len(self.history.reports)

    def first(self, rounds: int, progress: bool = False) -> History:
        """The history of rounds 1 … ``rounds`` (a copy), training the missing ones first (with a
        progress bar if ``progress``)."""
        if int(rounds) != rounds or rounds < 1:
            raise ValueError(f"rounds must be a whole number ≥ 1, got {rounds}")
        missing = int(rounds) - self.rounds_run
        if missing > 0:
            self.state, more = train(self.task, self.state, self.clients_state, self.config, missing, self.evaluate,
                                     self.algorithm, progress)
            for name, values in more.metrics.items():
                self.history.metrics[name] += values[1:]  # values[0] re-evaluated the state already recorded
            self.history.reports += more.reports
        return History({name: values[:rounds + 1] for name, values in self.history.metrics.items()},
                       self.history.reports[:rounds], dict(self.history.notes))


class RunCache:
    """Seeded runs, one per setting, each an :class:`ExtendableRun` — what a control panel draws:
    a setting seen before costs nothing; more rounds of it cost only the rounds not run yet.

    Args:
        start: ``start(key)`` → (task, state, clients_state), a fresh seeded start for a new run;
            ``key`` is what :meth:`get` was given (it may name task settings, e.g. the softmax form).
        evaluate: ``evaluate(task, state, clients_state)`` → {metric: value}, recorded before
            round 1 and after every round (e.g. test RMSE, validation HR@10).
    """

    def __init__(self, start: Callable[[Hashable], tuple], evaluate: Callable[[object, ServerState, object], dict]):
        self.start, self.evaluate = start, evaluate
        self._runs: dict = {}

    def get(self, config: FedConfig, algorithm: Algorithm = FEDAVG, key: Hashable = None) -> ExtendableRun:
        """The run of ``config`` with ``algorithm``; ``key`` names the algorithm's settings (hashable,
        e.g. a frozen dataclass) whenever it is not plain FedAvg, and any task settings."""
        if algorithm is not FEDAVG and key is None:
            raise ValueError("a run with its own algorithm needs a key that names its settings")
        config.check()
        if (config, key) not in self._runs:
            task, state, clients_state = self.start(key)
            self._runs[config, key] = ExtendableRun(task, state, clients_state, config,
                                                    lambda s, cs: self.evaluate(task, s, cs), algorithm)
        return self._runs[config, key]
