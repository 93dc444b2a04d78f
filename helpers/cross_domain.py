"""Cross-domain recommendation for cold-start users (lesson 06).

Two domains rated by the same people (Douban: movie/book → music). A *cold-start*
user has source ratings but all their target ratings are hidden at training time;
we predict those hidden ratings. With β the fraction of overlapping users made cold:

- **bias baseline**: r̂ = μ_t + b_i (the target's global mean and item bias, shrunk).
  The fair "no transfer" reference: it is what any target model says about a stranger.
- **TGT**: biased MF on the target domain only. Cold users have no target data, so
  their p_u = 0 and b_u = 0: TGT also predicts μ_t + b_i, with MF's item biases.
- **bias transfer** (the article's f_target = f_source + b_target): r̂ = μ_t + b_u^s + b_i^t,
  the user's bias learned in the source plus the target's item bias.
- **CMF**: one MF over both domains whose user vector and bias are shared; a cold
  user's p_u is learned from their source ratings alone.
- **EMCDR-style mapping**: MF in each domain, then a map from a user's source
  parameters (p_u^s, b_u^s) to target parameters learned on the warm overlapping
  users — linear, θ_target = θ_source·A + w with A initialised at the identity
  (so A − I and w are the learned change), or a small MLP.
- **fine-tuning**: target user vectors of all overlapping users initialised by the
  linear map, then the target MF is trained further on the target training data
  (cold users keep their mapped vector; items adapt to the mapped space).
"""

from __future__ import annotations

from dataclasses import dataclass

from helpers.tf_quiet import tf  # first: TensorFlow without its start-up lines
import keras
import numpy as np
import pandas as pd

from helpers import mf
from helpers.data import RatingsData
from helpers.download import DataUnavailableError
from helpers.metrics import ITEM_BIAS_SHRINKAGE, damped_item_bias, mae, rmse, unit_sums
from helpers.progress import progress as progress_bar

METHODS = {
    "bias": "bias baseline (μ + b_i)",
    "tgt": "TGT (target MF only)",
    "bias_transfer": "f_source + b_target (user bias)",
    "cmf": "CMF (shared user vector)",
    "map_linear": "mapping, linear",
    "map_mlp": "mapping, MLP",
    "finetune": "mapping + fine-tuning",
}


def choose_source(preferred: str = "movie", fallback: str = "book", loader=None) -> tuple[str, RatingsData]:
    """Load the preferred source domain, or say in one line why the fallback is used.

    Args:
        loader: the domain loader (default :func:`helpers.data.load_douban`).

    Returns:
        (domain actually used, its ratings).
    """
    if loader is None:
        from helpers.data import load_douban as loader
    try:
        return preferred, loader(preferred)
    except DataUnavailableError:
        print(f"Source domain: Douban {preferred} ratings are not available here (not cached, and neither the "
              f"mirror nor the network provides them), so this run uses Douban {fallback} as the source "
              f"— same code, same target.")
        return fallback, loader(fallback)


@dataclass
class CrossDomain:
    """Two domains over one user index.

    Attributes:
        source, target: frames ``user, item, rating`` — ``user`` is the shared dense
            user index, ``item`` is domain-local.
        n_users: size of the shared user index.  n_source_items, n_target_items.
        overlap: (M,) users who rated in both domains.
        user_ids: (n_users,) the original user id of each index.
    """

    source: pd.DataFrame
    target: pd.DataFrame
    n_users: int
    n_source_items: int
    n_target_items: int
    overlap: np.ndarray
    user_ids: np.ndarray


def align(source: RatingsData, target: RatingsData) -> CrossDomain:
    """Put two domains' users on one index by their original ``user_id``."""
    user_ids = np.union1d(source.ratings["user_id"].unique(), target.ratings["user_id"].unique())

    def frame(data: RatingsData) -> pd.DataFrame:
        return pd.DataFrame({"user": np.searchsorted(user_ids, data.ratings["user_id"]).astype(np.int32),
                             "item": data.ratings["item_idx"].to_numpy(np.int32),
                             "rating": data.ratings["rating"].to_numpy(np.float32)})

    src, tgt = frame(source), frame(target)
    overlap = np.intersect1d(src["user"].unique(), tgt["user"].unique())
    return CrossDomain(src, tgt, len(user_ids), source.n_items, target.n_items, overlap, user_ids)


@dataclass
class ColdStartSplit:
    """Target ratings split by user: cold users' target ratings are all in ``test``.

    Attributes:
        train: target ratings of every non-cold user.  test: all target ratings of cold users.
        cold: (C,) cold-start users.  warm: (M − C,) overlapping users with target training data.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    cold: np.ndarray
    warm: np.ndarray


def cold_start_split(domains: CrossDomain, beta: float, seed: int = 0) -> ColdStartSplit:
    """Make a fraction β of the overlapping users cold (seeded).

    Raises:
        ValueError: β outside (0, 1).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"β (fraction of cold-start users) must lie in (0, 1), got {beta}")
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(domains.overlap, int(round(beta * len(domains.overlap))), replace=False))
    is_cold = domains.target["user"].isin(cold).to_numpy()
    return ColdStartSplit(domains.target[~is_cold].reset_index(drop=True),
                          domains.target[is_cold].reset_index(drop=True), cold, np.setdiff1d(domains.overlap, cold))


def validation_split(split: ColdStartSplit, share: float = 0.25, seed: int = 0) -> ColdStartSplit:
    """The same protocol one level down, to choose methods without the test users: a ``share`` of the
    warm users (seeded; at least one, and at least one left warm) have their target ratings hidden
    and become this split's cold users; the rest stay warm. The real cold users' ratings stay out
    of it entirely.

    Raises:
        ValueError: ``share`` outside (0, 1), or fewer than two warm users.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the validation share of warm users must lie in (0, 1), got {share}")
    if len(split.warm) < 2:
        raise ValueError(f"a validation split needs at least 2 warm users, got {len(split.warm)}")
    rng = np.random.default_rng([seed, 5])
    size = min(max(1, int(round(share * len(split.warm)))), len(split.warm) - 1)
    held = np.sort(rng.choice(split.warm, size, replace=False))
    is_held = split.train["user"].isin(held).to_numpy()
    return ColdStartSplit(split.train[~is_held].reset_index(drop=True), split.train[is_held].reset_index(drop=True),
                          held, np.setdiff1d(split.warm, held))


# ------------------------------------------------------------------ building blocks


def _as_mf_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"user_idx": frame["user"], "item_idx": frame["item"], "rating": frame["rating"]})


def train_domain_mf(frame: pd.DataFrame, n_users: int, n_items: int, dim: int, epochs: int, seed: int,
                    mu: float | None = None, init: mf.MFParams | None = None) -> mf.MFParams:
    """Biased MF (lesson 02's hand-written mini-batch SGD) on one domain's ratings."""
    data = _as_mf_frame(frame)
    params = init if init is not None else mf.init_mf(
        n_users, n_items, dim, float(data["rating"].mean()) if mu is None else mu, seed=seed)
    mf.train_mf(params, data, data.iloc[:1], batch_size=256, epochs=epochs, learning_rate=1.0, l2=0.02, seed=seed)
    return params


def item_bias_baseline(train: pd.DataFrame, n_items: int, shrinkage: float = ITEM_BIAS_SHRINKAGE) -> tuple[float, np.ndarray]:
    """μ and b_i = Σ_u (r_ui − μ) / (n_i + shrinkage): a regularised item-mean baseline
    (:func:`helpers.metrics.damped_item_bias`)."""
    mu = float(train["rating"].mean())
    return mu, damped_item_bias(train["item"].to_numpy(), train["rating"].to_numpy() - mu, n_items, shrinkage)


def user_parameters(params: mf.MFParams, users: np.ndarray) -> np.ndarray:
    """[p_u, b_u] for ``users``: (len(users), d + 1)."""
    return np.concatenate([params.user_vec.numpy()[users], params.user_bias.numpy()[users, None]], axis=1)


def linear_map(dim: int) -> keras.Model:
    """θ_target = θ_source · A + w on (d + 1)-vectors [p_u, b_u]; A = I and w = 0 at the start."""
    return keras.Sequential([keras.Input((dim,)),
                             keras.layers.Dense(dim, kernel_initializer="identity", bias_initializer="zeros")])


def mlp_map(dim: int, seed: int = 0) -> keras.Model:
    """A small MLP from source to target user parameters: (d+1) → 2(d+1) tanh → (d+1)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((dim,)), keras.layers.Dense(2 * dim, activation="tanh"), keras.layers.Dense(dim)])


def fit_map(mapping: keras.Model, x: np.ndarray, y: np.ndarray, steps: int = 300, seed: int = 0) -> keras.Model:
    """Train a mapping on (source, target) user parameters of warm users, MSE, full batch Adam."""
    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.Adam(1e-2)
    x, y = tf.constant(x, tf.float32), tf.constant(y, tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((mapping(x) - y) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, mapping.trainable_variables), mapping.trainable_variables))
        return loss

    for _ in range(steps):
        step()
    return mapping


def _predict(mu: float, user_vec: np.ndarray, user_bias: np.ndarray, item_vec: np.ndarray, item_bias: np.ndarray,
             test: pd.DataFrame) -> np.ndarray:
    u, i = test["user"].to_numpy(), test["item"].to_numpy()
    return np.clip(mu + user_bias[u] + item_bias[i] + np.einsum("nd,nd->n", user_vec[u], item_vec[i]), 1.0, 5.0)


def fit_mapping(source_params: mf.MFParams, target_params: mf.MFParams, warm: np.ndarray, kind: str,
                seed: int = 0) -> keras.Model:
    """Learn [p_u^s, b_u^s] → [p_u^t, b_u^t] on the warm overlapping users.

    Args:
        kind: ``"map_linear"`` (identity-initialised θ·A + w) or ``"map_mlp"``.
    """
    dim = source_params.user_vec.shape[1] + 1
    if kind not in ("map_linear", "map_mlp"):
        raise ValueError(f"mapping must be 'map_linear' or 'map_mlp', got {kind!r}")
    mapping = linear_map(dim) if kind == "map_linear" else mlp_map(dim, seed)
    return fit_map(mapping, user_parameters(source_params, warm), user_parameters(target_params, warm), seed=seed)


def predict_mapped(source_params: mf.MFParams, target_params: mf.MFParams, mapping: keras.Model,
                   cold: np.ndarray, test: pd.DataFrame) -> np.ndarray:
    """Cold users' target predictions with user parameters mapped from the source: (len(test),)."""
    dim = source_params.user_vec.shape[1]
    mapped = keras.ops.convert_to_numpy(mapping(user_parameters(source_params, cold)))
    user_vec = np.zeros((source_params.user_vec.shape[0], dim))
    user_bias = np.zeros(source_params.user_vec.shape[0])
    user_vec[cold], user_bias[cold] = mapped[:, :dim], mapped[:, dim]
    return _predict(target_params.mu, user_vec, user_bias, target_params.item_vec.numpy(),
                    target_params.item_bias.numpy(), test)


# ------------------------------------------------------------------ one experiment


def evaluate_methods(domains: CrossDomain, beta: float, seed: int = 0, dim: int = 16, epochs: int = 20,
                     source_params: mf.MFParams | None = None, methods=tuple(METHODS),
                     target_params: mf.MFParams | None = None, split: ColdStartSplit | None = None,
                     units: bool = False) -> list[dict]:
    """Train every method for one (β, seed) and score it on the cold users' hidden ratings.

    Args:
        source_params: a source-domain MF already trained (it does not depend on β);
            trained here when None.
        target_params: the target-domain MF of this (β, seed, dim) already trained on the
            split's training ratings; trained here when None.
        split: the split to train and score on — :func:`cold_start_split` of (β, seed) when None;
            a :func:`validation_split` of it to choose methods on validation users.
        units: also return each cold user's (summed squared error, hidden ratings), (C, 2), under
            ``"units"``: what :func:`helpers.findings.compare_at_95` resamples (RMSE is the root of
            Σ sums / Σ counts).

    Returns:
        One dict per method: ``method, beta, seed, MAE, RMSE, cold_users, test_ratings`` (and ``units``).
    """
    split = cold_start_split(domains, beta, seed) if split is None else split
    test, targets = split.test, split.test["rating"].to_numpy()
    if source_params is None:
        source_params = train_domain_mf(domains.source, domains.n_users, domains.n_source_items, dim, epochs, seed)
    if target_params is None:
        target_params = train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, epochs, seed)
    mu_t = target_params.mu
    q_t, b_t = target_params.item_vec.numpy(), target_params.item_bias.numpy()
    zeros_vec, zeros_bias = np.zeros((domains.n_users, dim)), np.zeros(domains.n_users)
    predictions = {}
    mu_b, b_items = item_bias_baseline(split.train, domains.n_target_items)
    predictions["bias"] = np.clip(mu_b + b_items[test["item"].to_numpy()], 1.0, 5.0)
    predictions["tgt"] = _predict(mu_t, zeros_vec, zeros_bias, q_t, b_t, test)
    predictions["bias_transfer"] = _predict(mu_t, zeros_vec, source_params.user_bias.numpy(), q_t, b_t, test)
    if "cmf" in methods:
        # one item table for both domains (target items after the source's), ratings centred per domain
        off = domains.n_source_items
        joint = pd.concat([domains.source.assign(rating=domains.source["rating"] - domains.source["rating"].mean()),
                           split.train.assign(item=split.train["item"] + off, rating=split.train["rating"] - mu_t)],
                          ignore_index=True)
        shared = train_domain_mf(joint, domains.n_users, off + domains.n_target_items, dim, epochs, seed, mu=0.0)
        predictions["cmf"] = _predict(mu_t, shared.user_vec.numpy(), shared.user_bias.numpy(),
                                      shared.item_vec.numpy()[off:], shared.item_bias.numpy()[off:], test)
    mapped_all = {}
    for name in ("map_linear", "map_mlp"):
        if name in methods or (name == "map_linear" and "finetune" in methods):
            mapped_all[name] = fit_mapping(source_params, target_params, split.warm, name, seed)
            predictions[name] = predict_mapped(source_params, target_params, mapped_all[name], split.cold, test)
    if "finetune" in methods:
        start = target_params.copy()
        overlap_mapped = keras.ops.convert_to_numpy(mapped_all["map_linear"](user_parameters(source_params, domains.overlap)))
        start.user_vec.scatter_nd_update(domains.overlap[:, None], overlap_mapped[:, :dim].astype(np.float32))
        start.user_bias.scatter_nd_update(domains.overlap[:, None], overlap_mapped[:, dim].astype(np.float32))
        tuned = train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, max(1, epochs // 4), seed,
                                init=start)
        predictions["finetune"] = _predict(mu_t, tuned.user_vec.numpy(), tuned.user_bias.numpy(),
                                           tuned.item_vec.numpy(), tuned.item_bias.numpy(), test)
    owner = np.searchsorted(split.cold, test["user"].to_numpy())
    rows = []
    for m in methods:
        row = {"method": m, "beta": beta, "seed": seed, "MAE": mae(predictions[m], targets),
               "RMSE": rmse(predictions[m], targets), "cold_users": len(split.cold), "test_ratings": len(test)}
        if units:
            row["units"] = unit_sums(owner, (predictions[m] - targets) ** 2, len(split.cold))
        rows.append(row)
    return rows


# ------------------------------------------------------------------ no shared users: transfer a function


class InteractionModel(keras.Model):
    """r̂ = μ + b_u + b_i + g(p_u ⊙ q_i), with g a small MLP: the 'interaction function'.

    Users and items are domain-specific, g is not: it is the only part that can move
    between domains that share neither users nor items.

    Call: int tensor (B, 2) of (user_idx, item_idx) → (B,) predicted ratings.
    """

    def __init__(self, n_users: int, n_items: int, mu: float, dim: int = 16, interaction: keras.Model | None = None,
                 l2: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.RandomNormal(stddev=0.1)
        reg = keras.regularizers.L2(l2)
        self.mu = mu
        self.user_vec = keras.layers.Embedding(n_users, dim, embeddings_initializer=init, embeddings_regularizer=reg)
        self.item_vec = keras.layers.Embedding(n_items, dim, embeddings_initializer=init, embeddings_regularizer=reg)
        self.user_bias = keras.layers.Embedding(n_users, 1, embeddings_initializer="zeros", embeddings_regularizer=reg)
        self.item_bias = keras.layers.Embedding(n_items, 1, embeddings_initializer="zeros", embeddings_regularizer=reg)
        self.interaction = interaction or keras.Sequential(
            [keras.Input((dim,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)], name="g")

    def call(self, pairs):
        users, items = pairs[:, 0], pairs[:, 1]
        g = self.interaction(self.user_vec(users) * self.item_vec(items))
        return self.mu + keras.ops.squeeze(self.user_bias(users) + self.item_bias(items) + g, axis=-1)


def train_interaction(train: pd.DataFrame, n_users: int, n_items: int, dim: int = 16, epochs: int = 10,
                      interaction: keras.Model | None = None, freeze_interaction: bool = False,
                      l2: float = 1e-4, seed: int = 0) -> InteractionModel:
    """Fit an :class:`InteractionModel` on ``user_idx, item_idx, rating`` by Adam on MSE.

    Args:
        interaction: a g pre-trained elsewhere (copied, never modified); None: a fresh g.
        freeze_interaction: train only embeddings and biases, keep g as given.
    """
    keras.utils.set_random_seed(seed)
    g = None
    if interaction is not None:
        g = keras.models.clone_model(interaction)
        g.set_weights(interaction.get_weights())
        g.trainable = not freeze_interaction
    model = InteractionModel(n_users, n_items, float(train["rating"].mean()), dim, g, l2=l2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    pairs = train[["user_idx", "item_idx"]].to_numpy(np.int32)
    model.fit(pairs, train["rating"].to_numpy(np.float32), batch_size=512, epochs=epochs, verbose=0)
    return model


def interaction_rmse(model: InteractionModel, test: pd.DataFrame) -> float:
    """RMSE (rating units) on ``test``."""
    pairs = test[["user_idx", "item_idx"]].to_numpy(np.int32)
    return rmse(keras.ops.convert_to_numpy(model(pairs)), test["rating"].to_numpy())


def interaction_user_errors(model: InteractionModel, test: pd.DataFrame) -> np.ndarray:
    """Each test user's (summed squared error, test ratings) on ``test``, in user order: (U, 2) —
    :func:`interaction_rmse` is the root of Σ sums / Σ counts; what a bootstrap over users resamples."""
    pairs = test[["user_idx", "item_idx"]].to_numpy(np.int32)
    squared = (keras.ops.convert_to_numpy(model(pairs)).astype(np.float64) - test["rating"].to_numpy()) ** 2
    users, owner = np.unique(test["user_idx"].to_numpy(), return_inverse=True)
    return unit_sums(owner, squared, len(users))


class ColdStartPlayground:
    """The lesson's widget: bias baseline, TGT and one mapping at a chosen β and size.

    Every model is cached: source-domain MFs per embedding size and target-domain MFs per
    (β, size) (:meth:`warm` trains the ones asked for up front), results per setting. A new β or size trains
    one target MF and the mapping; switching the mapping refits only the mapping.
    """

    def __init__(self, domains: CrossDomain, seed: int = 0, epochs: int = 20):
        self.domains, self.seed, self.epochs = domains, seed, epochs
        self._source: dict[int, mf.MFParams] = {}
        self._target: dict[tuple, mf.MFParams] = {}
        self._results: dict[tuple, dict] = {}

    def source(self, dim: int) -> mf.MFParams:
        """The source-domain MF of embedding size ``dim`` (trained once)."""
        if dim not in self._source:
            self._source[dim] = train_domain_mf(self.domains.source, self.domains.n_users,
                                                self.domains.n_source_items, dim, self.epochs, self.seed)
        return self._source[dim]

    def warm(self, dims, betas=(), at_dim: int | None = None, progress: bool = True) -> None:
        """Train now the source MFs of every size in ``dims`` (the slow part of a new size) and the
        target MFs of every β in ``betas`` at size ``at_dim`` (the slow part of a new β)."""
        if betas and at_dim is None:
            raise ValueError("target MFs for several β need the embedding size to train them at (at_dim)")
        for dim in progress_bar(list(dims), "source MFs", enabled=progress):
            self.source(dim)
        for beta in progress_bar(list(betas), "target MFs", enabled=progress):
            self.target(beta, at_dim)

    def target(self, beta: float, dim: int) -> mf.MFParams:
        """The target-domain MF of size ``dim`` trained on what β leaves visible (every target rating
        except the cold users'), trained once per (β, size)."""
        key = (round(float(beta), 6), int(dim))   # the target MF does not depend on the mapping
        if key not in self._target:
            split = cold_start_split(self.domains, beta, self.seed)
            self._target[key] = train_domain_mf(split.train, self.domains.n_users, self.domains.n_target_items,
                                                dim, self.epochs, self.seed)
        return self._target[key]

    def run(self, beta: float, mapping: str, dim: int) -> dict:
        """RMSE on the cold users' hidden ratings: ``{label: rmse}`` for three methods.

        Raises:
            ValueError: β outside (0, 1), an unknown mapping, or dim < 1.
        """
        if int(dim) != dim or dim < 1:
            raise ValueError(f"embedding size must be a whole number ≥ 1, got {dim}")
        if mapping not in ("map_linear", "map_mlp"):
            raise ValueError(f"mapping must be 'map_linear' or 'map_mlp', got {mapping!r}")
        cold_start_split(self.domains, beta, self.seed)  # validates β before any training
        key = (round(float(beta), 6), int(dim), mapping)
        if key not in self._results:
            rows = evaluate_methods(self.domains, beta, self.seed, dim, self.epochs, source_params=self.source(dim),
                                    methods=("bias", "tgt", mapping), target_params=self.target(beta, dim))
            self._results[key] = {METHODS[row["method"]]: row["RMSE"] for row in rows}
        return dict(self._results[key])


def cold_user_lists(domains: CrossDomain, beta: float, user: int, k: int = 10, dim: int = 16, epochs: int = 20,
                    seed: int = 0, target_name: str = "music") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One cold user's view: their source ratings, and top-k target items with and without transfer.

    Returns:
        (source ratings of the user sorted best first, a top-k table with columns
        ``rank, without transfer (TGT), with transfer (linear map)`` of item ids, each
        marked with the user's hidden rating when they rated it).
    """
    split = cold_start_split(domains, beta, seed)
    if user not in split.cold:
        raise ValueError(f"user {user} is not a cold-start user at β = {beta}")
    source_params = train_domain_mf(domains.source, domains.n_users, domains.n_source_items, dim, epochs, seed)
    target_params = train_domain_mf(split.train, domains.n_users, domains.n_target_items, dim, epochs, seed)
    mapping = fit_mapping(source_params, target_params, split.warm, "map_linear", seed)
    every_item = pd.DataFrame({"user": user, "item": np.arange(domains.n_target_items)})
    without = _predict(target_params.mu, np.zeros((domains.n_users, dim)), np.zeros(domains.n_users),
                       target_params.item_vec.numpy(), target_params.item_bias.numpy(), every_item)
    with_transfer = predict_mapped(source_params, target_params, mapping, np.array([user]), every_item)
    hidden = split.test[split.test["user"] == user].set_index("item")["rating"]

    def label(items):
        return [f"{target_name} #{i}" + (f" (rated {hidden[i]:.0f}★)" if i in hidden.index else "") for i in items]

    table = pd.DataFrame({"rank": np.arange(1, k + 1),
                          "without transfer (TGT)": label(np.argsort(-without, kind="stable")[:k]),
                          "with transfer (linear map)": label(np.argsort(-with_transfer, kind="stable")[:k])})
    history = domains.source[domains.source["user"] == user].sort_values("rating", ascending=False)
    return history, table
