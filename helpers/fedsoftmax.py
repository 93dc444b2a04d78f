"""Lesson 01's softmax recommender trained federated, every MovieLens user a client (lesson 04).

The model is lesson 01's: for user u every item c gets a score and the scores a softmax,

    s_c(u) = p_u · q_c + b_c,        P(c | u) = exp(s_c) / Σ_c' exp(s_c'),

trained on the mean cross-entropy of the items each user interacted with. Split by ownership:

- **global**, aggregated by the server: the item table, one row (q_c, b_c) of d + 1 values per
  item — the parameter table of :mod:`helpers.fedcore`, shape (I, d + 1);
- **private**, on the client, never sent: the user vector p_u (d,), kept in :class:`UserVectors`.

**The client's gradient.** All of a client's examples share one softmax π = softmax(s(u)), so the
gradient of its mean loss over a batch b of its items is, with y the batch's share of each item
(1/|b| on the batch's items, 0 elsewhere),

    ∂L/∂s_c = π_c − y_c,    ∂L/∂q_c = (π_c − y_c) p_u,    ∂L/∂b_c = π_c − y_c,    ∂L/∂p_u = Σ_c (π_c − y_c) q_c.

**Three update forms** (:data:`FORMS`), i.e. which rows a client's loss touches and which it sends:

- ``full``: the full softmax over all I items; every row changes and the whole table goes up;
- ``sampled``: a sampled softmax over the client's own items and m negatives drawn from
  Q(c) ∝ count(c)^β (item popularity, which the server learns from one federated count), with
  the log-Q correction s_c − log(m · Q_k(c)) on the negatives (Q_k: Q over the items the client did
  not interact with), so that Σ over the negatives estimates the rest of the partition sum; only
  those n_k + m rows go down and up;
- ``touched``: the full softmax computed on the device, but only the rows of the client's own
  items are sent (the rest of its gradient is dropped) — what lesson 03's MF sends.

:meth:`SoftmaxFederation.train_clients` trains all sampled clients at once in NumPy with the closed
form above; :func:`reference_training` trains them one at a time in TensorFlow, differentiating
the loss itself with ``GradientTape``. A test (and lesson 04) checks they agree.

**Evaluation happens on the devices:** each client ranks the catalogue for itself and reports
whether its held-out item made the top 10; the server only averages (:func:`ranking`). Two
protocols: lesson 01's (the held-out item among every item the user has not interacted with,
ties pessimistic) and the one most federated-recommendation papers report (among 99 sampled
items the user never rated), which gives numbers an order of magnitude higher.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers.fedcore import FedConfig, ServerState, Updates
from helpers.metrics import excluded_mask, hit_rate_at_k, ndcg_at_k, ranks_among, trailing_mean, user_hits, user_ndcg
from helpers.splits import leave_last_out

FORMS = {
    "full": "full softmax: every item row changes, the whole table is sent",
    "sampled": "sampled softmax: the client's items + m negatives (log-Q corrected), only those rows sent",
    "touched": "full softmax on the device, only the rows of the client's own items sent",
}
PROTOCOLS = {
    "full": "lesson 01's: the held-out item among every item the user has not interacted with",
    "sampled": "the literature's: the held-out item among 99 sampled items the user never rated",
}
SAMPLING_EXPONENT = 0.75  # β of Q(c) ∝ count(c)^β (word2vec's; β = 0 is uniform, β = 1 plain popularity)
EVAL_NEGATIVES = 99       # the sampled protocol's candidates besides the held-out item


# ---------------------------------------------------------------- data: the split and the clients


@dataclass
class RankingSplit:
    """Every user's interactions split by time, on the device: the last one is the test item, the
    one before it the validation item (rounds and rates are chosen on it), the rest train.

    Attributes:
        train, valid, test: frames with ``user_idx, item_idx`` (valid, test: one row per user).
        n_users, n_items: index-space sizes U, I.
        positives: per user, the sorted item indices of its training interactions.
        item_counts: (I,) training interactions per item (what one federated count gives the server).
        active_users: the users with at least one training interaction, ascending (the clients).
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int
    positives: list = field(init=False, repr=False)
    item_counts: np.ndarray = field(init=False, repr=False)
    active_users: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        groups = self.train.groupby("user_idx")["item_idx"].apply(lambda items: np.sort(items.to_numpy()))
        self.positives = [groups.get(u, np.zeros(0, np.int64)).astype(np.int64) for u in range(self.n_users)]
        self.item_counts = np.bincount(self.train["item_idx"].to_numpy(), minlength=self.n_items).astype(np.int64)
        self.active_users = np.flatnonzero([len(p) > 0 for p in self.positives])

    def held_out(self, on: str) -> pd.DataFrame:
        """The ``"valid"`` or ``"test"`` frame."""
        if on not in ("valid", "test"):
            raise ValueError(f"evaluate on 'valid' or 'test', got {on!r}")
        return self.valid if on == "valid" else self.test


def ranking_split(ratings: pd.DataFrame, n_users: int, n_items: int) -> RankingSplit:
    """:class:`RankingSplit` of ratings with ``user_idx, item_idx, timestamp``: lesson 01's
    leave-last-out twice (test, then validation from what is left)."""
    rest, test = leave_last_out(ratings)
    train, valid = leave_last_out(rest)
    columns = ["user_idx", "item_idx"]
    return RankingSplit(train[columns], valid[columns], test[columns], n_users, n_items)


@dataclass
class UserVectors:
    """What stays on the clients: ``user_vec`` (U, d), of which client u only reads and writes row u,
    and each client's compression residual (``residual``, client id → its rows)."""

    user_vec: np.ndarray
    residual: dict = field(default_factory=dict)


def init_state(split: RankingSplit, dim: int, seed: int = 0, scale: float = 0.1) -> tuple[ServerState, UserVectors]:
    """The global item table (I, d + 1) — vectors N(0, scale²), biases 0 — and every client's private
    vector N(0, scale²), seeded (a client draws its own the first time it is asked)."""
    rng = np.random.default_rng(seed)
    items = rng.normal(0, scale, (split.n_items, dim)).astype(np.float32)
    users = rng.normal(0, scale, (split.n_users, dim)).astype(np.float32)
    return ServerState(np.concatenate([items, np.zeros((split.n_items, 1), np.float32)], axis=1)), UserVectors(users)


# ---------------------------------------------------------------- what a client's loss looks at


@dataclass
class Candidates:
    """The rows each of K clients' losses use this round, padded to M.

    Attributes:
        rows: (K, M) item index of each candidate (padding: 0).
        offset: (K, M) float32 subtracted from the score inside the softmax: 0 for the client's own
            items (and every item of the full softmax), log(m · Q_k(c)) for a sampled negative,
            +inf for padding (its probability is 0). In the sampled form a client's own items come first.
        full: whether ``rows`` is the whole catalogue, 0..I-1, for every client.
    """

    rows: np.ndarray
    offset: np.ndarray
    full: bool

    def positions(self, batch: np.ndarray, positives: np.ndarray) -> np.ndarray:
        """Where the client's items ``positives[batch]`` sit in its row: the item indices themselves in
        the full catalogue, ``batch`` itself when its own (sorted) items come first."""
        return positives[batch] if self.full else batch


def sampling_distribution(item_counts: np.ndarray, exponent: float = SAMPLING_EXPONENT) -> np.ndarray:
    """Q(c) ∝ count(c)^β, (I,) float64 summing to 1; items never interacted with get the smallest
    positive count's weight so that every item can be drawn."""
    counts = np.maximum(np.asarray(item_counts, np.float64), 1.0)
    weights = counts**exponent
    return weights / weights.sum()


def sample_negatives(positives: np.ndarray, q: np.ndarray, m: int, key) -> tuple[np.ndarray, np.ndarray]:
    """m distinct items the client did not interact with, drawn from Q_k (Q renormalised over them),
    seeded by ``key``; returns (items (m,), log(m · Q_k(items)) (m,), the log-Q correction)."""
    weights = q.copy()
    weights[positives] = 0.0
    weights /= weights.sum()
    items = np.random.default_rng(key).choice(len(q), m, replace=False, p=weights)
    return items, np.log(m * weights[items])


# ---------------------------------------------------------------- the task


@dataclass
class SoftmaxFederation:
    """The softmax recommender's clients, as :mod:`helpers.fedcore` sees them (a :class:`helpers.fedcore.Task`).

    Attributes:
        split: the per-user split; client u holds ``split.positives[u]`` and its held-out items.
        form: ``"full"``, ``"sampled"`` or ``"touched"`` (:data:`FORMS`).
        negatives: m, sampled negatives per client and round (sampled form only).
        exponent: β of the sampling distribution Q(c) ∝ count(c)^β.
    """

    split: RankingSplit
    form: str = "sampled"
    negatives: int = 100
    exponent: float = SAMPLING_EXPONENT
    statistics_columns = None  # no running statistics

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {list(FORMS)}, got {self.form!r}")
        largest = self.split.n_items - max(len(p) for p in self.split.positives)
        if self.form == "sampled" and not (int(self.negatives) == self.negatives and 1 <= self.negatives <= largest):
            raise ValueError(f"sampled negatives m must be a whole number in 1..{largest} (the items the most active "
                             f"client has not interacted with), got {self.negatives}")
        self.client_ids = self.split.active_users
        self._distinct = np.array([len(p) for p in self.split.positives], np.int64)
        self._q = sampling_distribution(self.split.item_counts, self.exponent)

    def num_examples(self, clients) -> np.ndarray:
        """n_k, each client's training interactions: (K,) int."""
        return self._distinct[np.asarray(clients, np.int64)]

    def rows_used(self, clients) -> np.ndarray:
        """Rows each client's loss uses in a round: I (full, touched) or n_k + m (sampled): (K,) int."""
        if self.form == "sampled":
            return self.num_examples(clients) + int(self.negatives)
        return np.full(len(clients), self.split.n_items, np.int64)

    def download_bytes(self, clients, width: int) -> np.ndarray:
        """The whole table (no indices) for full and touched; the n_k + m candidate rows with their
        indices for sampled: (K,) bytes."""
        if self.form == "sampled":
            return self.rows_used(clients) * fc.row_bytes(width)
        return np.full(len(clients), self.split.n_items * fc.row_bytes(width, indexed=False))

    def upload_bytes(self, clients, width: int) -> np.ndarray:
        """The whole table (full), the candidate rows (sampled) or the client's own rows (touched),
        each indexed row with its 4-byte index: (K,) bytes."""
        if self.form == "touched":
            return self.num_examples(clients) * fc.row_bytes(width)
        return self.download_bytes(clients, width)

    def candidates(self, clients, round_num: int, seed: int) -> Candidates:
        """The rows each client's loss uses this round (negatives seeded by (seed, round, client))."""
        clients = np.asarray(clients, np.int64)
        if self.form != "sampled":
            k = len(clients)
            return Candidates(np.broadcast_to(np.arange(self.split.n_items), (k, self.split.n_items)),
                              np.zeros((k, self.split.n_items), np.float32), True)
        width = int(self.rows_used(clients).max())
        rows = np.zeros((len(clients), width), np.int64)
        offset = np.full((len(clients), width), np.inf, np.float32)
        for k, client in enumerate(clients):
            mine = self.split.positives[client]
            negatives, correction = sample_negatives(mine, self._q, int(self.negatives), [seed, round_num, int(client)])
            used = len(mine) + len(negatives)
            rows[k, :used] = np.concatenate([mine, negatives])
            offset[k, :used] = np.concatenate([np.zeros(len(mine)), correction])
        return Candidates(rows, offset, False)

    def train_clients(self, params, store: UserVectors, clients, config: FedConfig, round_num: int) -> Updates:
        """Step (2) of the core's round: :func:`local_training` (all clients at once)."""
        return local_training(self, params, store, clients, config, round_num)


def _batch_targets(task: SoftmaxFederation, clients, candidates: Candidates, config: FedConfig, round_num: int):
    """Each local step's y (the batch's share 1/|b| at the positions of its items) as sparse
    (client, position, weight) arrays, steps in order; and which clients take each step."""
    schedules = [fc.local_schedule(len(task.split.positives[c]), config, c, round_num) for c in clients]
    steps = [max(len(s[e]) for s in schedules) for e in range(config.local_epochs)]
    targets, active = [], []
    for e, n_steps in enumerate(steps):
        for s in range(n_steps):
            slots, positions, weights, moving = [], [], [], np.zeros(len(clients), bool)
            for k, schedule in enumerate(schedules):
                if s < len(schedule[e]):
                    batch = schedule[e][s]
                    mine = task.split.positives[clients[k]]
                    slots.append(np.full(len(batch), k))
                    positions.append(candidates.positions(batch, mine))
                    weights.append(np.full(len(batch), 1.0 / len(batch), np.float32))
                    moving[k] = True
            targets.append((np.concatenate(slots), np.concatenate(positions), np.concatenate(weights)))
            active.append(moving)
    return targets, active


NEGLIGIBLE_LOGIT = -60.0  # e^-60 ≈ 1e-26: a probability this far below the largest is set to 0


def softmax_residual(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """∂L/∂s = π − y of the mean cross-entropy, row by row: π = softmax(scores) along the last axis
    (a −inf score gets probability 0), y the batch's share of each item. Shapes (K, M).

    Probabilities under e^-60 of the largest are set to 0 (they change no sum, and float32 values
    that small are subnormal, which makes every product with them many times slower; TensorFlow
    flushes them to zero on the CPU too)."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    probabilities = np.exp(np.maximum(shifted, NEGLIGIBLE_LOGIT))
    probabilities[shifted < NEGLIGIBLE_LOGIT] = 0.0
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities - target


def local_training(task: SoftmaxFederation, params: np.ndarray, store: UserVectors, clients, config: FedConfig,
                   round_num: int) -> Updates:
    """Step (2) for all ``clients`` at once, in NumPy: E epochs of mini-batch SGD (one full batch when
    B = 0) on each client's loss, ∂L/∂s = π − y (module docstring), + λ‖p_u‖² + (μ/2)‖θ_k − θ‖² (FedProx).

    Every client trains its own copy of the rows its loss uses — vectors (K, M, d) and biases (K, M), each
    contiguous so that the batched products and in-place updates run at memory speed; its private vector in
    ``store`` is updated in place. Returns the rows it sends (all of them, or its own for ``touched``).
    """
    config.check()
    clients = np.asarray(clients, np.int64)
    d = params.shape[1] - 1
    candidates = task.candidates(clients, round_num, config.seed)
    start = np.broadcast_to(params, (len(clients),) + params.shape) if candidates.full else params[candidates.rows]
    vectors = np.ascontiguousarray(start[..., :d])          # each client's copy of its rows' q_c: (K, M, d)
    biases = np.ascontiguousarray(start[..., d])            # and of their b_c: (K, M)
    p = store.user_vec[clients].astype(np.float32)
    target = np.zeros(candidates.offset.shape, np.float32)
    rate = np.float32(config.client_rate(round_num))
    outer = np.empty_like(vectors)                          # η (π − y) p_u, reused every step
    steps = zip(*_batch_targets(task, clients, candidates, config, round_num))
    with np.errstate(over="ignore", invalid="ignore"):  # too large a rate diverges to inf/NaN: ranked as misses
        for (slots, positions, weights), moving in steps:
            target[:] = 0.0
            target[slots, positions] = weights
            scores = np.matmul(vectors, p[:, :, None])[..., 0] + biases - candidates.offset
            residual = softmax_residual(scores, target) * moving[:, None]                   # (K, M): π − y
            grad_p = np.matmul(residual[:, None, :], vectors)[:, 0] + 2 * config.l2 * p * moving[:, None]
            if config.prox_mu > 0:
                shrink = (rate * config.prox_mu * moving)[:, None]
                vectors -= shrink[..., None] * (vectors - start[..., :d])
                biases -= shrink * (biases - start[..., d])
            residual *= rate
            vectors -= np.multiply(residual[..., None], p[:, None, :], out=outer)
            biases -= residual
            p -= rate * grad_p
    store.user_vec[clients] = p                                                              # stays on the client
    delta = np.concatenate([vectors, biases[..., None]], axis=-1) - start
    return _sent(task, clients, candidates, delta, params.shape[1])


def _sent(task: SoftmaxFederation, clients: np.ndarray, candidates: Candidates, delta: np.ndarray,
          width: int) -> Updates:
    """The :class:`helpers.fedcore.Updates` the clients send: every used row, or only their own (touched)."""
    if task.form == "touched":
        own = [task.split.positives[c] for c in clients]
        slot = np.repeat(np.arange(len(clients)), [len(o) for o in own])
        rows = np.concatenate(own)
        values = delta[slot, rows]
    elif candidates.full:  # every row, in order: no gather
        slot = np.repeat(np.arange(len(clients)), delta.shape[1])
        rows, values = np.tile(np.arange(delta.shape[1]), len(clients)), delta.reshape(-1, width)
    else:
        used = np.arange(candidates.rows.shape[1])[None, :] < task.rows_used(clients)[:, None]
        slot, position = np.nonzero(used)
        rows, values = candidates.rows[slot, position], delta[slot, position]
    return Updates(clients, task.num_examples(clients), slot.astype(np.int64), rows.astype(np.int64),
                   np.ascontiguousarray(values, np.float32), task.upload_bytes(clients, width))


# ---------------------------------------------------------------- reference: one client at a time, by autodiff


def reference_training(task: SoftmaxFederation, params: np.ndarray, store: UserVectors, clients, config: FedConfig,
                       round_num: int) -> Updates:
    """Step (2) one client after another, in TensorFlow: each batch's loss
    −mean_{i∈b} log softmax(s − offset)_i + λ‖p‖² + (μ/2)‖θ_k − θ‖², differentiated by ``GradientTape``
    (a client-update hook: ``Algorithm(client_update=reference_training)``). Same batches, same
    negatives and same result as :func:`local_training`, which uses the closed-form gradient."""
    from helpers.tf_quiet import tf

    clients = np.asarray(clients, np.int64)
    candidates = task.candidates(clients, round_num, config.seed)
    rate = config.client_rate(round_num)
    deltas = []
    for k, client in enumerate(clients):
        mine = task.split.positives[client]
        used = task.rows_used(clients[k:k + 1])[0]
        start = params[candidates.rows[k, :used]]
        rows, p = tf.Variable(start), tf.Variable(store.user_vec[client])
        offset = tf.constant(candidates.offset[k, :used])
        for epoch in fc.local_schedule(len(mine), config, client, round_num):
            for batch in epoch:
                positions = candidates.positions(batch, mine)
                with tf.GradientTape() as tape:
                    log_probs = tf.nn.log_softmax(tf.linalg.matvec(rows[:, :-1], p) + rows[:, -1] - offset)
                    loss = (-tf.reduce_mean(tf.gather(log_probs, positions)) + config.l2 * tf.reduce_sum(p**2)
                            + config.prox_mu / 2 * tf.reduce_sum((rows - start) ** 2))
                for variable, gradient in zip([rows, p], tape.gradient(loss, [rows, p])):
                    variable.assign_sub(rate * tf.convert_to_tensor(gradient))
        store.user_vec[client] = p.numpy()
        delta = np.zeros(candidates.offset.shape[1:] + (params.shape[1],), np.float32)
        delta[:used] = rows.numpy() - start
        deltas.append(delta)
    return _sent(task, clients, candidates, np.stack(deltas), params.shape[1])


# ---------------------------------------------------------------- evaluation on the devices


def scores(state: ServerState, store: UserVectors, users: np.ndarray) -> np.ndarray:
    """s_c(u) = p_u · q_c + b_c for ``users``: (len(users), I) float32 — what each device computes
    from the downloaded table and its own vector."""
    table = state.params
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model scores inf/NaN: ranked as misses
        return store.user_vec[np.asarray(users)] @ table[:, :-1].T + table[:, -1]


def eval_negatives(split: RankingSplit, users: np.ndarray, count: int = EVAL_NEGATIVES, seed: int = 0) -> np.ndarray:
    """The sampled protocol's candidates: per user ``count`` distinct items it never interacted with
    (in train, validation or test), seeded by (seed, user): (len(users), count) int."""
    rated = {u: set(split.positives[u].tolist()) for u in users}
    for frame in (split.valid, split.test):
        for u, item in zip(frame["user_idx"], frame["item_idx"]):
            if u in rated:
                rated[u].add(int(item))
    drawn = np.zeros((len(users), count), np.int64)
    for row, u in enumerate(users):
        allowed = np.setdiff1d(np.arange(split.n_items), np.fromiter(rated[u], np.int64))
        drawn[row] = np.random.default_rng([seed, int(u)]).choice(allowed, count, replace=False)
    return drawn


class Evaluator:
    """HR@k and NDCG@k on the validation or test items under both protocols (:data:`PROTOCOLS`), for
    any model; what each protocol excludes (or samples) is computed once.

    ``"full"`` ranks the held-out item among every item except the user's training items (and, for a
    test item, its validation item: both are known interactions); ``"sampled"`` ranks it among the 99
    items of :func:`eval_negatives`. Ties count against the held-out item, NaN scores as misses.
    """

    def __init__(self, split: RankingSplit, k: int = 10, seed: int = 0):
        self.split, self.k = split, k
        self.negatives, self.excluded = {}, {}
        for on in ("valid", "test"):
            frame = split.held_out(on)
            users, targets = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
            known = dict(zip(split.valid["user_idx"], split.valid["item_idx"])) if on == "test" else {}
            seen = [np.append(split.positives[u], known[u]) if u in known else split.positives[u] for u in users]
            self.excluded[on] = excluded_mask((len(users), split.n_items), targets, seen)
            self.negatives[on] = eval_negatives(split, users, seed=seed)

    def ranks(self, user_scores: np.ndarray, on: str, protocol: str) -> np.ndarray:
        """0-based rank of each held-out item of ``on`` under ``protocol``; ``user_scores`` one row per held-out row."""
        frame = self.split.held_out(on)
        targets = frame["item_idx"].to_numpy()
        if protocol == "full":
            return ranks_among(user_scores, targets, self.excluded[on])
        if protocol != "sampled":
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        rows = np.arange(len(targets))
        candidates = np.concatenate([targets[:, None], self.negatives[on]], axis=1)  # the target first
        return ranks_among(user_scores[rows[:, None], candidates], np.zeros(len(targets), np.int64),
                           np.eye(1, candidates.shape[1], dtype=bool).repeat(len(targets), axis=0))

    def metrics(self, user_scores: np.ndarray, on: str, protocol: str = "full", units: bool = False) -> dict:
        """``{"HR@k": …, "NDCG@k": …}``; ``user_scores`` (U_on, I), or (I,) for a non-personalised model.
        With ``units`` also ``"units"``: each held-out user's hit and NDCG, ``{"HR@k": (U_on,), "NDCG@k":
        (U_on,)}`` (:func:`helpers.metrics.user_hits`, :func:`~helpers.metrics.user_ndcg`), in held-out
        row order — what a bootstrap over test users resamples."""
        frame = self.split.held_out(on)
        user_scores = np.asarray(user_scores)
        if user_scores.ndim == 1:
            user_scores = np.broadcast_to(user_scores, (len(frame), len(user_scores)))
        ranks = self.ranks(user_scores, on, protocol)
        result = {f"HR@{self.k}": hit_rate_at_k(ranks, self.k), f"NDCG@{self.k}": ndcg_at_k(ranks, self.k)}
        if units:
            result["units"] = {f"HR@{self.k}": user_hits(ranks, self.k), f"NDCG@{self.k}": user_ndcg(ranks, self.k)}
        return result

    def of_state(self, state: ServerState, store: UserVectors, on: str, protocol: str = "full",
                 units: bool = False) -> dict:
        """:meth:`metrics` of the federated model: each device scores with the table and its own vector."""
        return self.metrics(scores(state, store, self.split.held_out(on)["user_idx"].to_numpy()), on, protocol, units)

    def popularity(self, on: str, protocol: str = "full", units: bool = False) -> dict:
        """Most-popular: every user gets the items ranked by training interactions (:meth:`metrics`)."""
        return self.metrics(self.split.item_counts.astype(np.float64), on, protocol, units)


# ---------------------------------------------------------------- choosing the round on validation data


class ValidationSelector:
    """An ``evaluate`` for :func:`helpers.fedcore.train` that also chooses when to stop: after every
    round (or epoch) it measures HR@10 and NDCG@10 on the validation items and keeps a copy of the
    model whenever HR@10 averaged over the last ``window`` evaluations is the best so far. The test
    items are never looked at here; :meth:`test` measures them once, on the chosen model.

    Attributes:
        best_round: the evaluation index chosen (0 = before training).  best: (state, store) then.
        hits: each evaluation's per-user validation hits, (U_valid,) bool each, in held-out row order —
            what a bootstrap over the validation users resamples.
    """

    def __init__(self, evaluator: "Evaluator", window: int = 5, choose: bool = True):
        self.evaluator, self.window, self.choose = evaluator, window, choose
        self.hr: list[float] = []
        self.hits: list[np.ndarray] = []
        self.best_round, self.best, self._best_score = 0, None, -np.inf

    def __call__(self, state: ServerState, store: UserVectors) -> dict:
        metrics = self.evaluator.of_state(state, store, "valid", units=True)
        self.hr.append(metrics[f"HR@{self.evaluator.k}"])
        self.hits.append(metrics["units"][f"HR@{self.evaluator.k}"].astype(bool))
        smoothed = float(np.mean(self.hr[-self.window:]))
        if smoothed > self._best_score or not self.choose:  # not choosing: the last model is the one tested
            self._best_score, self.best_round = smoothed, len(self.hr) - 1
            self.best = (ServerState(state.params.copy(), state.round), UserVectors(store.user_vec.copy()))
        return {"valid_hr": metrics[f"HR@{self.evaluator.k}"], "valid_ndcg": metrics[f"NDCG@{self.evaluator.k}"]}

    def test(self) -> dict:
        """Test HR@k and NDCG@k of the chosen model under both protocols, with each test user's values:
        {protocol: {metric: value, "units": {metric: (U_test,)}}} (:meth:`Evaluator.metrics`)."""
        return {protocol: self.evaluator.of_state(*self.best, "test", protocol, units=True) for protocol in PROTOCOLS}


@dataclass
class SelectedRun:
    """One seeded training run, its round (or epoch) chosen on validation, tested once.

    Attributes:
        history: the validation curve (``valid_hr``, ``valid_ndcg`` per evaluation) and, for a federated
            run, the rounds' reports (costs) — a :class:`helpers.fedcore.History`.
        best_round: the chosen evaluation (rounds or epochs).  test: {protocol: {"HR@10", "NDCG@10",
        "units": {metric: (U_test,) per test user}}}.  seconds: wall-clock time of training and evaluation.
        valid_hits: (evaluations, U_valid) bool, each evaluation's per-user validation hits (HR@10 units).
    """

    history: fc.History
    best_round: int
    test: dict
    seconds: float
    valid_hits: np.ndarray


def run_federated(split: RankingSplit, evaluator: "Evaluator", config: FedConfig, rounds: int, form: str = "sampled",
                  negatives: int = 100, dim: int = 32, init_seed: int = 0, algorithm: fc.Algorithm = fc.FEDAVG,
                  progress: bool = False, choose_round: bool = True) -> SelectedRun:
    """``rounds`` federated rounds of the softmax recommender from a seeded start (``init_seed``; the
    config's seed draws the clients and negatives), the round chosen on validation (or the last one,
    ``choose_round=False``), tested once."""
    import time

    start = time.perf_counter()
    task = SoftmaxFederation(split, form, negatives)
    selector = ValidationSelector(evaluator, choose=choose_round)
    state, store = init_state(split, dim, init_seed)
    _, history = fc.train(task, state, store, config, rounds, selector, algorithm, progress, desc=f"{form} rounds")
    return SelectedRun(history, selector.best_round, selector.test(), time.perf_counter() - start,
                       np.array(selector.hits))


def pooled_gradients(split: RankingSplit, table: np.ndarray, users: np.ndarray, batch: np.ndarray,
                     l2: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of one centralised mini-batch's loss — the mean cross-entropy over the batch's N_b
    training interactions plus l2 · Σ_u (n_u / N_b) ‖p_u‖² — with respect to the item table (I, d + 1)
    and the batch's user vectors (B, d): the federated clients' closed form, pooled,
    ∂L/∂s_u = (n_u π_u − y_u) / N_b with y_u the user's item counts.

    Returns:
        (gradient of the table (I, d + 1), gradient of ``users[batch]`` (B, d)).
    """
    target = np.zeros((len(batch), split.n_items), np.float32)
    for row, u in enumerate(batch):
        target[row, split.positives[u]] = 1.0
    n = np.array([len(split.positives[u]) for u in batch], np.float32)[:, None]
    s = users[batch] @ table[:, :-1].T + table[:, -1]
    residual = softmax_residual(s, target / n) * (n / n.sum())                # (n_u π_u − y_u) / N_b
    grad_users = residual @ table[:, :-1] + 2 * l2 * users[batch] * (n / n.sum())
    grad_table = np.concatenate([residual.T @ users[batch], residual.sum(axis=0)[:, None]], axis=1)
    return grad_table, grad_users


def adam_update(x: np.ndarray, moments: tuple[np.ndarray, np.ndarray], gradient: np.ndarray, step: int,
                learning_rate: float, rows=slice(None), beta1: float = 0.9, beta2: float = 0.999,
                eps: float = 1e-7) -> None:
    """One Adam step on ``x[rows]`` in place, its moments (m, v) too: m ← β₁m + (1 − β₁)g,
    v ← β₂v + (1 − β₂)g², x ← x − η m̂ / (√v̂ + ε) with m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ) and t the
    ``step`` (≥ 1). Only the rows given move (a user vector is updated when its user is in the batch)."""
    m, v = moments
    m[rows] = beta1 * m[rows] + (1 - beta1) * gradient
    v[rows] = beta2 * v[rows] + (1 - beta2) * gradient**2
    x[rows] -= learning_rate * (m[rows] / (1 - beta1**step)) / (np.sqrt(v[rows] / (1 - beta2**step)) + eps)


def train_centralised(split: RankingSplit, evaluator: "Evaluator", dim: int = 32, epochs: int = 20,
                      learning_rate: float = 0.01, batch_users: int = 32, l2: float = 0.0, seed: int = 0) -> SelectedRun:
    """Lesson 01's model trained the usual way, on the pooled data: Adam (:func:`adam_update`) on
    :func:`pooled_gradients`, mini-batches of ``batch_users`` users with all their items, the users
    shuffled each epoch (seeded by (seed, epoch)); the same scores, loss and split as the federated runs.
    Every batch counts one step of Adam's bias correction. The epoch is chosen on validation
    (:class:`ValidationSelector`; ``best_round`` counts epochs) and tested once.
    """
    import time

    start_time = time.perf_counter()
    selector = ValidationSelector(evaluator)
    state, store = init_state(split, dim, seed)
    table, users = state.params.copy(), store.user_vec.copy()
    moments = {name: (np.zeros_like(x), np.zeros_like(x)) for name, x in (("table", table), ("users", users))}
    step = 0
    history = fc.History({name: [value] for name, value in selector(ServerState(table), UserVectors(users)).items()})
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(split.active_users)
        for first in range(0, len(order), batch_users):
            batch = order[first:first + batch_users]
            grad_table, grad_users = pooled_gradients(split, table, users, batch, l2)
            step += 1
            adam_update(table, moments["table"], grad_table, step, learning_rate)
            adam_update(users, moments["users"], grad_users, step, learning_rate, batch)
        for name, value in selector(ServerState(table), UserVectors(users)).items():
            history.metrics[name].append(value)
    return SelectedRun(history, selector.best_round, selector.test(), time.perf_counter() - start_time,
                       np.array(selector.hits))


# ---------------------------------------------------------------- what an update reveals


ATTACKS = {
    "rows sent": "every row the client uploaded is one of its items",
    "bias rose": "the rows whose item bias went up are its items (its loss pushed their probability up, "
                 "every other row's down)",
}


def guessed_items(updates: Updates, k: int, attack: str) -> np.ndarray:
    """The server's guess of which items client k (an index into ``updates.clients``) interacted with,
    read off its update alone (:data:`ATTACKS`)."""
    rows, values = updates.client(k)
    if attack == "rows sent":
        return np.unique(rows)
    if attack == "bias rose":
        return np.unique(rows[values[:, -1] > 0])
    raise ValueError(f"attack must be one of {list(ATTACKS)}, got {attack!r}")


def leak(updates: Updates, split: RankingSplit, attack: str) -> dict:
    """Mean precision and recall, over the clients of one round, of :func:`guessed_items` against each
    client's training items: ``{"precision": …, "recall": …, "clients": K}``."""
    from helpers.privacy import precision_recall

    scores = [precision_recall(guessed_items(updates, k, attack), split.positives[c]) for k, c in enumerate(updates.clients)]
    precision, recall = np.mean(scores, axis=0) if scores else (np.nan, np.nan)
    return {"precision": float(precision), "recall": float(recall), "clients": len(scores)}


# ---------------------------------------------------------------- the control panel's runs


class Playground:
    """Lesson 04's control panel behind the widgets: FedAvg with the sampled softmax, one extendable run
    per setting (:class:`helpers.fedcore.RunCache`), from the same seeded start, with the validation
    HR@10 after every round. A setting seen before is a lookup; more rounds train only the missing ones.
    (Only the sampled form: a full-softmax or touched-rows run costs about four times as much per round,
    too slow to retrain while a person waits; section 6 compares the forms.)

    Args:
        base: the FedAvg config whose clients per round and rates the panel changes.
    """

    def __init__(self, split: RankingSplit, evaluator: Evaluator, base: FedConfig, dim: int = 32):
        self.base = base

        def start(negatives):
            return (SoftmaxFederation(split, "sampled", negatives), *init_state(split, dim))

        self.runs = fc.RunCache(start, lambda task, state, store: {"valid_hr": evaluator.of_state(state, store, "valid")
                                                                   [f"HR@{evaluator.k}"]})

    def history(self, rounds: int, negatives: int, clients_per_round: int, client_lr: float,
                server_lr: float) -> fc.History:
        """The first ``rounds`` rounds of that setting (trained now if not cached)."""
        import dataclasses

        config = dataclasses.replace(self.base, clients_per_round=clients_per_round, client_lr=client_lr,
                                     server_lr=server_lr)
        return self.runs.get(config, key=negatives).first(rounds)

    def warm(self, settings: list[dict]) -> float:
        """Train every setting of ``settings`` (keyword arguments of :meth:`history`) now; seconds taken."""
        import time

        start = time.perf_counter()
        for setting in settings:
            self.history(**setting)
        return time.perf_counter() - start


# ---------------------------------------------------------------- tables for the lesson


def first_round_above(histories: list, level: float, window: int = 5) -> int | str:
    """The first round after which the seeds' mean validation HR@10 (averaged over the last ``window``
    rounds, as the round is chosen) exceeds ``level``; ``"never"`` when it does not."""
    hr = np.mean([trailing_mean(h.valid_hr, window) for h in histories], axis=0)
    above = np.flatnonzero(hr > level)
    return int(above[0]) if len(above) else "never"


def results_table(runs: dict, popular: dict) -> pd.DataFrame:
    """Test HR@10 and NDCG@10 under both protocols, mean ± std over seeds, one row per method and one
    for most-popular; ``runs``: method → list of :class:`SelectedRun`, ``popular``: protocol → metrics."""
    rows = {}
    for name, seeded in runs.items():
        row = {}
        for protocol in PROTOCOLS:
            for metric in ("HR@10", "NDCG@10"):
                values = [r.test[protocol][metric] for r in seeded]
                row[f"{metric} ({protocol})"] = f"{np.mean(values):.4f} ± {np.std(values):.4f}"
        row["seeds"] = len(seeded)
        row["chosen round/epoch"] = ", ".join(str(r.best_round) for r in seeded)
        rows[name] = row
    rows["most popular"] = {**{f"{m} ({p})": f"{popular[p][m]:.4f}" for p in PROTOCOLS for m in ("HR@10", "NDCG@10")},
                            "seeds": "-", "chosen round/epoch": "-"}
    return pd.DataFrame(rows).T


def upload_costs(split: RankingSplit, dim: int, negatives: int) -> pd.DataFrame:
    """What one client sends and receives in a round under each form, averaged over all clients:
    ``rows up, MB up, MB down`` (1 MB = 10⁶ bytes) and the upload's share of the full softmax's."""
    rows = {}
    for form in FORMS:
        task = SoftmaxFederation(split, form, negatives)
        up, down = task.upload_bytes(task.client_ids, dim + 1), task.download_bytes(task.client_ids, dim + 1)
        used = task.num_examples(task.client_ids) if form == "touched" else task.rows_used(task.client_ids)
        rows[form] = {"rows up": float(np.mean(used)), "MB up": float(np.mean(up)) / 1e6,
                      "MB down": float(np.mean(down)) / 1e6}
    table = pd.DataFrame(rows).T
    table["share of full upload"] = table["MB up"] / table.loc["full", "MB up"]
    return table
