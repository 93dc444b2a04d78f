"""Federated matrix factorisation: FedAvg and FedSGD rounds, simulated (lesson 03).

Every user is a client holding only their own ratings. The model is lesson 02's
biased MF, r̂_ui = μ + b_u + b_i + p_u · q_i, split by ownership:

- **global**, on the server, aggregated every round: item vectors Q (I, d) and item
  biases b (I,);
- **private**, on each client, never sent: the user's vector p_u (d,) and bias b_u.
  They persist across rounds in a :class:`ClientStore` (in this simulation one array,
  of which client u only ever reads and writes row u).

One round, the five steps:
  (1) the server sends (Q, b) to K sampled clients;
  (2) each client trains a local copy on its own data — E epochs of mini-batch SGD
      with rate η_c — updating its private p_u, b_u as it goes;
  (3) each client sends back its update Δ_k = (Q_k − Q, b_k − b) and its count n_k;
  (4) the server aggregates Δ = Σ_k (n_k / Σ_j n_j) Δ_k;
  (5) the server updates the global model, Q ← Q + η_s Δ (and b likewise).

FedSGD is the special case E = 1, one full batch per client, η_s = 1: then
Δ_k = −η_c ∇L_k and step (5) is θ ← θ − η Σ_k (n_k/n) ∇L_k.

Two implementations of step (2)–(4): :func:`reference_round` loops over clients one
at a time (short, readable), :func:`run_round` trains all sampled clients inside one
compiled TensorFlow function (gather/segment ops over the flat batch of all their
ratings). A test checks they agree.

μ, the global mean rating, is computed once before training (in a real deployment by
one federated sum of (Σ ratings, count)) and then fixed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import tensorflow as tf

from helpers.progress import progress as progress_bar

FLOAT_BYTES = 4
INDEX_BYTES = 4


@dataclass
class ServerState:
    """The global model. Attributes: item_vec (I, d) float32, item_bias (I,) float32, round."""

    item_vec: np.ndarray
    item_bias: np.ndarray
    round: int = 0


@dataclass
class ClientStore:
    """Private per-user parameters, kept on the clients: user_vec (U, d), user_bias (U,)."""

    user_vec: np.ndarray
    user_bias: np.ndarray


@dataclass
class ClientUpdate:
    """What one client sends to the server in step (3): only item-side values.

    Attributes:
        items: (m,) indices of the item rows the client changed (the items it rated).
        item_vec_delta: (m, d) change of those rows of Q.
        item_bias_delta: (m,) change of those item biases.
        num_examples: n_k, the client's number of training ratings (aggregation weight).
    """

    items: np.ndarray
    item_vec_delta: np.ndarray
    item_bias_delta: np.ndarray
    num_examples: int


@dataclass(frozen=True)
class FedConfig:
    """Hyper-parameters of federated training.

    Attributes:
        clients_per_round: K, clients sampled (without replacement) each round.
        local_epochs: E, passes over its own data each client makes per round.
        batch_size: B, local mini-batch size; 0 means one full batch per client.
        client_lr: η_c.  server_lr: η_s.  l2: penalty λ (as in lesson 02).
        seed: seeds client sampling and local batch order.
    """

    clients_per_round: int = 50
    local_epochs: int = 1
    batch_size: int = 16
    client_lr: float = 0.05
    server_lr: float = 1.0
    l2: float = 0.02
    seed: int = 0

    @staticmethod
    def fedsgd(clients_per_round: int, learning_rate: float, client_lr: float = 0.1, l2: float = 0.02,
               seed: int = 0) -> "FedConfig":
        """FedSGD: θ ← θ − η Σ_k (n_k/n) ∇L_k with one full-batch gradient per client.

        Each client returns Δ_k = −η_c ∇L_k (and takes that same step on its private
        p_u, b_u); the server step η_s = η / η_c makes the global rate exactly η.
        """
        return FedConfig(clients_per_round, 1, 0, client_lr, learning_rate / client_lr, l2, seed)


@dataclass
class Federation:
    """The clients' data, as the simulation holds it.

    Attributes:
        train, test: ratings frames with ``user_idx, item_idx, rating`` (each user's own
            80/20 split: the test ratings also stay on the client).
        n_users, n_items: index space sizes.  mu: the fixed global mean μ.
        client_ids: (N,) the ids of all clients (users with training data).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    mu: float
    client_ids: np.ndarray = field(init=False)

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
        return self._count[np.asarray(clients)]

    def rows(self, clients: np.ndarray) -> np.ndarray:
        """Positions in ``train`` of the clients' ratings, client by client: (Σ n_k,) int.

        The same order as the rows of :class:`RoundUpdates`, so row r of a round's updates
        is rating ``rows(clients)[r]`` — the (client, item) pair it belongs to.
        """
        return np.concatenate([np.arange(self._start[c], self._start[c] + self._count[c]) for c in clients]
                              ) if len(clients) else np.zeros(0, np.int64)


def init_state(federation: Federation, dim: int, seed: int = 0, scale: float = 0.1) -> tuple[ServerState, ClientStore]:
    """Global model and every client's private initial values, N(0, scale²), seeded.

    A client's initial vector is what it would draw itself the first time it is
    sampled; drawing all of them up front just makes the simulation deterministic.
    """
    rng = np.random.default_rng(seed)
    server = ServerState(rng.normal(0, scale, (federation.n_items, dim)).astype(np.float32),
                         np.zeros(federation.n_items, np.float32))
    store = ClientStore(rng.normal(0, scale, (federation.n_users, dim)).astype(np.float32),
                        np.zeros(federation.n_users, np.float32))
    return server, store


def sample_clients(federation: Federation, config: FedConfig, round_num: int) -> np.ndarray:
    """K distinct client ids for this round, seeded by (seed, round): (K,) int, sorted."""
    if not 1 <= config.clients_per_round <= len(federation.client_ids):
        raise ValueError(f"clients per round must lie in 1..{len(federation.client_ids)}, "
                         f"got {config.clients_per_round}")
    rng = np.random.default_rng([config.seed, round_num])
    return np.sort(rng.choice(federation.client_ids, config.clients_per_round, replace=False))


def local_schedule(n: int, config: FedConfig, client: int, round_num: int) -> list[list[np.ndarray]]:
    """A client's batches for each local epoch: E lists of index arrays into its n ratings.

    Seeded by (seed, round, client, epoch), so both implementations see the same batches.
    """
    batch = n if config.batch_size == 0 else config.batch_size
    schedule = []
    for epoch in range(config.local_epochs):
        order = np.random.default_rng([config.seed, round_num, int(client), epoch]).permutation(n)
        schedule.append([order[i:i + batch] for i in range(0, n, batch)])
    return schedule


def check_config(config: FedConfig) -> None:
    """Raise ValueError for settings that cannot run."""
    if config.local_epochs < 1:
        raise ValueError(f"local epochs must be ≥ 1, got {config.local_epochs}")
    if config.batch_size < 0:
        raise ValueError(f"batch size must be ≥ 1 (or 0 for full batch), got {config.batch_size}")
    for name, value in (("client learning rate", config.client_lr), ("server learning rate", config.server_lr)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be > 0, got {value}")


# ---------------------------------------------------------------- reference: one client at a time


def client_update(server: ServerState, store: ClientStore, federation: Federation, config: FedConfig,
                  client: int, round_num: int) -> ClientUpdate:
    """Step (2) and (3) for one client: local training, then the update it sends.

    Updates the client's private ``store`` rows in place; returns only item-side deltas.
    """
    items, ratings = federation.client_data(client)
    q = tf.Variable(server.item_vec[items])            # local copy of the rows it needs
    b = tf.Variable(server.item_bias[items])
    p = tf.Variable(store.user_vec[client])
    bu = tf.Variable(store.user_bias[client])
    for epoch in local_schedule(len(items), config, client, round_num):
        for batch in epoch:
            with tf.GradientTape() as tape:
                qb, bb = tf.gather(q, batch), tf.gather(b, batch)
                error = ratings[batch] - (federation.mu + bu + bb + tf.linalg.matvec(qb, p))
                penalty = tf.reduce_sum(qb**2, axis=1) + tf.reduce_sum(p**2) + bb**2 + bu**2
                loss = tf.reduce_mean(error**2 + config.l2 * penalty)
            for variable, gradient in zip([q, b, p, bu], tape.gradient(loss, [q, b, p, bu])):
                variable.assign_sub(config.client_lr * tf.convert_to_tensor(gradient))
    store.user_vec[client], store.user_bias[client] = p.numpy(), bu.numpy()
    return ClientUpdate(items, q.numpy() - server.item_vec[items], b.numpy() - server.item_bias[items], len(items))


def aggregate(updates: list[ClientUpdate], n_items: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Step (4): Δ = Σ_k (n_k / Σ_j n_j) Δ_k, as dense (I, d) and (I,) arrays.

    Clients with no examples get weight 0 and change nothing.
    """
    total = sum(u.num_examples for u in updates)
    vec, bias = np.zeros((n_items, dim), np.float32), np.zeros(n_items, np.float32)
    if total == 0:
        return vec, bias
    for update in updates:
        weight = update.num_examples / total
        np.add.at(vec, update.items, weight * update.item_vec_delta)
        np.add.at(bias, update.items, weight * update.item_bias_delta)
    return vec, bias


def reference_round(server: ServerState, store: ClientStore, federation: Federation, config: FedConfig) -> ServerState:
    """One round, looping over the sampled clients one at a time. Returns the new state."""
    check_config(config)
    clients = sample_clients(federation, config, server.round)                     # (1)
    updates = [client_update(server, store, federation, config, c, server.round)   # (2), (3)
               for c in clients]
    vec, bias = aggregate(updates, federation.n_items, server.item_vec.shape[1])   # (4)
    return apply_update(server, vec, bias, config.server_lr)                        # (5)


# ---------------------------------------------------------------- vectorised: all clients at once


@tf.function(reduce_retracing=True)
def _train_clients(q_global, b_global, p_start, bu_start, slot, items, ratings, rows, weight,
                   mu, client_lr, l2):
    """Local training of all sampled clients at once; returns each client's item deltas and user rows.

    Shapes: R = total ratings of the sampled clients, K = clients, E = local epochs,
    S = most local steps of any client in an epoch, W = K × B (one batch per client).
        q_global (I, d), b_global (I,): the global model sent in step (1).
        p_start (K, d), bu_start (K,): the clients' private rows.
        slot, items, ratings (R,): each rating's client (0..K-1), item and value.
        rows (E, S, W): which ratings every client uses in each local step; the
            padding value R points at a dummy row.  weight (E, S, W): 1 / batch size
            (0 for padding), so each client's loss is the mean over its own batch.
        agg_weight (R,): n_k / Σ n_j of the rating's client.
    Every rating is its own row of the clients' local item tables (a user rates an
    item at most once), so "client k's copy of q_i" is row r of ``q``.
    """
    q = tf.concat([tf.gather(q_global, items), tf.zeros_like(q_global[:1])], axis=0)  # (R + 1, d)
    b = tf.concat([tf.gather(b_global, items), tf.zeros_like(b_global[:1])], axis=0)
    slot = tf.concat([slot, [0]], axis=0)
    ratings = tf.concat([ratings, [0.0]], axis=0)
    p, bu = p_start, bu_start
    for e in tf.range(tf.shape(rows)[0]):
        for s in tf.range(tf.shape(rows)[1]):
            batch, active = rows[e, s], weight[e, s]
            qb, bb = tf.gather(q, batch), tf.gather(b, batch)
            with tf.GradientTape() as tape:
                tape.watch([qb, bb, p, bu])
                pr, bur = tf.gather(p, tf.gather(slot, batch)), tf.gather(bu, tf.gather(slot, batch))
                error = tf.gather(ratings, batch) - (mu + bur + bb + tf.reduce_sum(qb * pr, axis=1))
                penalty = tf.reduce_sum(qb**2, axis=1) + tf.reduce_sum(pr**2, axis=1) + bb**2 + bur**2
                # Σ over clients of each client's mean batch loss: clients stay independent.
                loss = tf.reduce_sum(active * (error**2 + l2 * penalty))
            gq, gb, gp, gbu = (tf.convert_to_tensor(g) for g in tape.gradient(loss, [qb, bb, p, bu]))
            q = tf.tensor_scatter_nd_sub(q, batch[:, None], client_lr * gq)
            b = tf.tensor_scatter_nd_sub(b, batch[:, None], client_lr * gb)
            p, bu = p - client_lr * gp, bu - client_lr * gbu
    return q[:-1] - tf.gather(q_global, items), b[:-1] - tf.gather(b_global, items), p, bu


def _flat_batch(federation: Federation, config: FedConfig, clients: np.ndarray, round_num: int):
    """The sampled clients' ratings as one flat batch, and the (E, S, W) step layout."""
    counts = federation.num_examples(clients)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    total = int(offsets[-1])
    data = [federation.client_data(c) for c in clients]
    schedules = [local_schedule(len(items), config, c, round_num) for c, (items, _) in zip(clients, data)]
    steps = max((len(epoch) for schedule in schedules for epoch in schedule), default=1)
    width = max((len(batch) for schedule in schedules for epoch in schedule for batch in epoch), default=1)
    rows = np.full((config.local_epochs, steps, len(clients), width), total, np.int32)
    weight = np.zeros(rows.shape, np.float32)
    for k, schedule in enumerate(schedules):
        for e, epoch in enumerate(schedule):
            for s, batch in enumerate(epoch):
                rows[e, s, k, :len(batch)] = offsets[k] + batch
                weight[e, s, k, :len(batch)] = 1.0 / len(batch)
    shape = (config.local_epochs, steps, len(clients) * width)
    return (np.repeat(np.arange(len(clients), dtype=np.int32), counts),
            np.concatenate([items for items, _ in data]), np.concatenate([r for _, r in data]),
            rows.reshape(shape), weight.reshape(shape))


@dataclass
class RoundUpdates:
    """Everything the sampled clients send in one round, one row per (client, rated item).

    Attributes:
        clients: (K,) client ids.  num_examples: (K,) n_k.
        slot: (R,) which client (index into ``clients``) each row belongs to.
        items: (R,) item index of each row.
        item_vec_delta: (R, d), item_bias_delta: (R,) the change the client made to that item.
    """

    clients: np.ndarray
    num_examples: np.ndarray
    slot: np.ndarray
    items: np.ndarray
    item_vec_delta: np.ndarray
    item_bias_delta: np.ndarray

    def client_update(self, k: int) -> ClientUpdate:
        """The :class:`ClientUpdate` of the k-th client (k indexes ``clients``)."""
        rows = self.slot == k
        return ClientUpdate(self.items[rows], self.item_vec_delta[rows], self.item_bias_delta[rows],
                            int(self.num_examples[k]))


def local_training(server: ServerState, store: ClientStore, federation: Federation, config: FedConfig,
                   clients: np.ndarray) -> RoundUpdates:
    """Steps (2)–(3) for all ``clients`` in one compiled call; their private rows are updated in place."""
    check_config(config)
    slot, items, ratings, rows, weight = _flat_batch(federation, config, clients, server.round)
    delta_vec, delta_bias, p, bu = _train_clients(
        tf.constant(server.item_vec), tf.constant(server.item_bias),
        tf.constant(store.user_vec[clients]), tf.constant(store.user_bias[clients]),
        tf.constant(slot), tf.constant(items), tf.constant(ratings), tf.constant(rows),
        tf.constant(weight), tf.constant(federation.mu, tf.float32),
        tf.constant(config.client_lr, tf.float32), tf.constant(config.l2, tf.float32))
    store.user_vec[clients], store.user_bias[clients] = p.numpy(), bu.numpy()  # stays on the clients
    return RoundUpdates(clients, federation.num_examples(clients), slot, items, delta_vec.numpy(), delta_bias.numpy())


def weighted_mean(updates: RoundUpdates, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Step (4): Δ = Σ_k (n_k / Σ_j n_j) Δ_k as dense (I, d) and (I,) arrays."""
    total = max(int(updates.num_examples.sum()), 1)
    weight = (updates.num_examples / total)[updates.slot].astype(np.float32)
    vec = np.zeros((n_items, updates.item_vec_delta.shape[1]), np.float32)
    bias = np.zeros(n_items, np.float32)
    np.add.at(vec, updates.items, weight[:, None] * updates.item_vec_delta)
    np.add.at(bias, updates.items, weight * updates.item_bias_delta)
    return vec, bias


def apply_update(server: ServerState, vec: np.ndarray, bias: np.ndarray, server_lr: float) -> ServerState:
    """Step (5): θ ← θ + η_s Δ; returns the next round's state."""
    return ServerState(server.item_vec + server_lr * vec, server.item_bias + server_lr * bias, server.round + 1)


def run_round(server: ServerState, store: ClientStore, federation: Federation, config: FedConfig) -> ServerState:
    """One round with all sampled clients trained in one compiled call. Returns the new state."""
    clients = sample_clients(federation, config, server.round)                      # (1)
    updates = local_training(server, store, federation, config, clients)           # (2), (3)
    vec, bias = weighted_mean(updates, federation.n_items)                         # (4)
    return apply_update(server, vec, bias, config.server_lr)                        # (5)


# ---------------------------------------------------------------- evaluation and cost


def predict(server: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> np.ndarray:
    """r̂ = μ + b_u + b_i + p_u · q_i for every row of ``frame``: (N,) stars, global item
    parameters combined with each client's private user parameters."""
    users, items = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
    return (federation.mu + store.user_bias[users] + server.item_bias[items]
            + np.einsum("nd,nd->n", store.user_vec[users], server.item_vec[items]))


def federated_rmse(server: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> float:
    """RMSE (stars) of :func:`predict` on ``frame``."""
    return float(np.sqrt(np.mean((frame["rating"].to_numpy() - predict(server, store, federation, frame)) ** 2)))


def per_client_rmse(server: ServerState, store: ClientStore, federation: Federation, frame: pd.DataFrame) -> pd.Series:
    """RMSE (stars) of each client on its own rows of ``frame``: a Series indexed by user_idx."""
    error = frame["rating"].to_numpy() - predict(server, store, federation, frame)
    squared = pd.Series(error**2, index=frame["user_idx"].to_numpy())
    return np.sqrt(squared.groupby(level=0).mean()).rename("rmse")


def without_private(store: ClientStore) -> ClientStore:
    """The store with every user vector and bias at zero: predictions from the global part μ + b_i only."""
    return ClientStore(np.zeros_like(store.user_vec), np.zeros_like(store.user_bias))


def refit_private(server: ServerState, store: ClientStore, federation: Federation, config: FedConfig) -> ClientStore:
    """Personalisation after training: every client runs E local epochs against the final global
    model and keeps only its private p_u, b_u (its item changes are never sent).

    Returns a new :class:`ClientStore`; ``store`` is not changed.
    """
    refit = ClientStore(store.user_vec.copy(), store.user_bias.copy())
    local_training(server, refit, federation, config, federation.client_ids)
    return refit


def round_bytes(federation: Federation, clients: np.ndarray, dim: int) -> dict:
    """Bytes moved in one round, for two protocols.

    ``full``: every client downloads the whole item table (I rows of d + 1 floats) and
    uploads a dense update of the same size. ``touched``: only the rows of the items
    it rated, each with its 4-byte index (which tells the server what the user rated —
    lesson 07). Returns ``{"full": {"down", "up"}, "touched": {"down", "up"}}`` in bytes.
    """
    row = (dim + 1) * FLOAT_BYTES
    table = federation.n_items * row
    touched = int(federation.num_examples(clients).sum()) * (row + INDEX_BYTES)
    k = len(clients)
    return {"full": {"down": k * table, "up": k * table}, "touched": {"down": touched, "up": touched}}


@dataclass
class FedHistory:
    """Per-round record: test/train RMSE (index 0 = before round 1), cumulative MB, seconds,
    and cumulative client compute: ``client_examples``, the per-example gradients the
    clients computed (Σ over rounds of Σ_k n_k · E)."""

    test_rmse: list[float] = field(default_factory=list)
    train_rmse: list[float] = field(default_factory=list)
    mb_full: list[float] = field(default_factory=list)
    mb_touched: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    client_examples: list[int] = field(default_factory=list)


def train_federated(federation: Federation, config: FedConfig, rounds: int, dim: int = 32,
                    init_seed: int = 0, round_fn=run_round, progress: bool = False) -> tuple[ServerState, ClientStore, FedHistory]:
    """Run ``rounds`` rounds from a seeded start; evaluate after every round.

    Returns the final server state, the client store and a :class:`FedHistory`
    (MB are cumulative megabytes, down + up, 1 MB = 10⁶ bytes).
    """
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    check_config(config)
    server, store = init_state(federation, dim, init_seed)
    history = FedHistory([federated_rmse(server, store, federation, federation.test)],
                         [federated_rmse(server, store, federation, federation.train)], [0.0], [0.0], [0.0], [0])
    for _ in progress_bar(range(rounds), "rounds", enabled=progress):
        clients = sample_clients(federation, config, server.round)
        start = time.perf_counter()
        server = round_fn(server, store, federation, config)
        history.seconds.append(history.seconds[-1] + time.perf_counter() - start)
        cost = round_bytes(federation, clients, dim)
        history.mb_full.append(history.mb_full[-1] + (cost["full"]["down"] + cost["full"]["up"]) / 1e6)
        history.mb_touched.append(history.mb_touched[-1] + (cost["touched"]["down"] + cost["touched"]["up"]) / 1e6)
        history.client_examples.append(history.client_examples[-1]
                                       + int(federation.num_examples(clients).sum()) * config.local_epochs)
        history.test_rmse.append(federated_rmse(server, store, federation, federation.test))
        history.train_rmse.append(federated_rmse(server, store, federation, federation.train))
    return server, store, history
