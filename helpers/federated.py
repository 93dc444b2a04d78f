"""Federated matrix factorisation: the MovieLens users as clients of the federated core (lesson 03).

Every user is a client holding only their own ratings. The model is lesson 02's
biased MF, r̂_ui = μ + b_u + b_i + p_u · q_i, split by ownership:

- **global**, on the server, aggregated every round: the item table, one row
  (q_i, b_i) of d + 1 values per item — the parameter table of
  :mod:`helpers.fedcore`, shape (I, d + 1);
- **private**, on each client, never sent: the user's vector p_u (d,) and bias b_u.
  They persist across rounds in a :class:`ClientStore` (in this simulation one array,
  of which client u only ever reads and writes row u).

The round itself — sample, train, transform, aggregate, server step — is
:func:`helpers.fedcore.run_round`; this module supplies the task: the clients' data
(:class:`Federation`) and their local training, step (2). A client that rated m_k items
downloads and uploads only those m_k rows, each with its 4-byte index.

Local training comes in two implementations with the same arguments:
:func:`reference_training` loops over clients one at a time (short, readable),
:func:`local_training` trains all of them inside one compiled TensorFlow function
(gather/segment ops over the flat batch of all their ratings). A test checks they agree.

FedSGD is the special case E = 1, one full batch per client, η_s = η/η_c:
Δ_k = −η_c ∇L_k, and the server step is θ ← θ − η Σ_k (n_k/n) ∇L_k.

μ, the global mean rating, is computed once before training (in a real deployment by
one federated sum of (Σ ratings, count)) and then fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import functools

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers.fedcore import FedConfig, ServerState, Updates
from helpers.metrics import ITEM_BIAS_SHRINKAGE, damped_item_bias, unit_sums


@dataclass
class ClientStore:
    """What stays on the clients: private user_vec (U, d) and user_bias (U,), and each
    client's compression residual (``residual``, client id → (m_k, d + 1))."""

    user_vec: np.ndarray
    user_bias: np.ndarray
    residual: dict = field(default_factory=dict)


@dataclass
class Federation:
    """The clients' data, as the simulation holds it — the MF task of :mod:`helpers.fedcore`.

    Attributes:
        train, test: ratings frames with ``user_idx, item_idx, rating`` (each user's own
            80/20 split: the test ratings also stay on the client).
        n_users, n_items: index space sizes.  mu: the fixed global mean μ.
        valid: None, or validation ratings held out of training on each client (the same columns),
            on which rounds and rates are chosen; the runs then also record ``valid_rmse``.
        client_ids: (N,) the ids of all clients (users with training data).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    mu: float
    valid: pd.DataFrame | None = None
    client_ids: np.ndarray = field(init=False)
    statistics_columns = None  # MF keeps no running statistics

    def __post_init__(self):
        order = np.argsort(self.train["user_idx"].to_numpy(), kind="stable")
        self.train = self.train.iloc[order].reset_index(drop=True)
        users = self.train["user_idx"].to_numpy()
        self.client_ids, starts, counts = np.unique(users, return_index=True, return_counts=True)
        self._start = np.zeros(self.n_users, np.int64)
        self._count = np.zeros(self.n_users, np.int64)
        self._start[self.client_ids], self._count[self.client_ids] = starts, counts
        self._items = self.train["item_idx"].to_numpy(np.int32)
        self._ratings = self.train["rating"].to_numpy(np.float32)

    def client_data(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, ratings) of one client's training data: (n_k,) int32, (n_k,) float32."""
        part = slice(self._start[client], self._start[client] + self._count[client])
        return self._items[part], self._ratings[part]

    def num_examples(self, clients: np.ndarray) -> np.ndarray:
        """n_k for each client id: (K,) int."""
        return self._count[np.asarray(clients, dtype=np.int64)]

    def download_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """Bytes each client downloads: the rows of the items it rated, with their indices: (K,) int."""
        return self.num_examples(clients) * fc.row_bytes(width)

    def train_clients(self, params, store, clients, config, round_num) -> Updates:
        """Step (2) of the core's round: :func:`local_training` (the vectorised client update)."""
        return local_training(self, params, store, clients, config, round_num)


def init_state(federation: Federation, dim: int, seed: int = 0, scale: float = 0.1) -> tuple[ServerState, ClientStore]:
    """The global item table (I, d + 1) and every client's private values: vectors N(0, scale²),
    biases 0, seeded.

    A client's initial vector is what it would draw itself the first time it is
    sampled; drawing all of them up front just makes the simulation deterministic.
    """
    return init_tables(federation.n_users, federation.n_items, dim, seed, scale)


def init_tables(n_users: int, n_items: int, dim: int, seed: int = 0, scale: float = 0.1) -> tuple[ServerState, ClientStore]:
    """:func:`init_state` from the index-space sizes alone (what a server and a Flower node know)."""
    rng = np.random.default_rng(seed)
    item_vec = rng.normal(0, scale, (n_items, dim)).astype(np.float32)
    store = ClientStore(rng.normal(0, scale, (n_users, dim)).astype(np.float32), np.zeros(n_users, np.float32))
    return ServerState(np.concatenate([item_vec, np.zeros((n_items, 1), np.float32)], axis=1)), store


def item_table(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors Q (I, d), item biases b (I,)) of the parameter table (I, d + 1) (views)."""
    return params[:, :-1], params[:, -1]


# ---------------------------------------------------------------- reference: one client at a time


def client_update(federation: Federation, params: np.ndarray, store: ClientStore, config: FedConfig,
                  client: int, round_num: int) -> tuple[np.ndarray, np.ndarray]:
    """Local training of one client: E epochs of mini-batch SGD on its ratings, loss
    mean(error² + λ‖·‖²) + (μ_prox/2)‖θ_k − θ‖² over the rows it holds.

    Updates the client's private ``store`` rows in place; returns what it sends:
    (items (m,), Δ of those rows of the item table (m, d + 1)).
    """
    from helpers.tf_quiet import tf

    items, ratings = federation.client_data(client)
    start = params[items]
    rows = tf.Variable(start)                              # local copy of the rows it needs: (q_i, b_i)
    p = tf.Variable(store.user_vec[client])
    bu = tf.Variable(store.user_bias[client])
    rate = config.client_rate(round_num)
    for epoch in fc.local_schedule(len(items), config, client, round_num):
        for batch in epoch:
            with tf.GradientTape() as tape:
                qb, bb = tf.gather(rows[:, :-1], batch), tf.gather(rows[:, -1], batch)
                error = ratings[batch] - (federation.mu + bu + bb + tf.linalg.matvec(qb, p))
                penalty = tf.reduce_sum(qb**2, axis=1) + tf.reduce_sum(p**2) + bb**2 + bu**2
                loss = (tf.reduce_mean(error**2 + config.l2 * penalty)
                        + config.prox_mu / 2 * tf.reduce_sum((rows - start) ** 2))
            for variable, gradient in zip([rows, p, bu], tape.gradient(loss, [rows, p, bu])):
                variable.assign_sub(rate * tf.convert_to_tensor(gradient))
    store.user_vec[client], store.user_bias[client] = p.numpy(), bu.numpy()
    return items, rows.numpy() - start


def reference_training(federation: Federation, params: np.ndarray, store: ClientStore, clients: np.ndarray,
                       config: FedConfig, round_num: int) -> Updates:
    """Step (2) for ``clients``, one :func:`client_update` after another (a client-update hook:
    ``Algorithm(client_update=reference_training)``). Private rows are updated in place."""
    sent = [client_update(federation, params, store, config, c, round_num) for c in clients]
    counts = federation.num_examples(clients)
    return Updates(np.asarray(clients), counts, np.repeat(np.arange(len(clients)), [len(i) for i, _ in sent]),
                   np.concatenate([i for i, _ in sent]).astype(np.int64), np.concatenate([d for _, d in sent]),
                   federation.download_bytes(clients, params.shape[1]))


# ---------------------------------------------------------------- vectorised: all clients at once


@functools.cache
def _compiled_training():
    """The compiled step (2) for all sampled clients (TensorFlow is imported here, on first use,
    so that a process that only evaluates or aggregates — a Flower ServerApp — never loads it)."""
    from helpers.tf_quiet import tf

    @tf.function(reduce_retracing=True)
    def _train_clients(table, p_start, bu_start, slot, items, ratings, rows, weight, active,
                       mu, client_lr, l2, prox_mu, prox: bool):
        """Local training of all sampled clients at once; returns each rating's row change and the user rows.

        Shapes: R = total ratings of the sampled clients, K = clients, E = local epochs,
        S = most local steps of any client in an epoch, W = K × B (one batch per client).
            table (I, d + 1): the global item table sent in step (1).
            p_start (K, d), bu_start (K,): the clients' private rows.
            slot, items, ratings (R,): each rating's client (0..K-1), item and value.
            rows (E, S, W): which ratings every client uses in each local step; the
                padding value R points at a dummy row.  weight (E, S, W): 1 / batch size
                (0 for padding), so each client's loss is the mean over its own batch.
            active (E, S, K): 1 where the client takes a step (the FedProx term moves only
                its rows, and only then).  prox: whether μ_prox > 0 (a Python bool: without
                FedProx the step touches only the batch rows, which keeps it fast).
        Every rating is its own row of the clients' local item tables (a user rates an
        item at most once), so "client k's copy of q_i" is row r of ``q``. Returns the rows'
        changes (R, d + 1) and the clients' new user vectors and biases.
        """
        q0 = tf.concat([tf.gather(table[:, :-1], items), tf.zeros_like(table[:1, :-1])], axis=0)  # (R + 1, d)
        b0 = tf.concat([tf.gather(table[:, -1], items), tf.zeros_like(table[:1, -1])], axis=0)    # (R + 1,)
        q, b = q0, b0
        slot = tf.concat([slot, [0]], axis=0)
        ratings = tf.concat([ratings, [0.0]], axis=0)
        p, bu = p_start, bu_start
        for e in tf.range(tf.shape(rows)[0]):
            for s in tf.range(tf.shape(rows)[1]):
                batch, share = rows[e, s], weight[e, s]
                qb, bb = tf.gather(q, batch), tf.gather(b, batch)
                with tf.GradientTape() as tape:
                    tape.watch([qb, bb, p, bu])
                    pr, bur = tf.gather(p, tf.gather(slot, batch)), tf.gather(bu, tf.gather(slot, batch))
                    error = tf.gather(ratings, batch) - (mu + bur + bb + tf.reduce_sum(qb * pr, axis=1))
                    penalty = tf.reduce_sum(qb**2, axis=1) + tf.reduce_sum(pr**2, axis=1) + bb**2 + bur**2
                    # Σ over clients of each client's mean batch loss: clients stay independent.
                    loss = tf.reduce_sum(share * (error**2 + l2 * penalty))
                gq, gb, gp, gbu = (tf.convert_to_tensor(g) for g in tape.gradient(loss, [qb, bb, p, bu]))
                if prox:
                    moving = tf.gather(active[e, s], slot)                          # (R + 1,)
                    q = q - client_lr * prox_mu * moving[:, None] * (q - q0)        # ∇ of (μ/2)‖θ_k − θ‖²
                    b = b - client_lr * prox_mu * moving * (b - b0)
                q = tf.tensor_scatter_nd_sub(q, batch[:, None], client_lr * gq)
                b = tf.tensor_scatter_nd_sub(b, batch[:, None], client_lr * gb)
                p, bu = p - client_lr * gp, bu - client_lr * gbu
        return tf.concat([q[:-1] - q0[:-1], (b[:-1] - b0[:-1])[:, None]], axis=1), p, bu

    return _train_clients


def flat_batch(federation, config: FedConfig, clients: np.ndarray, round_num: int):
    """The sampled clients' ratings as one flat batch, and the (E, S, K × B) step layout of
    :func:`local_training` (also the interaction task's, :mod:`helpers.fedinteraction`).

    ``federation``: anything with ``num_examples(clients)`` and ``client_data(client)`` as
    :class:`Federation`. Returns (slot (R,) int32 — each rating's client 0..K-1 —, items (R,), ratings
    (R,), rows (E, S, K × B) int32 — index R pads —, weight (E, S, K × B) float32 — 1/batch size, 0 for
    padding —, active (E, S, K) float32 — 1 where the client takes a step)."""
    counts = federation.num_examples(clients)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    data = [federation.client_data(c) for c in clients]
    schedules = [fc.local_schedule(len(items), config, c, round_num) for c, (items, _) in zip(clients, data)]
    steps = max((len(epoch) for schedule in schedules for epoch in schedule), default=1)
    width = max((len(batch) for schedule in schedules for epoch in schedule for batch in epoch), default=1)
    rows = np.full((config.local_epochs, steps, len(clients), width), total, np.int32)
    weight = np.zeros(rows.shape, np.float32)
    active = np.zeros((config.local_epochs, steps, len(clients)), np.float32)
    for k, schedule in enumerate(schedules):
        for e, epoch in enumerate(schedule):
            for s, batch in enumerate(epoch):
                rows[e, s, k, :len(batch)] = offsets[k] + batch
                weight[e, s, k, :len(batch)] = 1.0 / len(batch)
                active[e, s, k] = 1.0
    shape = (config.local_epochs, steps, len(clients) * width)
    return (np.repeat(np.arange(len(clients), dtype=np.int32), counts),
            np.concatenate([items for items, _ in data]), np.concatenate([r for _, r in data]),
            rows.reshape(shape), weight.reshape(shape), active)


def local_training(federation: Federation, params: np.ndarray, store: ClientStore, clients: np.ndarray,
                   config: FedConfig, round_num: int) -> Updates:
    """Step (2) for all ``clients`` in one compiled call (the task's client update). Their
    private rows in ``store`` are updated in place; returns the item-row updates they send."""
    from helpers.tf_quiet import tf

    config.check()
    slot, items, ratings, rows, weight, active = flat_batch(federation, config, clients, round_num)
    delta, p, bu = _compiled_training()(
        tf.constant(params), tf.constant(store.user_vec[clients]), tf.constant(store.user_bias[clients]),
        tf.constant(slot), tf.constant(items), tf.constant(ratings), tf.constant(rows), tf.constant(weight),
        tf.constant(active), tf.constant(federation.mu, tf.float32),
        tf.constant(config.client_rate(round_num), tf.float32), tf.constant(config.l2, tf.float32),
        tf.constant(config.prox_mu, tf.float32), config.prox_mu > 0)
    store.user_vec[clients], store.user_bias[clients] = p.numpy(), bu.numpy()  # stays on the clients
    return Updates(np.asarray(clients), federation.num_examples(clients), slot.astype(np.int64),
                   items.astype(np.int64), delta.numpy(), federation.download_bytes(clients, params.shape[1]))


# ---------------------------------------------------------------- training and evaluation


def predict(state: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> np.ndarray:
    """r̂ = μ + b_u + b_i + p_u · q_i for every row of ``frame``: (N,) stars, global item
    parameters combined with each client's private user parameters."""
    users, items = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
    item_vec, item_bias = item_table(state.params)
    return (federation.mu + store.user_bias[users] + item_bias[items]
            + np.einsum("nd,nd->n", store.user_vec[users], item_vec[items]))


def squared_error_sum(state: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> tuple[float, int]:
    """(Σ (r − r̂)² in stars², number of rows) of :func:`predict` on ``frame``: what a group of
    clients reports so that a server can pool RMSE = √(Σ sums / Σ counts) without seeing a rating."""
    error = frame["rating"].to_numpy() - predict(state, store, federation, frame)
    return float(np.sum(error.astype(np.float64) ** 2)), len(frame)


def federated_rmse(state: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> float:
    """RMSE (stars) of :func:`predict` on ``frame``."""
    return float(np.sqrt(np.mean((frame["rating"].to_numpy() - predict(state, store, federation, frame)) ** 2)))


def per_client_rmse(state: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> pd.Series:
    """RMSE (stars) of each client on its own rows of ``frame``: a Series indexed by user_idx."""
    error = frame["rating"].to_numpy() - predict(state, store, federation, frame)
    squared = pd.Series(error**2, index=frame["user_idx"].to_numpy())
    return np.sqrt(squared.groupby(level=0).mean()).rename("rmse")


def user_error_sums(state: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> np.ndarray:
    """Each client's (Σ (r − r̂)² in stars², rows) of :func:`predict` on its rows of ``frame``, for the
    clients present, in client order: (U', 2) float64 (:func:`helpers.metrics.unit_sums`) — what a
    bootstrap over test or validation users resamples; the RMSE is the root of Σ column 0 / Σ column 1."""
    squared = (frame["rating"].to_numpy() - predict(state, store, federation, frame)).astype(np.float64) ** 2
    return unit_sums(frame["user_idx"].to_numpy(), squared, len(store.user_bias))


def evaluate_rmse(federation: Federation, state: ServerState, store: ClientStore, units: bool = False) -> dict:
    """What every MF run records before round 1 and after each round: ``test_rmse``,
    ``train_rmse`` and, when the federation holds validation ratings, ``valid_rmse`` (stars). With
    ``units`` also ``test_units`` (and ``valid_units``): :func:`user_error_sums` on those ratings,
    (U, 2) per round, so that a round chosen on validation can be judged over the users."""
    scores = {"test_rmse": federated_rmse(state, store, federation, federation.test),
              "train_rmse": federated_rmse(state, store, federation, federation.train)}
    if federation.valid is not None:
        scores["valid_rmse"] = federated_rmse(state, store, federation, federation.valid)
    if units:
        scores["test_units"] = user_error_sums(state, store, federation, federation.test)
        if federation.valid is not None:
            scores["valid_units"] = user_error_sums(state, store, federation, federation.valid)
    return scores


def train_federated(federation: Federation, config: FedConfig, rounds: int, dim: int = 32, init_seed: int = 0,
                    algorithm: fc.Algorithm = fc.FEDAVG, progress: bool = False
                    ) -> tuple[ServerState, ClientStore, fc.History]:
    """``rounds`` rounds of :func:`helpers.fedcore.run_round` from a seeded start, with
    :func:`evaluate_rmse` after every round.

    Returns the final server state, the client store and a :class:`helpers.fedcore.History`
    (``test_rmse``, ``train_rmse``, ``valid_rmse`` if the federation has validation ratings;
    costs from the round reports).
    """
    state, store = init_state(federation, dim, init_seed)

    state, history = fc.train(federation, state, store, config, rounds,
                              lambda state, store: evaluate_rmse(federation, state, store), algorithm, progress)
    return state, store, history


def item_bias_rmse(federation: Federation, frame: pd.DataFrame | None = None,
                   shrinkage: float = ITEM_BIAS_SHRINKAGE) -> float:
    """RMSE (stars) on ``frame`` (default the test ratings) of the recommender with no private
    values at all: r̂_ui = μ + b_i with the damped item means of the training ratings
    (:func:`helpers.metrics.damped_item_bias`, lesson 06's bias baseline). What a model is worth
    without any per-user signal — the floor a private model (DP, attacks) must beat to be worth it."""
    frame = federation.test if frame is None else frame
    return float(np.sqrt(np.mean(_item_bias_errors(federation, frame, shrinkage) ** 2)))


def item_bias_user_errors(federation: Federation, frame: pd.DataFrame | None = None,
                          shrinkage: float = ITEM_BIAS_SHRINKAGE) -> np.ndarray:
    """:func:`item_bias_rmse`'s errors per user: each user's (Σ squared error in stars², ratings) on
    ``frame`` (default the test ratings), (U', 2) as :func:`user_error_sums` gives a trained model's,
    so that the two can be compared over the same users."""
    frame = federation.test if frame is None else frame
    return unit_sums(frame["user_idx"].to_numpy(), _item_bias_errors(federation, frame, shrinkage) ** 2, federation.n_users)


def _item_bias_errors(federation: Federation, frame: pd.DataFrame, shrinkage: float) -> np.ndarray:
    """r − (μ + b_i) on every row of ``frame``, b_i the damped item means of the training ratings: (N,) stars."""
    bias = damped_item_bias(federation.train["item_idx"].to_numpy(),
                            federation.train["rating"].to_numpy() - federation.mu, federation.n_items, shrinkage)
    return (frame["rating"].to_numpy() - (federation.mu + bias[frame["item_idx"].to_numpy()])).astype(np.float64)


def without_private(store: ClientStore) -> ClientStore:
    """The store with every user vector and bias at zero: predictions from the global part μ + b_i only."""
    return ClientStore(np.zeros_like(store.user_vec), np.zeros_like(store.user_bias))


def refit_private(state: ServerState, store: ClientStore, federation: Federation, config: FedConfig) -> ClientStore:
    """Personalisation after training: every client runs E local epochs against the final global
    model and keeps only its private p_u, b_u (its item changes are never sent).

    Returns a new :class:`ClientStore`; ``store`` is not changed.
    """
    refit = ClientStore(store.user_vec.copy(), store.user_bias.copy())
    local_training(federation, state.params, refit, federation.client_ids, config, state.round)
    return refit


class RunCache(fc.RunCache):
    """:class:`helpers.fedcore.RunCache` of lesson 03's MF runs: every run starts from the same
    seeded tables and records :func:`evaluate_rmse` after every round (the numbers of
    :func:`train_federated`; with ``units`` each user's errors too)."""

    def __init__(self, federation: Federation, dim: int = 32, init_seed: int = 0, units: bool = False):
        super().__init__(lambda key: (federation, *init_state(federation, dim, init_seed)),
                         lambda task, state, store: evaluate_rmse(task, state, store, units))


def diverged(history: fc.History) -> bool:
    """Whether any recorded test RMSE is inf or NaN (the training blew up)."""
    return not np.all(np.isfinite(history.test_rmse))
