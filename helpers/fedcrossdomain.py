"""Federated cross-domain cold start: Douban users as clients holding two domains (lesson 08).

Lesson 06 maps a user's book parameters to music parameters *centrally*. Here no rating and no
user vector leaves a device. Every Douban user is a client holding their own book and music
ratings, and every global part is trained by :func:`helpers.fedcore.run_round`:

  1. **source MF**, federated over every user with book ratings: the book item table is global,
     each user's (p_u^s, b_u^s) stays in their :class:`helpers.federated.ClientStore`;
  2. **target MF**, the same over the music ratings the server may learn from (those of the warm
     users and of users who rated music only; the cold users' music is hidden);
  3. **the mapping** θ_t = θ_s · A + w (EMCDR-style, lesson 06), a task of its own
     (:class:`MappingTask`) over the warm overlapping users: client u holds x_u = [p_u^s, b_u^s]
     and y_u = [p_u^t, b_u^t], both from its own stores, and sends the change of (A, w) after a
     full-batch gradient step on L_u = mean_j (x_u A + w − y_u)_j² + λ(‖A − I‖² + ‖w‖²) — or,
     the same way, lesson 06's small MLP (:class:`MLPMap`, backpropagated by hand);
  4. **on the device**, a cold user maps its own source vector and scores the global music
     table, r̂_ui = μ_t + b_u + b_i + p_u · q_i with (p_u, b_u) = x_u A + w;
  5. **fine-tuning on the device**: a cold user who has rated a few albums refines the mapped
     (p_u, b_u) on them with the music table fixed; nothing is sent.

The global linear mapping table is (d + 2, d + 1): rows 0 … d are A, row d + 1 is w (the MLP's is
(4d + 7, d + 1), :class:`MLPMap`). A client's upload is the whole table, float32 values with no
row indices.

What a mapping update reveals: with one local step the change of A is −η_c (2/D) x_uᵀ r_u and the
change of w is −η_c (2/D) r_u (D = d + 1, penalty aside), so Δ_A[:, c] / Δ_w[c] = x_u exactly:
the server reads the client's private source vector off its update
(:func:`reconstruct_source_vector`). Summing many clients' updates before the server sees them
(secure aggregation) mixes the vectors (:func:`leakage`). The MLP's upload gives x_u away the same
way: each row of Δ(W₁ᵀ) is x_u times that hidden unit's Δb₁.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers import federated as fed
from helpers.fedcore import FedConfig, ServerState, Updates
from helpers.metrics import damped_item_bias, mae, rmse, unit_sums
from helpers.progress import progress as progress_bar
from helpers.splits import per_user_split

RELEVANT_RATING = 4.0  # a hidden rating at or above this counts as liked in HR@10 / NDCG@10


# ---------------------------------------------------------------- the two domain models


@dataclass
class DomainModel:
    """One domain's federated MF, at the round chosen on validation ratings.

    Attributes:
        mu: the global mean (stars).  item_params: the global item table (I, d + 1), bias last.
        store: every client's private (p_u, b_u) at that round (:class:`helpers.federated.ClientStore`).
        best_round: the round kept (0 = the initial tables).  history: the run's costs and ``valid_rmse``.
    """

    mu: float
    item_params: np.ndarray
    store: fed.ClientStore
    best_round: int
    history: fc.History


def train_domain(frame: pd.DataFrame, n_users: int, n_items: int, config: FedConfig, rounds: int, dim: int,
                 seed: int = 0, valid_fraction: float = 0.1, progress: bool = False, desc: str = "rounds") -> DomainModel:
    """Federated biased MF on one domain (steps 1 and 2 of the module docstring).

    Every user with a rating in ``frame`` (``user, item, rating``, as :mod:`helpers.cross_domain` holds
    them) is a client; each holds out ``valid_fraction`` of its own ratings (seeded), and the tables and
    private values kept are those of the round with the lowest validation RMSE. Tables and sampling are
    seeded by ``seed``.
    """
    ratings = pd.DataFrame({"user_idx": frame["user"].to_numpy(np.int64), "item_idx": frame["item"].to_numpy(np.int64),
                            "rating": frame["rating"].to_numpy(np.float32)})
    train, valid = per_user_split(ratings, valid_fraction, seed)
    federation = fed.Federation(train, valid.iloc[:0], n_users, n_items, mu=float(train["rating"].mean()), valid=valid)
    state, store = fed.init_state(federation, dim, seed)
    best = {}

    def evaluate(state, store):
        score = fed.federated_rmse(state, store, federation, valid)
        if not best or score < best["score"]:
            best.update(score=score, round=state.round, params=state.params.copy(),
                        store=fed.ClientStore(store.user_vec.copy(), store.user_bias.copy()))
        return {"valid_rmse": score}

    _, history = fc.train(federation, state, store, replace(config, seed=seed), rounds, evaluate,
                          progress=progress, desc=desc)
    return DomainModel(federation.mu, best["params"], best["store"], best["round"], history)


# ---------------------------------------------------------------- the mapping as a task


@dataclass
class DeviceStores:
    """What the devices of the mapping task hold: each user's private source and target values (the
    two MF runs' :class:`helpers.federated.ClientStore` s) and, for compressed uploads, a
    ``residual`` dict (client id → (d + 2, d + 1))."""

    source: fed.ClientStore
    target: fed.ClientStore
    residual: dict = field(default_factory=dict)

    def pairs(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of ``users``: their [p^s, b^s] and [p^t, b^t], each (len(users), d + 1) float64."""
        users = np.asarray(users, dtype=np.int64)
        x = np.concatenate([self.source.user_vec[users], self.source.user_bias[users, None]], axis=1)
        y = np.concatenate([self.target.user_vec[users], self.target.user_bias[users, None]], axis=1)
        return x.astype(np.float64), y.astype(np.float64)


class LinearMap:
    """EMCDR's linear map (lesson 06), y = x A + w on D-vectors, as a table (D + 1, D): rows 0 … D − 1
    are A, row D is w. Starts at the identity (A = I, w = 0); its penalty λ(‖A − I‖² + ‖w‖²) keeps
    it near there."""

    def rows(self, width: int) -> int:
        """Rows of the table for D = ``width``: D + 1."""
        return width + 1

    def init(self, width: int, seed: int = 0) -> np.ndarray:
        """The identity map: (D + 1, D) float32 (``seed`` is unused; the start is fixed)."""
        return np.concatenate([np.eye(width), np.zeros((1, width))]).astype(np.float32)

    def apply(self, table: np.ndarray, x: np.ndarray) -> np.ndarray:
        """x · A + w for x (n, D): (n, D)."""
        return x @ table[:-1] + table[-1]

    def client_steps(self, tables: np.ndarray, x: np.ndarray, y: np.ndarray, rate: float, steps: int,
                     l2: float) -> np.ndarray:
        """K clients at once, each ``steps`` full-batch gradient steps on its own pair x_k, y_k (K, D)
        from its copy of the table (K, D + 1, D) of the loss mean_j (x A + w − y)_j² + λ(‖A − I‖² + ‖w‖²):
        the tables after the steps, (K, D + 1, D) float64."""
        theta = tables.astype(np.float64).copy()
        width = x.shape[1]
        for _ in range(steps):
            residual = np.einsum("kd,kde->ke", x, theta[:, :-1]) + theta[:, -1] - y
            grad = np.empty_like(theta)
            grad[:, :-1] = (2.0 / width) * x[:, :, None] * residual[:, None, :]
            grad[:, -1] = (2.0 / width) * residual
            grad[:, :-1] += 2.0 * l2 * (theta[:, :-1] - np.eye(width))
            grad[:, -1] += 2.0 * l2 * theta[:, -1]
            theta -= rate * grad
        return theta

    def source_reading(self, delta: np.ndarray) -> np.ndarray:
        """The server's least-squares reading x̂ of one upload Δ (D + 1, D): Δ_A ≈ x̂ᵀ Δ_w, so
        x̂ = Δ_A Δ_w / (Δ_w · Δ_w): (D,). With one step and no penalty, every column of Δ_A is x times
        that column's Δ_w (Δ_A = −η (2/D) xᵀ r, Δ_w = −η (2/D) r), and the reading is exact."""
        return delta[:-1] @ delta[-1] / max(float(delta[-1] @ delta[-1]), 1e-300)


class MLPMap:
    """Lesson 06's small MLP, y = tanh(x W₁ + b₁) W₂ + b₂ with H = 2D hidden units, as one table
    (2H + 3, D) — the width of the linear map's, so the core's hooks see the same rows:

    rows 0 … H − 1 are W₁ᵀ (row j: the weights into hidden unit j), rows H, H + 1 are b₁ (H values
    as two rows of D), rows H + 2 … 2H + 1 are W₂ (row j: the weights out of hidden unit j), and row
    2H + 2 is b₂. Weights start Glorot-uniform (seeded, as Keras's Dense), biases at zero; the
    penalty is λ(‖W₁‖² + ‖W₂‖²)."""

    def rows(self, width: int) -> int:
        """Rows of the table for D = ``width``: 2H + 3 = 4D + 3."""
        return 4 * width + 3

    @staticmethod
    def parts(tables: np.ndarray):
        """(W₁ᵀ (…, H, D), b₁ (…, H), W₂ (…, H, D), b₂ (…, D)) of one table or a stack of them."""
        hidden = (tables.shape[-2] - 3) // 2
        lead = tables.shape[:-2]
        return (tables[..., :hidden, :], tables[..., hidden:hidden + 2, :].reshape(lead + (hidden,)),
                tables[..., hidden + 2:2 * hidden + 2, :], tables[..., -1, :])

    def init(self, width: int, seed: int = 0) -> np.ndarray:
        """Glorot-uniform W₁, W₂ (limit √(6 / (D + H))), zero biases: (4D + 3, D) float32."""
        hidden = 2 * width
        limit = np.sqrt(6.0 / (width + hidden))
        rng = np.random.default_rng([seed, 7])
        table = np.zeros((self.rows(width), width))
        table[:hidden] = rng.uniform(-limit, limit, (hidden, width))
        table[hidden + 2:2 * hidden + 2] = rng.uniform(-limit, limit, (hidden, width))
        return table.astype(np.float32)

    def apply(self, table: np.ndarray, x: np.ndarray) -> np.ndarray:
        """tanh(x W₁ + b₁) W₂ + b₂ for x (n, D): (n, D)."""
        w1t, b1, w2, b2 = self.parts(table)
        return np.tanh(x @ w1t.T + b1) @ w2 + b2

    def client_steps(self, tables: np.ndarray, x: np.ndarray, y: np.ndarray, rate: float, steps: int,
                     l2: float) -> np.ndarray:
        """As :meth:`LinearMap.client_steps`, backpropagating through the tanh layer by hand:
        with r = out − y, g = (2/D) r, the hidden gradient is (g W₂ᵀ) ⊙ (1 − h²). (K, 4D + 3, D) float64."""
        theta = tables.astype(np.float64).copy()
        width = x.shape[1]
        hidden = 2 * width
        for _ in range(steps):
            w1t, b1, w2, b2 = self.parts(theta)
            h = np.tanh(np.einsum("kd,khd->kh", x, w1t) + b1)                        # (K, H)
            g_out = (2.0 / width) * (np.einsum("kh,khd->kd", h, w2) + b2 - y)        # (K, D)
            g_pre = np.einsum("kd,khd->kh", g_out, w2) * (1.0 - h ** 2)              # (K, H)
            grad = np.empty_like(theta)
            grad[:, :hidden] = g_pre[:, :, None] * x[:, None, :] + 2.0 * l2 * w1t
            grad[:, hidden:hidden + 2] = g_pre.reshape(len(x), 2, width)
            grad[:, hidden + 2:2 * hidden + 2] = h[:, :, None] * g_out[:, None, :] + 2.0 * l2 * w2
            grad[:, -1] = g_out
            theta -= rate * grad
        return theta

    def source_reading(self, delta: np.ndarray) -> np.ndarray:
        """The server's least-squares reading x̂ of one upload Δ (4D + 3, D): every row j of Δ_W₁ᵀ is x
        times Δb₁_j (both are −η times hidden unit j's gradient, the first times x), so
        x̂ = Σ_j Δb₁_j Δ_W₁ᵀ[j] / Σ_j Δb₁_j²: (D,), exact for one step and no penalty."""
        w1t, b1, _, _ = self.parts(delta)
        return b1 @ w1t / max(float(b1 @ b1), 1e-300)


MAPPINGS = {"linear": LinearMap(), "mlp": MLPMap()}


def mapping_kind(kind: str):
    """The mapping called ``kind`` (``"linear"`` or ``"mlp"``), or a ValueError naming both."""
    if kind not in MAPPINGS:
        raise ValueError(f"the mapping must be one of {sorted(MAPPINGS)}, got {kind!r}")
    return MAPPINGS[kind]


def init_mapping(dim: int, kind: str = "linear", seed: int = 0) -> ServerState:
    """The global mapping table at its start, on (d + 1)-vectors: the identity map (d + 2, d + 1) for
    ``"linear"``, a seeded Glorot start (4d + 7, d + 1) for ``"mlp"``."""
    return ServerState(mapping_kind(kind).init(dim + 1, seed))


def apply_mapping(params: np.ndarray, x: np.ndarray, kind: str = "linear") -> np.ndarray:
    """The mapping table ``params`` of ``kind`` applied to source vectors x (n, d + 1): (n, d + 1)."""
    return mapping_kind(kind).apply(params, x)


def mapping_gradient(params: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """∇ of each client's linear-map loss mean_j (x A + w − y)_j² + λ(‖A − I‖² + ‖w‖²) for clients x, y
    (K, D): (K, D + 1, D) — per client the gradient of A stacked on that of w (D = d + 1)."""
    width = x.shape[1]
    residual = apply_mapping(params, x) - y                                        # (K, D)
    grad = np.empty((len(x), width + 1, width))
    grad[:, :-1] = (2.0 / width) * x[:, :, None] * residual[:, None, :]
    grad[:, -1] = (2.0 / width) * residual
    penalty = params - np.concatenate([np.eye(width), np.zeros((1, width))])
    return grad + 2.0 * l2 * penalty


def mapping_client_update(params: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float, steps: int,
                          l2: float) -> np.ndarray:
    """One client of the linear map, written plainly: ``steps`` full-batch gradient steps from the global
    table on its one pair x, y (D,), then its upload Δ = θ_k − θ: (D + 1, D)."""
    theta = params.astype(np.float64).copy()
    for _ in range(steps):
        theta -= lr * mapping_gradient(theta, x[None], y[None], l2)[0]
    return theta - params


@dataclass
class MappingTask:
    """Step 3: the mapping table of ``kind`` (:data:`MAPPINGS`) trained over the warm users (a
    :class:`helpers.fedcore.Task`). Each client has one example, its (x_u, y_u) pair, read from its
    own :class:`DeviceStores`; it takes E full-batch gradient steps (E = the config's local epochs,
    η_c its client rate, λ its l2) and sends the whole table's change."""

    client_ids: np.ndarray
    dim: int
    kind: str = "linear"
    statistics_columns = None

    def __post_init__(self):
        mapping_kind(self.kind)

    def num_examples(self, clients: np.ndarray) -> np.ndarray:
        """One pair per client: (K,) ones."""
        return np.ones(len(clients), np.int64)

    def table_bytes(self) -> int:
        """Bytes of the mapping table on the wire: its rows of d + 1 float32, no row indices."""
        return MAPPINGS[self.kind].rows(self.dim + 1) * fc.row_bytes(self.dim + 1, indexed=False)

    def download_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """Each client receives the whole table: (K,) int."""
        return np.full(len(clients), self.table_bytes(), np.int64)

    def train_clients(self, params, stores: DeviceStores, clients, config: FedConfig, round_num) -> Updates:
        """Step (2), vectorised over clients: each client's E steps from the global table
        (:meth:`LinearMap.client_steps` / :meth:`MLPMap.client_steps`), its change uploaded."""
        clients = np.asarray(clients, dtype=np.int64)
        x, y = stores.pairs(clients)
        start = np.broadcast_to(params, (len(clients),) + params.shape)
        theta = MAPPINGS[self.kind].client_steps(start, x, y, config.client_rate(round_num), config.local_epochs,
                                                 config.l2)
        delta = (theta - params).astype(np.float32)
        rows = params.shape[0]
        return Updates(clients, self.num_examples(clients), np.repeat(np.arange(len(clients)), rows),
                       np.tile(np.arange(rows), len(clients)), delta.reshape(-1, params.shape[1]),
                       np.full(len(clients), self.table_bytes(), np.int64))


def mapping_mse(params: np.ndarray, stores: DeviceStores, users: np.ndarray, kind: str = "linear") -> float:
    """mean over ``users`` and the D coordinates of (mapped x − y)²: what held-out warm clients would
    report (each computes its own term; a federated mean adds them)."""
    x, y = stores.pairs(users)
    return float(np.mean((apply_mapping(params.astype(np.float64), x, kind) - y) ** 2))


@dataclass
class MappingFit:
    """One federated training of the mapping (:func:`train_mapping`).

    Attributes:
        kind: ``"linear"`` or ``"mlp"``.  server_lr: the server rate it was trained with.
        table: the table of the round chosen on the held-out warm clients.  best_round: that round
        (0 = the start).  history: ``valid_mse`` and ``fit_mse`` before round 1 and after every round,
        and the round costs.  checkpoints: {round: table} for the rounds asked for.
    """

    kind: str
    server_lr: float
    table: np.ndarray
    best_round: int
    history: fc.History
    checkpoints: dict

    @property
    def valid_mse(self) -> float:
        """The held-out warm clients' mapping MSE at the chosen round."""
        return float(self.history.valid_mse[self.best_round])


def train_mapping(stores: DeviceStores, fit_users: np.ndarray, valid_users: np.ndarray, config: FedConfig,
                  rounds: int, dim: int, algorithm: fc.Algorithm = fc.FEDAVG, kind: str = "linear",
                  checkpoints=()) -> MappingFit:
    """Federated training of the mapping of ``kind`` over ``fit_users`` (its start seeded by the config's
    seed); the round kept is the one with the lowest :func:`mapping_mse` on the held-out warm clients
    ``valid_users`` (never the cold users). The tables after the rounds in ``checkpoints`` are kept too.
    """
    task = MappingTask(np.sort(np.asarray(fit_users, dtype=np.int64)), dim, kind)
    tables = []

    def evaluate(state, _stores):
        tables.append(state.params.copy())
        return {"valid_mse": mapping_mse(state.params, stores, valid_users, kind),
                "fit_mse": mapping_mse(state.params, stores, task.client_ids, kind)}

    _, history = fc.train(task, init_mapping(dim, kind, config.seed), stores, config, rounds, evaluate, algorithm)
    best = int(np.argmin(history.valid_mse))
    kept = {int(r): tables[r] for r in checkpoints if 0 <= r < len(tables)}
    return MappingFit(kind, config.server_lr, tables[best], best, history, kept)


def choose_mapping(stores: DeviceStores, fit_users: np.ndarray, valid_users: np.ndarray,
                   settings: "ColdStartSettings", kind: str, seed: int = 0) -> tuple[MappingFit, dict]:
    """The mapping of ``kind`` trained at every server rate of ``settings.mapping_server_rates``; the
    rate and round kept are those with the lowest held-out warm clients' MSE. Returns (that
    :class:`MappingFit`, {server rate: its best held-out MSE})."""
    config = replace(settings.mapping, clients_per_round=len(fit_users), seed=seed)
    algorithm = mapping_algorithm(settings.mapping_server)
    fits = [train_mapping(stores, fit_users, valid_users, replace(config, server_lr=rate), settings.mapping_rounds,
                          settings.dim, algorithm, kind, settings.mapping_checkpoints)
            for rate in settings.mapping_server_rates]
    best = min(fits, key=lambda f: f.valid_mse)
    return best, {f.server_lr: f.valid_mse for f in fits}


# ---------------------------------------------------------------- on the device


def map_on_device(params: np.ndarray, source: fed.ClientStore, users: np.ndarray,
                  kind: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """Each user in ``users`` maps its own [p^s, b^s] with the mapping table ``params`` of ``kind``:
    (p^t (n, d), b^t (n,)), computed on its device."""
    users = np.asarray(users, dtype=np.int64)
    x = np.concatenate([source.user_vec[users], source.user_bias[users, None]], axis=1).astype(np.float64)
    mapped = apply_mapping(params.astype(np.float64), x, kind)
    return mapped[:, :-1], mapped[:, -1]


def predict_pairs(mu: float, item_params: np.ndarray, users: np.ndarray, user_vec: np.ndarray,
                  user_bias: np.ndarray, pairs: pd.DataFrame) -> np.ndarray:
    """r̂ = μ + b_u + b_i + p_u · q_i for the (user, item) rows of ``pairs``, clipped to 1–5 stars:
    (len(pairs),). ``user_vec`` (n, d) and ``user_bias`` (n,) belong to ``users`` (n,), in that order."""
    position = np.searchsorted(users, pairs["user"].to_numpy())
    items = pairs["item"].to_numpy()
    q, b = item_params[:, :-1], item_params[:, -1]
    raw = mu + user_bias[position] + b[items] + np.einsum("nd,nd->n", user_vec[position], q[items])
    return np.clip(raw, 1.0, 5.0)


def fine_tune_on_device(mu: float, item_params: np.ndarray, user_vec: np.ndarray, user_bias: np.ndarray,
                        slot: np.ndarray, items: np.ndarray, ratings: np.ndarray, steps: int, lr: float,
                        l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Step 5: every user refines its own (p_u (n, d), b_u (n,)) by ``steps`` full-batch gradient steps
    on its few ratings (``slot`` (R,) says whose each of the R (item, rating) rows is), loss
    Σ_own (r̂ − r)² / n_u + λ‖p_u‖², with the global music table fixed. Returns new (p, b)."""
    p, b = user_vec.astype(np.float64).copy(), user_bias.astype(np.float64).copy()
    q, bi = item_params[items, :-1].astype(np.float64), item_params[items, -1].astype(np.float64)
    counts = np.maximum(np.bincount(slot, minlength=len(p)), 1)
    for _ in range(steps):
        error = mu + b[slot] + bi + np.einsum("rd,rd->r", p[slot], q) - ratings
        grad_p = np.zeros_like(p)
        np.add.at(grad_p, slot, 2.0 * error[:, None] * q)
        grad_b = np.bincount(slot, weights=2.0 * error, minlength=len(p))
        p -= lr * (grad_p / counts[:, None] + 2.0 * l2 * p)
        b -= lr * grad_b / counts
    return p, b


def top_k_lists(scores: np.ndarray, excluded: np.ndarray, relevant: np.ndarray, k: int = 10) -> np.ndarray:
    """Each row's top-k item positions with ties broken against the relevant items (pessimistic), then
    by item position, and ``excluded`` items (U, I) bool removed: (U, k) int.

    Only the items scoring at least a row's k-th best can enter its list, so each row sorts just
    those (found by a partition, O(I)); a row with more than ``4k`` of them is sorted whole."""
    ordered = np.where(excluded | np.isnan(scores), -np.inf, scores)
    n_items = ordered.shape[1]
    width = min(n_items, 4 * k)
    if width == n_items:
        return np.lexsort((np.arange(n_items)[None].repeat(len(ordered), 0), relevant, -ordered), axis=1)[:, :k]
    candidates = np.argpartition(-ordered, width - 1, axis=1)[:, :width]       # (U, width): the row's best
    cand_scores = np.take_along_axis(ordered, candidates, axis=1)
    kth = -np.partition(-cand_scores, k - 1, axis=1)[:, k - 1]                  # the row's k-th best score
    crowded = (ordered >= kth[:, None]).sum(axis=1) > width                   # ties beyond the candidates
    cand_relevant = np.take_along_axis(relevant, candidates, axis=1)
    order = np.lexsort((candidates, cand_relevant, -cand_scores), axis=1)[:, :k]
    top = np.take_along_axis(candidates, order, axis=1)
    for row in np.flatnonzero(crowded):
        top[row] = np.lexsort((np.arange(n_items), relevant[row], -ordered[row]))[:k]
    return top


def user_list_scores(scores: np.ndarray, relevant: np.ndarray, excluded: np.ndarray,
                     k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Each user's hit (1 if a relevant item is in the top k, else 0) and NDCG@k of full-catalogue lists
    with several relevant items per user, binary relevance: ((U',), (U',)) float64 over the U' users
    with at least one relevant item.

    Args:
        scores: (U, I) higher is better.  relevant: (U, I) bool, the user's liked held-out items.
        excluded: (U, I) bool, items that are not candidates (e.g. those the user rated on the device).

    NDCG@k is Σ_{top k} rel / log2(rank + 1) over its ideal, min(k, n_relevant) hits at the top; ties
    count against relevant items.
    """
    keep = relevant.any(axis=1)
    scores, relevant, excluded = scores[keep], relevant[keep], excluded[keep]
    top = top_k_lists(scores, excluded, relevant, k)
    gains = np.take_along_axis(relevant, top, axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.array([discounts[:min(k, n)].sum() for n in relevant.sum(axis=1)])
    return gains.any(axis=1).astype(np.float64), (gains * discounts).sum(axis=1) / ideal


def list_metrics(scores: np.ndarray, relevant: np.ndarray, excluded: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(HR@k, NDCG@k): the means of :func:`user_list_scores` over the users with a relevant item (HR@k is
    the share of them with at least one relevant item in their top k); users with none are left out."""
    hits, ndcg = user_list_scores(scores, relevant, excluded, k)
    return (float(hits.mean()), float(ndcg.mean())) if len(hits) else (0.0, 0.0)


def score_cold(mu: float, item_params: np.ndarray, users: np.ndarray, user_vec: np.ndarray, user_bias: np.ndarray,
               test: pd.DataFrame, excluded_pairs: pd.DataFrame | None = None, k: int = 10,
               units: bool = False) -> dict:
    """RMSE and MAE (stars) on the ``test`` ratings of ``users`` and HR@k / NDCG@k of their full music
    ranking (liked = hidden rating ≥ :data:`RELEVANT_RATING`; items in ``excluded_pairs`` — ratings the
    device already holds — are not candidates).

    With ``units`` the result also holds "units": what each metric averages, per cold user, for a
    bootstrap over the test set's users (:func:`helpers.findings.unit_bootstrap`): for RMSE and MAE
    each user's (summed squared or absolute error, number of test ratings) (U'', 2) — RMSE is the root
    of Σ sums / Σ counts —, for HR@k and NDCG@k each user's hit and NDCG (U',), float64.
    """
    predictions = predict_pairs(mu, item_params, users, user_vec, user_bias, test)
    targets = test["rating"].to_numpy()
    scores = mu + user_bias[:, None] + item_params[:, -1][None] + user_vec @ item_params[:, :-1].T
    relevant = np.zeros(scores.shape, bool)
    liked = test[test["rating"] >= RELEVANT_RATING]
    relevant[np.searchsorted(users, liked["user"].to_numpy()), liked["item"].to_numpy()] = True
    excluded = np.zeros(scores.shape, bool)
    if excluded_pairs is not None and len(excluded_pairs):
        excluded[np.searchsorted(users, excluded_pairs["user"].to_numpy()), excluded_pairs["item"].to_numpy()] = True
    hits, ndcg = user_list_scores(scores, relevant, excluded, k)
    result = {"RMSE": rmse(predictions, targets), "MAE": mae(predictions, targets),
              f"HR@{k}": float(hits.mean()) if len(hits) else 0.0, f"NDCG@{k}": float(ndcg.mean()) if len(hits) else 0.0}
    if units:
        owner = np.searchsorted(users, test["user"].to_numpy())
        result["units"] = {"RMSE": unit_sums(owner, (predictions - targets) ** 2, len(users)),
                           "MAE": unit_sums(owner, np.abs(predictions - targets), len(users)),
                           f"HR@{k}": hits, f"NDCG@{k}": ndcg}
    return result


def reveal_few(test: pd.DataFrame, k: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split cold users' hidden ratings into (k revealed on the device per user who has more than k,
    the rest): seeded. Users with k ratings or fewer reveal none."""
    shuffled = test.sample(frac=1.0, random_state=seed)
    position = shuffled.groupby("user").cumcount().to_numpy()
    size = shuffled.groupby("user")["rating"].transform("size").to_numpy()
    revealed = (position < k) & (size > k)
    return (shuffled[revealed].sort_values(["user", "item"]).reset_index(drop=True),
            shuffled[~revealed].sort_values(["user", "item"]).reset_index(drop=True))


# ---------------------------------------------------------------- what an update reveals


def reconstruct_source_vector(delta: np.ndarray, kind: str = "linear") -> np.ndarray:
    """The server's reading of one client's mapping upload Δ of ``kind``: the least-squares x̂
    (:meth:`LinearMap.source_reading`, :meth:`MLPMap.source_reading`) — exact for one pair, one step and
    no penalty, the best linear reading when noise is added: (D,)."""
    return mapping_kind(kind).source_reading(delta)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def leakage(params: np.ndarray, stores: DeviceStores, users: np.ndarray, config: FedConfig, group: int = 10,
            seed: int = 0, clip_norm: float | None = None, noise_multiplier: float = 0.0,
            kind: str = "linear") -> dict:
    """How well the server recovers a client's private [p^s, b^s] from mapping uploads (one round of
    ``config`` from the table ``params`` of ``kind``): cosine of x̂ (:func:`reconstruct_source_vector`)
    with the true x for each client's own upload, and, when groups of ``group`` clients' uploads are
    summed before the server sees them (secure aggregation), the best cosine of the group's x̂ with
    any member's x.

    With ``clip_norm`` C every upload is first scaled to L2 norm ≤ C, and with ``noise_multiplier`` σ
    what the server sees — one upload, or one group's sum — carries Gaussian noise of standard
    deviation σ·C on every value (the noise DP-FedAvg adds to a sum; seeded by ``seed``).

    Returns {"single_cosine_mean", "single_cosine_min", "summed_cosine_mean", "group", "clients",
    "median_upload_norm" (before clipping), "clip_norm", "noise_multiplier"}.
    """
    clip = fc.clip(clip_norm) if clip_norm is not None else None  # refuses C ≤ 0
    if noise_multiplier < 0 or (noise_multiplier > 0 and clip_norm is None):
        raise ValueError(f"noise needs a clipping norm and σ ≥ 0 (its standard deviation is σ·C), "
                         f"got σ = {noise_multiplier}, C = {clip_norm}")
    users = np.random.default_rng(seed).permutation(np.asarray(users, dtype=np.int64))
    users = users[:len(users) // group * group]
    task = MappingTask(np.sort(users), params.shape[1] - 1, kind)
    updates = task.train_clients(params, stores, users, config, 0)
    norms = updates.norms()
    if clip is not None:
        updates = clip(updates, None)  # the core's clipping transform; it reads no round context
    deltas = updates.values.reshape(len(users), *params.shape).astype(np.float64)
    rng = np.random.default_rng([seed, 3])
    noise_std = noise_multiplier * (clip_norm or 0.0)

    def seen(view: np.ndarray) -> np.ndarray:
        return view + rng.normal(0.0, noise_std, view.shape) if noise_std > 0 else view

    x, _ = stores.pairs(users)
    single = np.array([cosine(reconstruct_source_vector(seen(d), kind), v) for d, v in zip(deltas, x)])
    summed = []
    for start in range(0, len(users), group):
        guess = reconstruct_source_vector(seen(deltas[start:start + group].sum(axis=0)), kind)
        summed.append(max(cosine(guess, v) for v in x[start:start + group]))
    return {"single_cosine_mean": float(single.mean()), "single_cosine_min": float(single.min()),
            "summed_cosine_mean": float(np.mean(summed)), "group": group, "clients": len(users),
            "median_upload_norm": float(np.median(norms)), "clip_norm": clip_norm,
            "noise_multiplier": float(noise_multiplier)}


def mapping_under_dp(trained: TrainedParts, settings: ColdStartSettings, clip_norm: float,
                     noise_multipliers, seed: int = 0, revealed: int = 1, sampling_rates=(1.0,)) -> pd.DataFrame:
    """What DP-FedAvg's clipping and noise cost the linear mapping: for each sampling rate q in
    ``sampling_rates`` and σ in ``noise_multipliers`` the linear mapping of ``trained`` is trained
    again (its server rate as chosen) by :func:`helpers.privacy.dp_fedavg`: each round every fitting
    warm client takes part with probability q (Poisson), its upload clipped to ``clip_norm``, and
    Gaussian noise σ·C is added to the round's sum, divided by qN; the round kept is chosen on the
    held-out warm clients as before. One row per (q, σ), the run's own mapping (no clipping, no
    noise) first: the held-out warm clients' mapping MSE, the cold users' RMSE (stars, ``revealed``
    ratings kept on the device and not scored) and ε at δ = 1 / N for all the rounds run (RDP
    accountant with Poisson sampling; inf without noise), N the fitting clients."""
    from helpers import privacy as pv

    if not all(0 < q <= 1 for q in sampling_rates):
        raise ValueError(f"sampling rates must lie in (0, 1], got {list(sampling_rates)}")
    stores = DeviceStores(trained.source.store, trained.target.store)
    valid = np.setdiff1d(trained.split.warm, trained.fit_users)
    cold = trained.split.cold
    shown, test = reveal_few(trained.split.test, revealed, seed)
    plain = trained.mappings["linear"]
    clients = len(trained.fit_users)
    config = replace(settings.mapping, clients_per_round=clients, seed=seed, server_lr=plain.server_lr)
    server = mapping_algorithm(settings.mapping_server).server_optimizer

    def row(label, q, sigma, table, epsilon):
        vec, bias = map_on_device(table, trained.source.store, cold)
        cold_rmse = score_cold(trained.target.mu, trained.target.item_params, cold, vec, bias, test, shown)["RMSE"]
        return {"mapping": label, "q": q, "σ": sigma, "held-out mapping MSE": mapping_mse(table, stores, valid),
                "cold RMSE": cold_rmse, "ε": epsilon}

    rows = [row("no clipping, no noise", 1.0, 0.0, plain.table, float("inf"))]
    for q in sampling_rates:
        for sigma in noise_multipliers:
            dp = pv.DPConfig(clip_norm, sigma, q * clients, seed)
            algorithm = replace(pv.dp_fedavg(dp, q), server_optimizer=server)
            fit = train_mapping(stores, trained.fit_users, valid, config, settings.mapping_rounds, settings.dim, algorithm)
            epsilon = pv.epsilon(sigma, q, settings.mapping_rounds, 1.0 / clients) if sigma > 0 else float("inf")
            rows.append(row(f"q = {q:g}, C = {clip_norm:.3g}, σ = {sigma:g}", q, sigma, fit.table, epsilon))
    return pd.DataFrame(rows).set_index("mapping")


# ---------------------------------------------------------------- the bias baseline


def federated_bias_baseline(train: pd.DataFrame, n_items: int) -> tuple[float, np.ndarray]:
    """μ and the damped item biases of the visible music ratings, as one federated sum computes them
    (each client sends its per-item (Σ(r − μ), count), the server adds): (μ, (I,))."""
    mu = float(train["rating"].mean())
    return mu, damped_item_bias(train["item"].to_numpy(), train["rating"].to_numpy() - mu, n_items)


# ---------------------------------------------------------------- one experiment


@dataclass(frozen=True)
class ColdStartSettings:
    """Everything one federated cold-start experiment is run with (the course's preset is
    :func:`helpers.lessons.fed_cold_start_settings`).

    Attributes:
        dim: d, the MF dimension of both domains.
        domain: the :class:`helpers.fedcore.FedConfig` of both domains' federated MF;
            ``domain_rounds`` the most rounds it runs (the round kept is chosen on validation).
        mapping: the mapping's config; its K is ignored — every fitting warm client takes part in every
            round — and so is its server rate: ``mapping_server_rates`` are tried and the one with the
            lowest held-out MSE kept (:func:`choose_mapping`); ``mapping_rounds`` the most rounds,
            ``mapping_server`` ``"sgd"`` or ``"adam"``.
        mapping_valid_share: warm clients held out of the mapping to choose its rate and round.
        mapping_checkpoints: rounds at which the chosen mappings are also scored, for a panel.
        revealed: for each k, the music ratings a cold user has already given on the device (users
            with more than k reveal k; the others none); every method is scored on the rest.
        tune_steps, tune_lr: the on-device fine-tuning of step 5, fixed in advance.
    """

    dim: int
    domain: FedConfig
    domain_rounds: int
    mapping: FedConfig
    mapping_rounds: int
    mapping_server: str = "sgd"
    mapping_server_rates: tuple[float, ...] = (0.1,)
    mapping_valid_share: float = 0.2
    mapping_checkpoints: tuple[int, ...] = (0, 10, 25, 50, 100, 200)
    revealed: tuple[int, ...] = (1, 3, 5)
    tune_steps: int = 20
    tune_lr: float = 0.1


METHODS = {
    "fed_bias": "federated bias baseline (μ + b_i)",
    "fed_tgt": "federated target-only MF",
    "fed_map": "federated linear mapping",
    "fed_map_mlp": "federated MLP mapping",
    "fed_tgt_tuned": "target-only + on-device tuning",
    "fed_map_tuned": "federated linear mapping + on-device tuning",
    "fed_map_mlp_tuned": "federated MLP mapping + on-device tuning",
    "central_map": "centralised linear mapping (lesson 06)",
    "central_map_mlp": "centralised MLP mapping (lesson 06)",
}
# the methods of each mapping kind: (federated, federated + tuning, centralised)
MAPPING_METHODS = {"linear": ("fed_map", "fed_map_tuned", "central_map"),
                   "mlp": ("fed_map_mlp", "fed_map_mlp_tuned", "central_map_mlp")}


def mapping_algorithm(server: str) -> fc.Algorithm:
    """The round's hooks for the mapping: plain server SGD, or FedAdam's server step."""
    if server not in ("sgd", "adam"):
        raise ValueError(f"the mapping's server optimiser must be 'sgd' or 'adam', got {server!r}")
    return fc.FEDAVG if server == "sgd" else fc.Algorithm(server_optimizer=fc.server_adam())


def train_source(domains, settings: ColdStartSettings, seed: int = 0, progress: bool = False) -> DomainModel:
    """Step 1, which no β changes: the book (source) MF over every user with book ratings."""
    return train_domain(domains.source, domains.n_users, domains.n_source_items, settings.domain,
                        settings.domain_rounds, settings.dim, seed, progress=progress, desc="source rounds")


def central_mapping(domains, split, seed: int, dim: int) -> tuple[float, np.ndarray, dict]:
    """Lesson 06's centralised pipeline (:func:`helpers.cross_domain.train_domain_mf` on each domain,
    20 epochs; the full-batch linear and MLP mappings fitted on every warm user), the reference:
    (μ, the music table (I, d + 1), {"linear" | "mlp": the cold users' mapped p (C, d) and b (C,)})."""
    from helpers import cross_domain as cd
    source = cd.train_domain_mf(domains.source, domains.n_users, domains.n_source_items, dim, 20, seed)
    target = cd.train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, 20, seed)
    mapped = {}
    for kind in MAPPINGS:
        mapping = cd.fit_mapping(source, target, split.warm, f"map_{kind}", seed)
        values = np.asarray(mapping(cd.user_parameters(source, split.cold)))
        mapped[kind] = (values[:, :dim], values[:, dim])
    items = np.concatenate([target.item_vec.numpy(), target.item_bias.numpy()[:, None]], axis=1)
    return target.mu, items, mapped


@dataclass
class TrainedParts:
    """What one (β, seed) run of :func:`cold_start_methods` trained, for a lesson to look into.

    Attributes:
        split: the :class:`helpers.cross_domain.ColdStartSplit` (warm, cold users; train, hidden test).
        source, target: the two domains' :class:`DomainModel` s.
        mappings: {"linear" | "mlp": its :class:`MappingFit`, rate and round chosen on validation}.
        rate_mse: {"linear" | "mlp": {server rate: best held-out MSE}}, what the rate was chosen on.
        fit_users: the warm clients the mappings were trained on (sorted).
    """

    split: object
    source: DomainModel
    target: DomainModel
    mappings: dict
    rate_mse: dict
    fit_users: np.ndarray


def cold_start_methods(domains, beta: float, seed: int, settings: ColdStartSettings,
                       source: DomainModel | None = None, central: bool = True, progress: bool = False) -> dict:
    """Every method of :data:`METHODS` for one (β, seed), scored on the cold users' hidden music.

    For each k in ``settings.revealed`` the cold users who have more than k hidden music ratings
    keep k of them on the device (the tuned methods fine-tune on them); every method is scored on
    the remaining hidden ratings of that k, so the methods of one k are compared on the same ratings.

    Args:
        domains: a :class:`helpers.cross_domain.CrossDomain`.  source: step 1 already run for this
            ``seed`` (:func:`train_source`), or None to run it.  central: also run lesson 06's
            centralised mappings (Keras; a few seconds).

    Returns:
        {"scores": {k: {method: {"RMSE", "MAE", "HR@10", "NDCG@10"}}}, "units": {k: {method: the
        per-rating and per-user values each score averages (:func:`score_cold`)}}, "test_ratings": {k: count},
        "curve": one record per (mapping kind, checkpoint round, k, tuned) with the held-out
        ``valid_mse`` and the four scores of the mapping stopped there, "rounds": {"source", "target",
        "mapping", "mapping_mlp"} and "server_rates": {"linear", "mlp"} chosen on validation,
        "mb_up_per_client": {"source", "target", "mapping", "mapping_mlp"} mean MB a client uploads per
        round, "seconds_per_round" (the same parts), "cold_users", "leakage": {"linear" | "mlp":
        :func:`leakage`}, "trained": :class:`TrainedParts`}.
    """
    from helpers import cross_domain as cd
    split = cd.cold_start_split(domains, beta, seed)
    source = train_source(domains, settings, seed, progress) if source is None else source
    target = train_domain(split.train, domains.n_users, domains.n_target_items, settings.domain,
                          settings.domain_rounds, settings.dim, seed, progress=progress, desc="target rounds")
    stores = DeviceStores(source.store, target.store)
    warm = np.random.default_rng(seed).permutation(split.warm)
    n_valid = max(1, int(round(settings.mapping_valid_share * len(warm))))
    fit, valid = np.sort(warm[n_valid:]), np.sort(warm[:n_valid])
    chosen = {kind: choose_mapping(stores, fit, valid, settings, kind, seed) for kind in MAPPINGS}
    mappings = {kind: fit_ for kind, (fit_, _) in chosen.items()}
    cold, dim = split.cold, settings.dim
    zeros_vec, zeros_bias = np.zeros((len(cold), dim)), np.zeros(len(cold))
    mu_b, bias_b = federated_bias_baseline(split.train, domains.n_target_items)
    bias_table = np.concatenate([np.zeros((domains.n_target_items, dim)), bias_b[:, None]], axis=1)
    reference = central_mapping(domains, split, seed, dim) if central else None
    scores, units, test_ratings, curve = {}, {}, {}, []
    for k in settings.revealed:
        revealed, test = reveal_few(split.test, k, seed)
        slot = np.searchsorted(cold, revealed["user"].to_numpy())
        items, ratings = revealed["item"].to_numpy(), revealed["rating"].to_numpy(np.float64)

        def tuned(vec, bias):
            return fine_tune_on_device(target.mu, target.item_params, vec, bias, slot, items, ratings,
                                       settings.tune_steps, settings.tune_lr, settings.domain.l2)

        def score(mu, table_, vec, bias, keep_units=True):
            return score_cold(mu, table_, cold, vec, bias, test, revealed, units=keep_units)

        def mapped(table_, kind):
            return map_on_device(table_, source.store, cold, kind)

        scores[k] = {"fed_bias": score(mu_b, bias_table, zeros_vec, zeros_bias),
                     "fed_tgt": score(target.mu, target.item_params, zeros_vec, zeros_bias),
                     "fed_tgt_tuned": score(target.mu, target.item_params, *tuned(zeros_vec, zeros_bias))}
        for kind, (plain, with_tuning, centralised) in MAPPING_METHODS.items():
            vec, bias = mapped(mappings[kind].table, kind)
            scores[k][plain] = score(target.mu, target.item_params, vec, bias)
            scores[k][with_tuning] = score(target.mu, target.item_params, *tuned(vec, bias))
            if reference is not None:
                scores[k][centralised] = score(reference[0], reference[1], *reference[2][kind])
            for round_, table_ in mappings[kind].checkpoints.items():
                vec, bias = mapped(table_, kind)
                valid_mse = float(mappings[kind].history.valid_mse[round_])
                for is_tuned, values in ((False, (vec, bias)), (True, tuned(vec, bias))):
                    curve.append({"mapping": kind, "round": round_, "revealed": k, "tuned": is_tuned,
                                  "valid_mse": valid_mse, **score(target.mu, target.item_params, *values,
                                                                     keep_units=False)})
        units[k] = {method: result.pop("units") for method, result in scores[k].items()}
        test_ratings[k] = len(test)

    def per_client_and_round(history: fc.History) -> tuple[float, float]:
        trained = sum(len(r.trained) for r in history.reports)
        return (float(sum(r.bytes_up for r in history.reports) / trained / 1e6),
                float(sum(r.seconds for r in history.reports) / len(history.reports)))

    parts = {"source": source.history, "target": target.history, "mapping": mappings["linear"].history,
             "mapping_mlp": mappings["mlp"].history}
    costs = {part: per_client_and_round(history) for part, history in parts.items()}
    one_step = replace(settings.mapping, clients_per_round=len(fit), local_epochs=1, l2=0.0, seed=seed)
    return {"scores": scores, "units": units, "test_ratings": test_ratings, "curve": curve,
            "rounds": {"source": source.best_round, "target": target.best_round,
                       "mapping": mappings["linear"].best_round, "mapping_mlp": mappings["mlp"].best_round},
            "server_rates": {kind: fit_.server_lr for kind, fit_ in mappings.items()},
            "mb_up_per_client": {part: mb for part, (mb, _) in costs.items()},
            "seconds_per_round": {part: seconds for part, (_, seconds) in costs.items()},
            "cold_users": len(cold),
            "leakage": {kind: leakage(fit_.table, stores, fit, one_step, seed=seed, kind=kind)
                        for kind, fit_ in mappings.items()},
            "trained": TrainedParts(split, source, target, mappings, {kind: mse for kind, (_, mse) in chosen.items()},
                                    fit)}


def run_grid(domains, settings: ColdStartSettings, betas, seeds, central: bool = True,
             progress: bool = False) -> dict:
    """:func:`cold_start_methods` for every β in ``betas`` and seed in ``seeds``; the source MF, which
    no β changes, is trained once per seed. Returns {(β, seed): its result}."""
    runs = {}
    for seed in progress_bar(list(seeds), "seeds", enabled=progress):
        source = train_source(domains, settings, seed)
        for beta in betas:
            runs[beta, seed] = cold_start_methods(domains, beta, seed, settings, source, central=central)
    return runs


def scores_frame(runs: dict) -> pd.DataFrame:
    """One row per (β, seed, revealed k, method) with its RMSE, MAE (stars), HR@10 and NDCG@10, from
    :func:`run_grid`'s runs; sorted by β, k, method, seed."""
    rows = [{"beta": beta, "seed": seed, "revealed": k, "method": method, **metrics}
            for (beta, seed), run in runs.items() for k, per_method in run["scores"].items()
            for method, metrics in per_method.items()]
    return pd.DataFrame(rows).sort_values(["beta", "revealed", "method", "seed"], ignore_index=True)


def curve_frame(runs: dict) -> pd.DataFrame:
    """One row per (β, seed, mapping kind, checkpoint round, revealed k, tuned) with the held-out
    ``valid_mse`` and the cold users' RMSE, MAE, HR@10 and NDCG@10 of the mapping stopped at that
    round, from :func:`run_grid`'s runs."""
    rows = [{"beta": beta, "seed": seed, **record} for (beta, seed), run in runs.items() for record in run["curve"]]
    return pd.DataFrame(rows).sort_values(["beta", "mapping", "round", "revealed", "tuned", "seed"], ignore_index=True)


def scores_at_round(scores: pd.DataFrame, curve: pd.DataFrame, kind: str, round_: int) -> pd.DataFrame:
    """:func:`scores_frame`'s rows with the federated mapping of ``kind`` (and its tuned version) stopped
    at checkpoint ``round_`` in place of the validation-chosen one; the other kind's mapping rows are
    dropped. Raises ValueError for a kind or round the runs did not keep."""
    mapping_kind(kind)
    kept = sorted(int(r) for r in curve.loc[curve["mapping"] == kind, "round"].unique())
    if round_ not in kept:
        raise ValueError(f"round {round_} of the {kind} mapping was not kept; the checkpoints are {kept}")
    plain, with_tuning, centralised = MAPPING_METHODS[kind]
    others = {m for other, methods in MAPPING_METHODS.items() if other != kind for m in methods}
    base = scores[~scores["method"].isin(others | {plain, with_tuning})]
    at = curve[(curve["mapping"] == kind) & (curve["round"] == round_)]
    at = at.assign(method=np.where(at["tuned"], with_tuning, plain))[list(scores.columns)]
    return pd.concat([base, at]).sort_values(["beta", "revealed", "method", "seed"], ignore_index=True)


def unit_values(runs: dict, beta: float, k: int, method: str, metric: str, seeds) -> list:
    """The per-user values behind ``metric`` of ``method`` at (β, k), one array per seed of ``seeds``
    (each seed has its own cold users): (summed squared error, ratings) per cold user for RMSE, a hit
    per cold user for HR@10, ... — what :func:`helpers.findings.compare_at_95` resamples."""
    return [runs[beta, seed]["units"][k][method][metric] for seed in seeds]
