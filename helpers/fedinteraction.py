"""A federated interaction function, moved between domains that share no user (lesson 08, section 7).

Lesson 06's contrast case, federated: MovieLens (movies) and Last.fm (artists) share neither users
nor items, so the only part of a model that can move between them is one that belongs to neither —
the *interaction function* g of

    r̂_ui = μ + b_u + b_i + g(p_u ⊙ q_i),   g(z) = relu(z W₁ + b₁) · w₂ + b₂,

with z ∈ ℝᵈ, H hidden units, W₁ (d, H), b₁ (H,), w₂ (H,), b₂ a scalar. Every user is a client of
:func:`helpers.fedcore.run_round`; the user's (p_u, b_u) stay on the device (a
:class:`helpers.federated.ClientStore`), the items' (q_i, b_i) and g are global.

**The parameter table** is (I + G, d + 1) float32, the width of the MF item table, so every hook of
the core (clipping, DP noise, compression, robust aggregation) sees rows as it does for MF:

- rows 0 … I − 1: item i, (q_i, b_i);
- rows I … I + H − 1: hidden unit j, (W₁[:, j], b₁_j) — the weights into unit j and its bias;
- the last ⌈(H + 1)/(d + 1)⌉ rows: w₂ then b₂, row after row, the unused tail zero.

A client uploads the rows of the items it rated (with 4-byte indices) and, when g is trained, all
G rows of g (in fixed order, no indices); it downloads the same.

**The client update** (:meth:`InteractionTask.train_clients`) is E epochs of mini-batch SGD, every
sampled client at once, backpropagated by hand in NumPy. On client k's batch b the loss is

    L = Σ_{r ∈ b} (1/|b|) [(r̂_r − y_r)² + λ(‖q_r‖² + b_r² + ‖p_u‖² + b_u²)] + λ(‖W₁‖² + ‖w₂‖²)

and with δ_r = (2/|b|)(r̂_r − y_r), a = z W₁ + b₁, h = relu(a):

    ∂/∂b₂ = Σ δ,  ∂/∂w₂ = Σ δ h,  ∂/∂a = δ w₂ ⊙ [a > 0],  ∂/∂W₁ = Σ zᵀ ∂a,  ∂/∂b₁ = Σ ∂a,
    ∂/∂z = ∂a W₁ᵀ,  ∂/∂q_i = ∂z ⊙ p_u,  ∂/∂p_u = Σ ∂z ⊙ q_i,  ∂/∂b_i = ∂/∂b_u = δ (+ the penalties).

With every client, E = 1 and one full batch (FedSGD), the server's change of the item rows and of g
is exactly one full-batch gradient step on the mean loss over all ratings (a test checks it against
TensorFlow's autodiff).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers import federated as fed
from helpers.fedcore import FedConfig, ServerState, Updates
from helpers.metrics import unit_sums
from helpers.splits import per_user_split

HIDDEN_UNITS = 32  # H, as lesson 06's g


def interaction_rows(dim: int, hidden: int = HIDDEN_UNITS) -> int:
    """G, the rows g takes in the parameter table of width d + 1: H + ⌈(H + 1)/(d + 1)⌉."""
    return hidden + -(-(hidden + 1) // (dim + 1))


def interaction_parts(rows: np.ndarray, hidden: int = HIDDEN_UNITS):
    """(W₁ (…, d, H), b₁ (…, H), w₂ (…, H), b₂ (…,)) of g's rows (…, G, d + 1), one table or a stack."""
    lead = rows.shape[:-2]
    w1 = np.swapaxes(rows[..., :hidden, :-1], -1, -2)
    tail = rows[..., hidden:, :].reshape(lead + (-1,))
    return w1, rows[..., :hidden, -1], tail[..., :hidden], tail[..., hidden]


def pack_interaction(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: float) -> np.ndarray:
    """g's rows (G, d + 1) float32 from W₁ (d, H), b₁ (H,), w₂ (H,), b₂: the inverse of
    :func:`interaction_parts`."""
    dim, hidden = w1.shape
    rows = np.zeros((interaction_rows(dim, hidden), dim + 1), np.float32)
    rows[:hidden, :-1], rows[:hidden, -1] = w1.T, b1
    tail = np.zeros((rows.shape[0] - hidden) * (dim + 1))
    tail[:hidden], tail[hidden] = w2, b2
    rows[hidden:] = tail.reshape(-1, dim + 1)
    return rows


def init_interaction(dim: int, hidden: int = HIDDEN_UNITS, seed: int = 0) -> np.ndarray:
    """A fresh g as rows (G, d + 1): W₁, w₂ Glorot-uniform (as Keras's Dense), biases zero, seeded."""
    rng = np.random.default_rng([seed, 11])
    w1 = rng.uniform(-1, 1, (dim, hidden)) * np.sqrt(6.0 / (dim + hidden))
    w2 = rng.uniform(-1, 1, hidden) * np.sqrt(6.0 / (hidden + 1))
    return pack_interaction(w1, np.zeros(hidden), w2, 0.0)


def interaction_outputs(rows: np.ndarray, z: np.ndarray, hidden: int = HIDDEN_UNITS) -> np.ndarray:
    """g(z) for z (n, d): (n,) float64."""
    w1, b1, w2, b2 = interaction_parts(rows.astype(np.float64), hidden)
    return np.maximum(z @ w1 + b1, 0.0) @ w2 + b2


@dataclass
class InteractionTask:
    """One domain's clients and the interaction model's shape — a task of :mod:`helpers.fedcore`.

    Attributes:
        ratings: ``user_idx, item_idx, rating``, every client's training ratings.
        n_users, n_items: index space sizes (I).  dim: d.  mu: the fixed global mean μ (stars).
        hidden: H.  train_interaction: whether the clients train and send g (False: g stays as the
            server holds it, e.g. a g moved from another domain, frozen).
        client_ids: (N,) users with training ratings.
    """

    ratings: pd.DataFrame
    n_users: int
    n_items: int
    dim: int
    mu: float
    hidden: int = HIDDEN_UNITS
    train_interaction: bool = True
    client_ids: np.ndarray = field(init=False)
    statistics_columns = None  # no running statistics

    def __post_init__(self):
        # the layout helpers of the MF task (client_data, num_examples) index the same way
        self._ratings = fed.Federation(self.ratings, self.ratings.iloc[:0], self.n_users, self.n_items, self.mu)
        self.client_ids = self._ratings.client_ids

    @property
    def g_rows(self) -> slice:
        """Where g lies in the parameter table."""
        return slice(self.n_items, self.n_items + interaction_rows(self.dim, self.hidden))

    def client_data(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        """(items (n_k,) int32, ratings (n_k,) float32) of one client."""
        return self._ratings.client_data(client)

    def num_examples(self, clients: np.ndarray) -> np.ndarray:
        """n_k of each client: (K,) int."""
        return self._ratings.num_examples(clients)

    def _interaction_bytes(self, width: int) -> int:
        """Bytes of g's rows, sent whole (no indices)."""
        return interaction_rows(self.dim, self.hidden) * fc.row_bytes(width, indexed=False)

    def download_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """Each client's download: its items' rows with indices, and g's rows: (K,) int."""
        return self.num_examples(clients) * fc.row_bytes(width) + self._interaction_bytes(width)

    def upload_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """Each client's upload: its items' rows with indices, and g's rows when g is trained: (K,) int."""
        g_bytes = self._interaction_bytes(width) if self.train_interaction else 0
        return self.num_examples(clients) * fc.row_bytes(width) + g_bytes

    def train_clients(self, params, store, clients, config, round_num) -> Updates:
        """Step (2): :func:`local_training`."""
        return local_training(self, params, store, clients, config, round_num)


def init_state(task: InteractionTask, seed: int = 0, interaction: np.ndarray | None = None,
               scale: float = 0.1) -> tuple[ServerState, fed.ClientStore]:
    """The global table (I + G, d + 1) and the clients' private values: item and user vectors
    N(0, scale²), biases zero (as :func:`helpers.federated.init_tables`, seeded), and g fresh
    (:func:`init_interaction`) or the rows given in ``interaction`` (copied)."""
    state, store = fed.init_tables(task.n_users, task.n_items, task.dim, seed, scale)
    g = init_interaction(task.dim, task.hidden, seed) if interaction is None else np.array(interaction, np.float32)
    if g.shape != (interaction_rows(task.dim, task.hidden), task.dim + 1):
        raise ValueError(f"g's rows must have shape {(interaction_rows(task.dim, task.hidden), task.dim + 1)} "
                         f"for d = {task.dim}, H = {task.hidden}; got {g.shape}")
    return ServerState(np.concatenate([state.params, g])), store


def local_training(task: InteractionTask, params: np.ndarray, store: fed.ClientStore, clients: np.ndarray,
                   config: FedConfig, round_num: int) -> Updates:
    """Step (2) for every client in ``clients`` at once (the module docstring's loss and gradients).

    Each client works on its own copy of its items' rows and of g; its private (p_u, b_u) in ``store``
    are updated in place. Returns, per client, the change of its items' rows and (when g is trained)
    of g's G rows, float32."""
    if config.prox_mu > 0:
        raise ValueError(f"the interaction task has no FedProx term; got μ_prox = {config.prox_mu}")
    config.check()
    clients = np.asarray(clients, np.int64)
    k, hidden, lam, rate = len(clients), task.hidden, config.l2, config.client_rate(round_num)
    slot, items, ratings, rows, weight, active = fed.flat_batch(task, config, clients, round_num)
    rows, weight = rows.reshape(rows.shape[:2] + (k, -1)), weight.reshape(weight.shape[:2] + (k, -1))
    start = np.concatenate([params[items], np.zeros((1, params.shape[1]), np.float32)]).astype(np.float64)
    table = start.copy()                                           # every rating's own copy of its item row
    target = np.append(ratings, 0.0)
    g0 = np.broadcast_to(params[task.g_rows], (k,) + params[task.g_rows].shape).astype(np.float64)
    w1, b1, w2, b2 = (np.array(part) for part in interaction_parts(g0, hidden))
    p, bu = store.user_vec[clients].astype(np.float64), store.user_bias[clients].astype(np.float64)
    for e in range(rows.shape[0]):
        for s in range(rows.shape[1]):
            index, share, on = rows[e, s], weight[e, s], active[e, s]              # (K, B), (K, B), (K,)
            q, b = table[index, :-1], table[index, -1]                              # (K, B, d), (K, B)
            z = q * p[:, None, :]
            a = z @ w1 + b1[:, None, :]                                             # (K, B, H)
            h = np.maximum(a, 0.0)
            error = task.mu + bu[:, None] + b + np.einsum("kbh,kh->kb", h, w2) + b2[:, None] - target[index]
            delta = 2.0 * share * error                                            # (K, B)
            grad_a = delta[..., None] * w2[:, None, :] * (a > 0)
            grad_z = grad_a @ np.swapaxes(w1, 1, 2)
            grad_q = grad_z * p[:, None, :] + 2.0 * lam * share[..., None] * q
            grad_b = delta + 2.0 * lam * share * b
            used = share.sum(axis=1)                                                # 1 for a client taking a step
            grad_p = np.einsum("kbd,kbd->kd", grad_z, q) + 2.0 * lam * used[:, None] * p
            grad_bu = delta.sum(axis=1) + 2.0 * lam * used * bu
            if task.train_interaction:
                w1 -= rate * (np.swapaxes(z, 1, 2) @ grad_a + 2.0 * lam * on[:, None, None] * w1)
                b1 -= rate * grad_a.sum(axis=1)
                w2 -= rate * (np.einsum("kb,kbh->kh", delta, h) + 2.0 * lam * on[:, None] * w2)
                b2 -= rate * delta.sum(axis=1)
            table[index, :-1] -= rate * grad_q
            table[index, -1] -= rate * grad_b
            p -= rate * grad_p
            bu -= rate * grad_bu
    store.user_vec[clients], store.user_bias[clients] = p, bu
    changes, owners, at = [(table - start)[:-1]], [slot.astype(np.int64)], [items.astype(np.int64)]
    if task.train_interaction:
        g_change = np.stack([pack_interaction(w1[i], b1[i], w2[i], b2[i]) for i in range(k)]) - g0
        changes.append(g_change.reshape(-1, params.shape[1]))
        owners.append(np.repeat(np.arange(k), g0.shape[1]))
        at.append(np.tile(np.arange(task.g_rows.start, task.g_rows.stop), k))
    return Updates(clients, task.num_examples(clients), np.concatenate(owners), np.concatenate(at),
                   np.concatenate(changes).astype(np.float32), task.upload_bytes(clients, params.shape[1]))


# ---------------------------------------------------------------- prediction and evaluation


def predict(params: np.ndarray, store: fed.ClientStore, task: InteractionTask, frame: pd.DataFrame) -> np.ndarray:
    """r̂ = μ + b_u + b_i + g(p_u ⊙ q_i) for every row of ``frame`` (``user_idx, item_idx``): (n,) stars."""
    users, items = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
    item_rows = params[items].astype(np.float64)
    z = store.user_vec[users].astype(np.float64) * item_rows[:, :-1]
    return task.mu + store.user_bias[users] + item_rows[:, -1] + interaction_outputs(params[task.g_rows], z, task.hidden)


def user_error_sums(params: np.ndarray, store: fed.ClientStore, task: InteractionTask, frame: pd.DataFrame) -> np.ndarray:
    """Each user's (Σ (r − r̂)² in stars², ratings) on ``frame``, for the users present, in user order:
    (U', 2) float64 — RMSE is the root of Σ column 0 / Σ column 1; what a bootstrap over users resamples."""
    squared = (frame["rating"].to_numpy(np.float64) - predict(params, store, task, frame)) ** 2
    return unit_sums(frame["user_idx"].to_numpy(), squared, task.n_users)


def bias_baseline_user_errors(train: pd.DataFrame, frame: pd.DataFrame, n_users: int, n_items: int) -> np.ndarray:
    """The federated bias baseline r̂ = μ + b_i (damped item biases from one federated sum,
    :func:`helpers.fedcrossdomain.federated_bias_baseline`, of ``train``) on ``frame`` (both ``user_idx,
    item_idx, rating``): each user's (Σ squared error in stars², ratings), (U', 2) as :func:`user_error_sums`."""
    from helpers.fedcrossdomain import federated_bias_baseline

    mu, item_bias = federated_bias_baseline(train.rename(columns={"user_idx": "user", "item_idx": "item"}), n_items)
    squared = (frame["rating"].to_numpy(np.float64) - mu - item_bias[frame["item_idx"].to_numpy()]) ** 2
    return unit_sums(frame["user_idx"].to_numpy(), squared, n_users)


def rmse_of(sums: np.ndarray) -> float:
    """RMSE (stars) from :func:`user_error_sums`."""
    return float(np.sqrt(sums[:, 0].sum() / sums[:, 1].sum()))


@dataclass
class InteractionRun:
    """A federated interaction model at the round chosen on validation ratings.

    Attributes:
        task: the clients' training ratings and the model's shape.  params: the global table
            (I + G, d + 1) at that round.  store: the clients' private values at that round.
        best_round: the round kept (0 = the start).  history: ``valid_rmse`` per round and the costs.
    """

    task: InteractionTask
    params: np.ndarray
    store: fed.ClientStore
    best_round: int
    history: fc.History

    @property
    def interaction(self) -> np.ndarray:
        """g's rows (G, d + 1), what can move to another domain."""
        return self.params[self.task.g_rows].copy()

    @property
    def mb_up_per_client(self) -> float:
        """What one client uploads in one round, on average over the run (MB, 10⁶ bytes)."""
        reports = self.history.reports
        return sum(r.bytes_up for r in reports) / max(sum(len(r.trained) for r in reports), 1) / 1e6

    def user_errors(self, frame: pd.DataFrame) -> np.ndarray:
        """:func:`user_error_sums` on ``frame``."""
        return user_error_sums(self.params, self.store, self.task, frame)


def train_interaction(train: pd.DataFrame, n_users: int, n_items: int, config: FedConfig, rounds: int, dim: int = 16,
                      seed: int = 0, interaction: np.ndarray | None = None, train_interaction: bool = True,
                      valid_fraction: float = 0.1, algorithm: fc.Algorithm = fc.FEDAVG, progress: bool = False,
                      desc: str = "rounds") -> InteractionRun:
    """Federated training of the interaction model on one domain.

    Every user in ``train`` (``user_idx, item_idx, rating``) is a client and holds out
    ``valid_fraction`` of its own ratings (seeded); the model kept is the one of the round with the
    lowest validation RMSE. ``interaction``: g's rows to start from (from another domain), or None for
    a fresh g; ``train_interaction=False`` keeps g fixed. Tables, sampling and batches are seeded by ``seed``.
    """
    fit, valid = per_user_split(train, valid_fraction, seed)
    if valid.empty:
        raise ValueError(f"a validation share of {valid_fraction} leaves no client a validation rating "
                         f"(each keeps ⌊share · n_k⌋); raise it")
    task = InteractionTask(fit, n_users, n_items, dim, float(fit["rating"].mean()), train_interaction=train_interaction)
    state, store = init_state(task, seed, interaction)
    best: dict = {}

    def evaluate(state, store):
        score = rmse_of(user_error_sums(state.params, store, task, valid))
        if not best or score < best["score"]:
            best.update(score=score, round=state.round, params=state.params.copy(),
                        store=fed.ClientStore(store.user_vec.copy(), store.user_bias.copy()))
        return {"valid_rmse": score}

    _, history = fc.train(task, state, store, replace(config, seed=seed), rounds, evaluate, algorithm, progress=progress,
                          desc=desc)
    return InteractionRun(task, best["params"], best["store"], best["round"], history)


# ---------------------------------------------------------------- moving g to a domain with no shared user


@dataclass(frozen=True)
class InteractionSettings:
    """What the source and target runs are trained with (the course's preset:
    :func:`helpers.lessons.fed_interaction_settings`).

    Attributes:
        dim: d.  config: the clients' :class:`helpers.fedcore.FedConfig` (its ``server_lr`` is FedAdam's η_s).
        source_rounds, target_rounds: the most rounds of each domain (the round kept is chosen on validation).
        adam_tau: FedAdam's τ. The item rows' averaged changes are tiny next to g's (each item is in few
            clients' data), and an adaptive server step moves both at their own scale.
    """

    dim: int
    config: FedConfig
    source_rounds: int
    target_rounds: int
    adam_tau: float = 1e-6

    def algorithm(self) -> fc.Algorithm:
        """FedAvg's hooks with FedAdam's server step."""
        return fc.Algorithm(server_optimizer=fc.server_adam(tau=self.adam_tau))


# the target domain's three starts, fixed before any run: label → (start from the source's g, train g)
STARTS = {"target only (fresh g)": (False, True),
          "g from the source, frozen": (True, False),
          "g from the source, fine-tuned": (True, True)}


def transfer_runs(train: pd.DataFrame, n_users: int, n_items: int, interaction: np.ndarray,
                  settings: InteractionSettings, seeds, progress: bool = False) -> dict[str, list[InteractionRun]]:
    """Each of :data:`STARTS` on the target domain's clients (``train``: ``user_idx, item_idx, rating``),
    once per seed: {label: [run per seed]}. ``interaction``: the source run's g rows (G, d + 1)."""
    from helpers.progress import progress as progress_bar

    jobs = [(label, seed) for label in STARTS for seed in seeds]
    runs = {label: [] for label in STARTS}
    for label, seed in progress_bar(jobs, "target runs", enabled=progress):
        moved, trained = STARTS[label]
        runs[label].append(train_interaction(train, n_users, n_items, settings.config, settings.target_rounds,
                                             settings.dim, seed, interaction if moved else None, trained,
                                             algorithm=settings.algorithm()))
    return runs
