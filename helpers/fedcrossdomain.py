"""Federated cross-domain cold start: Douban users as clients holding two domains (lesson 07).

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
     full-batch gradient step on L_u = mean_j (x_u A + w − y_u)_j² + λ(‖A − I‖² + ‖w‖²);
  4. **on the device**, a cold user maps its own source vector and scores the global music
     table, r̂_ui = μ_t + b_u + b_i + p_u · q_i with (p_u, b_u) = x_u A + w;
  5. **fine-tuning on the device**: a cold user who has rated a few albums refines the mapped
     (p_u, b_u) on them with the music table fixed; nothing is sent.

The global mapping table is (d + 2, d + 1): rows 0 … d are A, row d + 1 is w. A client's upload
is the whole table, (d + 2)(d + 1) float32 values with no row indices.

What a mapping update reveals: with one local step the change of A is −η_c (2/D) x_uᵀ r_u and the
change of w is −η_c (2/D) r_u (D = d + 1, penalty aside), so Δ_A[:, c] / Δ_w[c] = x_u exactly:
the server reads the client's private source vector off its update
(:func:`reconstruct_source_vector`). Summing many clients' updates before the server sees them
(secure aggregation) mixes the vectors (:func:`leakage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers import federated as fed
from helpers.fedcore import FedConfig, ServerState, Updates
from helpers.metrics import damped_item_bias, mae, rmse
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


def init_mapping(dim: int) -> ServerState:
    """The identity map on (d + 1)-vectors as the global table (d + 2, d + 1): A = I, w = 0."""
    return ServerState(np.concatenate([np.eye(dim + 1), np.zeros((1, dim + 1))]).astype(np.float32))


def apply_mapping(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x · A + w for source vectors x (n, d + 1) and the mapping table ``params`` (d + 2, d + 1)."""
    return x @ params[:-1] + params[-1]


def mapping_gradient(params: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """∇ of each client's loss mean_j (x A + w − y)_j² + λ(‖A − I‖² + ‖w‖²) for clients x, y (K, D):
    (K, D + 1, D) — per client the gradient of A stacked on that of w (D = d + 1)."""
    width = x.shape[1]
    residual = apply_mapping(params, x) - y                                        # (K, D)
    grad = np.empty((len(x), width + 1, width))
    grad[:, :-1] = (2.0 / width) * x[:, :, None] * residual[:, None, :]
    grad[:, -1] = (2.0 / width) * residual
    penalty = params - np.concatenate([np.eye(width), np.zeros((1, width))])
    return grad + 2.0 * l2 * penalty


def mapping_client_update(params: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float, steps: int,
                          l2: float) -> np.ndarray:
    """One client, written plainly: ``steps`` full-batch gradient steps from the global table on its one
    pair x, y (D,), then its upload Δ = θ_k − θ: (D + 1, D)."""
    theta = params.astype(np.float64).copy()
    for _ in range(steps):
        theta -= lr * mapping_gradient(theta, x[None], y[None], l2)[0]
    return theta - params


@dataclass
class MappingTask:
    """Step 3: the (d + 2, d + 1) mapping table trained over the warm users (a
    :class:`helpers.fedcore.Task`). Each client has one example, its (x_u, y_u) pair, read from its
    own :class:`DeviceStores`; it takes E full-batch gradient steps (E = the config's local epochs,
    η_c its client rate, λ its l2) and sends the whole table's change."""

    client_ids: np.ndarray
    dim: int
    statistics_columns = None

    def num_examples(self, clients: np.ndarray) -> np.ndarray:
        """One pair per client: (K,) ones."""
        return np.ones(len(clients), np.int64)

    def table_bytes(self) -> int:
        """Bytes of the mapping table on the wire: (d + 2)(d + 1) float32, no row indices."""
        return (self.dim + 2) * fc.row_bytes(self.dim + 1, indexed=False)

    def download_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """Each client receives the whole table: (K,) int."""
        return np.full(len(clients), self.table_bytes(), np.int64)

    def train_clients(self, params, stores: DeviceStores, clients, config: FedConfig, round_num) -> Updates:
        """Step (2), vectorised over clients: :func:`mapping_client_update` for all of them at once."""
        clients = np.asarray(clients, dtype=np.int64)
        x, y = stores.pairs(clients)
        theta = np.broadcast_to(params.astype(np.float64), (len(clients),) + params.shape).copy()
        rate = config.client_rate(round_num)
        for _ in range(config.local_epochs):
            residual = np.einsum("kd,kde->ke", x, theta[:, :-1]) + theta[:, -1] - y
            grad = np.empty_like(theta)
            grad[:, :-1] = (2.0 / x.shape[1]) * x[:, :, None] * residual[:, None, :]
            grad[:, -1] = (2.0 / x.shape[1]) * residual
            grad[:, :-1] += 2.0 * config.l2 * (theta[:, :-1] - np.eye(x.shape[1]))
            grad[:, -1] += 2.0 * config.l2 * theta[:, -1]
            theta -= rate * grad
        delta = (theta - params).astype(np.float32)
        rows = params.shape[0]
        return Updates(clients, self.num_examples(clients), np.repeat(np.arange(len(clients)), rows),
                       np.tile(np.arange(rows), len(clients)), delta.reshape(-1, params.shape[1]),
                       np.full(len(clients), self.table_bytes(), np.int64))


def mapping_mse(params: np.ndarray, stores: DeviceStores, users: np.ndarray) -> float:
    """mean over ``users`` and the D coordinates of (x A + w − y)²: what held-out warm clients would
    report (each computes its own term; a federated mean adds them)."""
    x, y = stores.pairs(users)
    return float(np.mean((apply_mapping(params.astype(np.float64), x) - y) ** 2))


def train_mapping(stores: DeviceStores, fit_users: np.ndarray, valid_users: np.ndarray, config: FedConfig,
                  rounds: int, dim: int, algorithm: fc.Algorithm = fc.FEDAVG
                  ) -> tuple[np.ndarray, int, fc.History]:
    """Federated training of the mapping over ``fit_users``; the round kept is the one with the lowest
    :func:`mapping_mse` on the held-out warm clients ``valid_users`` (never the cold users).

    Returns (mapping table (d + 2, d + 1) of the chosen round, that round (0 = the identity map),
    history with ``valid_mse`` and ``fit_mse`` before round 1 and after every round).
    """
    task = MappingTask(np.sort(np.asarray(fit_users, dtype=np.int64)), dim)
    tables = []

    def evaluate(state, _stores):
        tables.append(state.params.copy())
        return {"valid_mse": mapping_mse(state.params, stores, valid_users),
                "fit_mse": mapping_mse(state.params, stores, task.client_ids)}

    _, history = fc.train(task, init_mapping(dim), stores, config, rounds, evaluate, algorithm)
    best = int(np.argmin(history.valid_mse))
    return tables[best], best, history


# ---------------------------------------------------------------- on the device


def map_on_device(params: np.ndarray, source: fed.ClientStore, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user in ``users`` maps its own [p^s, b^s]: (p^t (n, d), b^t (n,)), computed on its device."""
    users = np.asarray(users, dtype=np.int64)
    x = np.concatenate([source.user_vec[users], source.user_bias[users, None]], axis=1).astype(np.float64)
    mapped = apply_mapping(params.astype(np.float64), x)
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
    """Each row's top-k item positions with ties broken against the relevant items (pessimistic) and
    ``excluded`` items (U, I) bool removed: (U, k) int."""
    ordered = np.where(excluded, -np.inf, np.nan_to_num(scores, nan=-np.inf))
    return np.lexsort((relevant, -ordered), axis=1)[:, :k]


def list_metrics(scores: np.ndarray, relevant: np.ndarray, excluded: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(HR@k, NDCG@k) of full-catalogue lists with several relevant items per user, binary relevance.

    Args:
        scores: (U, I) higher is better.  relevant: (U, I) bool, the user's liked held-out items.
        excluded: (U, I) bool, items that are not candidates (e.g. those the user rated on the device).

    HR@k is the share of users with at least one relevant item in their top k; NDCG@k is
    Σ_{top k} rel / log2(rank + 1) over its ideal, min(k, n_relevant) hits at the top. Users with no
    relevant item are left out; ties count against relevant items.
    """
    keep = relevant.any(axis=1)
    scores, relevant, excluded = scores[keep], relevant[keep], excluded[keep]
    top = top_k_lists(scores, excluded, relevant, k)
    gains = np.take_along_axis(relevant, top, axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.array([discounts[:min(k, n)].sum() for n in relevant.sum(axis=1)])
    return float(np.mean(gains.any(axis=1))), float(np.mean((gains * discounts).sum(axis=1) / ideal))


def score_cold(mu: float, item_params: np.ndarray, users: np.ndarray, user_vec: np.ndarray, user_bias: np.ndarray,
               test: pd.DataFrame, excluded_pairs: pd.DataFrame | None = None, k: int = 10) -> dict:
    """RMSE and MAE (stars) on the ``test`` ratings of ``users`` and HR@k / NDCG@k of their full music
    ranking (liked = hidden rating ≥ :data:`RELEVANT_RATING`; items in ``excluded_pairs`` — ratings the
    device already holds — are not candidates)."""
    predictions = predict_pairs(mu, item_params, users, user_vec, user_bias, test)
    targets = test["rating"].to_numpy()
    scores = mu + user_bias[:, None] + item_params[:, -1][None] + user_vec @ item_params[:, :-1].T
    relevant = np.zeros(scores.shape, bool)
    liked = test[test["rating"] >= RELEVANT_RATING]
    relevant[np.searchsorted(users, liked["user"].to_numpy()), liked["item"].to_numpy()] = True
    excluded = np.zeros(scores.shape, bool)
    if excluded_pairs is not None and len(excluded_pairs):
        excluded[np.searchsorted(users, excluded_pairs["user"].to_numpy()), excluded_pairs["item"].to_numpy()] = True
    hr, ndcg = list_metrics(scores, relevant, excluded, k)
    return {"RMSE": rmse(predictions, targets), "MAE": mae(predictions, targets), f"HR@{k}": hr, f"NDCG@{k}": ndcg}


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


def reconstruct_source_vector(delta: np.ndarray) -> np.ndarray:
    """The server's reading of one client's mapping upload Δ (D + 1, D): the least-squares x̂ with
    Δ_A ≈ x̂ᵀ Δ_w, i.e. x̂ = Δ_A Δ_w / (Δ_w · Δ_w) — exact for one pair and no penalty (every column of
    Δ_A is x times that column's Δ_w), and the best linear reading when noise is added: (D,)."""
    return delta[:-1] @ delta[-1] / max(float(delta[-1] @ delta[-1]), 1e-300)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def leakage(params: np.ndarray, stores: DeviceStores, users: np.ndarray, config: FedConfig, group: int = 10,
            seed: int = 0, clip_norm: float | None = None, noise_multiplier: float = 0.0) -> dict:
    """How well the server recovers a client's private [p^s, b^s] from mapping uploads (one round of
    ``config`` from ``params``): cosine of x̂ (:func:`reconstruct_source_vector`) with the true x for
    each client's own upload, and, when groups of ``group`` clients' uploads are summed before the
    server sees them (secure aggregation), the best cosine of the group's x̂ with any member's x.

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
    task = MappingTask(np.sort(users), params.shape[1] - 1)
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
    single = np.array([cosine(reconstruct_source_vector(seen(d)), v) for d, v in zip(deltas, x)])
    summed = []
    for start in range(0, len(users), group):
        guess = reconstruct_source_vector(seen(deltas[start:start + group].sum(axis=0)))
        summed.append(max(cosine(guess, v) for v in x[start:start + group]))
    return {"single_cosine_mean": float(single.mean()), "single_cosine_min": float(single.min()),
            "summed_cosine_mean": float(np.mean(summed)), "group": group, "clients": len(users),
            "median_upload_norm": float(np.median(norms)), "clip_norm": clip_norm,
            "noise_multiplier": float(noise_multiplier)}


def mapping_under_dp(trained: TrainedParts, settings: ColdStartSettings, clip_norm: float,
                     noise_multipliers, seed: int = 0, revealed: int = 1) -> pd.DataFrame:
    """What DP-FedAvg's clipping and noise cost the mapping: for each σ in ``noise_multipliers`` the
    mapping of ``trained`` is trained again with every fitting warm client clipped to ``clip_norm`` and
    Gaussian noise σ·C on each round's sum (:func:`helpers.privacy.dp_fedavg`, every client in every
    round, the server's Adam step on the noisy mean), its round chosen on the held-out warm clients
    as before. One row per σ, the run's own mapping (no clipping, no noise) first: the held-out warm
    clients' mapping MSE, the cold users' RMSE (stars, ``revealed`` ratings kept on the device and not
    scored) and ε at δ = 1 / (fitting clients) for all the rounds run (RDP accountant; inf without noise)."""
    from helpers import privacy as pv

    stores = DeviceStores(trained.source.store, trained.target.store)
    valid = np.setdiff1d(trained.split.warm, trained.fit_users)
    cold = trained.split.cold
    shown, test = reveal_few(trained.split.test, revealed, seed)
    config = replace(settings.mapping, clients_per_round=len(trained.fit_users), seed=seed)
    delta = 1.0 / len(trained.fit_users)

    def row(label, sigma, table, epsilon):
        vec, bias = map_on_device(table, trained.source.store, cold)
        cold_rmse = score_cold(trained.target.mu, trained.target.item_params, cold, vec, bias, test, shown)["RMSE"]
        return {"mapping": label, "σ": sigma, "held-out mapping MSE": mapping_mse(table, stores, valid),
                "cold RMSE": cold_rmse, "ε": epsilon}

    rows = [row("no clipping, no noise", 0.0, trained.mapping, float("inf"))]
    for sigma in noise_multipliers:
        dp = pv.DPConfig(clip_norm, sigma, len(trained.fit_users), seed)
        algorithm = replace(pv.dp_fedavg(dp, 1.0), server_optimizer=mapping_algorithm(settings.mapping_server).server_optimizer)
        table, _, _ = train_mapping(stores, trained.fit_users, valid, config, settings.mapping_rounds, settings.dim, algorithm)
        epsilon = pv.epsilon(sigma, 1.0, settings.mapping_rounds, delta) if sigma > 0 else float("inf")
        rows.append(row(f"C = {clip_norm:.3g}, σ = {sigma:g}", sigma, table, epsilon))
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
            round; ``mapping_rounds`` the most rounds, ``mapping_server`` ``"sgd"`` or ``"adam"``.
        mapping_valid_share: warm clients held out of the mapping to choose its round.
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
    mapping_valid_share: float = 0.2
    revealed: tuple[int, ...] = (1, 3, 5)
    tune_steps: int = 20
    tune_lr: float = 0.1


METHODS = {
    "fed_bias": "federated bias baseline (μ + b_i)",
    "fed_tgt": "federated target-only MF",
    "fed_map": "federated mapping",
    "fed_tgt_tuned": "target-only + on-device tuning",
    "fed_map_tuned": "federated mapping + on-device tuning",
    "central_map": "centralised mapping (lesson 06)",
}


def mapping_algorithm(server: str) -> fc.Algorithm:
    """The round's hooks for the mapping: plain server SGD, or FedAdam's server step."""
    if server not in ("sgd", "adam"):
        raise ValueError(f"the mapping's server optimiser must be 'sgd' or 'adam', got {server!r}")
    return fc.FEDAVG if server == "sgd" else fc.Algorithm(server_optimizer=fc.server_adam())


def train_source(domains, settings: ColdStartSettings, seed: int = 0, progress: bool = False) -> DomainModel:
    """Step 1, which no β changes: the book (source) MF over every user with book ratings."""
    return train_domain(domains.source, domains.n_users, domains.n_source_items, settings.domain,
                        settings.domain_rounds, settings.dim, seed, progress=progress, desc="source rounds")


def central_mapping(domains, split, seed: int, dim: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Lesson 06's centralised pipeline (:func:`helpers.cross_domain.train_domain_mf` on each domain,
    20 epochs; the full-batch linear mapping fitted on every warm user), the reference: (μ, the
    music table (I, d + 1), the cold users' mapped p (C, d) and b (C,))."""
    from helpers import cross_domain as cd
    source = cd.train_domain_mf(domains.source, domains.n_users, domains.n_source_items, dim, 20, seed)
    target = cd.train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, 20, seed)
    mapping = cd.fit_mapping(source, target, split.warm, "map_linear", seed)
    mapped = np.asarray(mapping(cd.user_parameters(source, split.cold)))
    items = np.concatenate([target.item_vec.numpy(), target.item_bias.numpy()[:, None]], axis=1)
    return target.mu, items, mapped[:, :dim], mapped[:, dim]


@dataclass
class TrainedParts:
    """What one (β, seed) run of :func:`cold_start_methods` trained, for a lesson to look into.

    Attributes:
        split: the :class:`helpers.cross_domain.ColdStartSplit` (warm, cold users; train, hidden test).
        source, target: the two domains' :class:`DomainModel` s.
        mapping: the mapping table (d + 2, d + 1) of the round chosen on validation.
        fit_users: the warm clients the mapping was trained on (sorted).
    """

    split: object
    source: DomainModel
    target: DomainModel
    mapping: np.ndarray
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
            centralised mapping (Keras; a few seconds).

    Returns:
        {"scores": {k: {method: {"RMSE", "MAE", "HR@10", "NDCG@10"}}}, "test_ratings": {k: count},
        "rounds": {"source", "target", "mapping"} chosen on validation, "mb_up_per_client":
        {"source", "target", "mapping"} mean MB a client uploads per round, "seconds_per_round" (the
        same parts), "cold_users", "leakage": :func:`leakage`, "trained": :class:`TrainedParts`}.
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
    config = replace(settings.mapping, clients_per_round=len(fit), seed=seed)
    table, mapping_round, mapping_history = train_mapping(stores, fit, valid, config, settings.mapping_rounds,
                                                          settings.dim, mapping_algorithm(settings.mapping_server))
    cold, dim = split.cold, settings.dim
    zeros_vec, zeros_bias = np.zeros((len(cold), dim)), np.zeros(len(cold))
    mapped_vec, mapped_bias = map_on_device(table, source.store, cold)
    mu_b, bias_b = federated_bias_baseline(split.train, domains.n_target_items)
    bias_table = np.concatenate([np.zeros((domains.n_target_items, dim)), bias_b[:, None]], axis=1)
    reference = central_mapping(domains, split, seed, dim) if central else None
    scores, test_ratings = {}, {}
    for k in settings.revealed:
        revealed, test = reveal_few(split.test, k, seed)
        slot = np.searchsorted(cold, revealed["user"].to_numpy())
        items, ratings = revealed["item"].to_numpy(), revealed["rating"].to_numpy(np.float64)

        def tuned(vec, bias):
            return fine_tune_on_device(target.mu, target.item_params, vec, bias, slot, items, ratings,
                                       settings.tune_steps, settings.tune_lr, settings.domain.l2)

        def score(mu, table_, vec, bias):
            return score_cold(mu, table_, cold, vec, bias, test, revealed)

        scores[k] = {"fed_bias": score(mu_b, bias_table, zeros_vec, zeros_bias),
                     "fed_tgt": score(target.mu, target.item_params, zeros_vec, zeros_bias),
                     "fed_map": score(target.mu, target.item_params, mapped_vec, mapped_bias),
                     "fed_tgt_tuned": score(target.mu, target.item_params, *tuned(zeros_vec, zeros_bias)),
                     "fed_map_tuned": score(target.mu, target.item_params, *tuned(mapped_vec, mapped_bias))}
        if reference is not None:
            scores[k]["central_map"] = score(*reference)
        test_ratings[k] = len(test)

    def per_client_and_round(history: fc.History) -> tuple[float, float]:
        trained = sum(len(r.trained) for r in history.reports)
        return (float(sum(r.bytes_up for r in history.reports) / trained / 1e6),
                float(sum(r.seconds for r in history.reports) / len(history.reports)))

    costs = {part: per_client_and_round(model.history)
             for part, model in (("source", source), ("target", target))}
    costs["mapping"] = per_client_and_round(mapping_history)
    return {"scores": scores, "test_ratings": test_ratings,
            "rounds": {"source": source.best_round, "target": target.best_round, "mapping": mapping_round},
            "mb_up_per_client": {part: mb for part, (mb, _) in costs.items()},
            "seconds_per_round": {part: seconds for part, (_, seconds) in costs.items()},
            "cold_users": len(cold),
            "leakage": leakage(table, stores, fit, replace(config, local_epochs=1, l2=0.0), seed=seed),
            "trained": TrainedParts(split, source, target, table, fit)}


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
