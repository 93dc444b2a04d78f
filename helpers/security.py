"""Faults and attacks on federated MF, and robust aggregation (lesson 10).

All functions work on one round's :class:`~helpers.fedcore.Updates`: rows of
(client, item, Δ(q, b)). Attacks are transforms of the federated core (step 3) that rewrite
some clients' rows before aggregation; aggregators (step 4) turn the rows into the dense
(I, d + 1) update. Dropouts are a sampler: dropped clients got the model but never train
or report. :func:`threatened` puts them together as an :class:`~helpers.fedcore.Algorithm`.

Aggregators:
- ``"mean"``: FedAvg's weighted mean Σ_k (n_k/n) Δ_k;
- ``"clip"``: the same after scaling each client's update to L2 norm ≤ C;
- ``"median"`` / ``"trimmed"``: for each item, the coordinate-wise median (or the
  mean after dropping the highest and lowest ``trim`` share) over the clients that
  sent that item's row, times those clients' total weight. Rows nobody sent stay 0;
- ``"median_all"``: the textbook coordinate-wise median over *all* K sampled clients,
  counting a client that did not rate the item as sending 0. An item rated by fewer
  than half of the sampled clients — almost every item — then gets a median of 0.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers.federated import ClientStore, Federation, item_table, train_federated, user_error_sums
from helpers.progress import progress as progress_bar

AGGREGATORS = ("mean", "clip", "median", "trimmed", "median_all")
ATTACKS = ("none", "scale", "push")
AGGREGATOR_LABELS = {"mean": "mean (plain FedAvg)", "clip": "norm clipping, then mean", "median": "per-item median",
                     "trimmed": "per-item trimmed mean", "median_all": "median over all sampled clients"}
ATTACK_LABELS = {"none": "no attack", "scale": "scaling (−10× update)", "push": "push one item"}


@dataclass(frozen=True)
class Threat:
    """What goes wrong in each round.

    Attributes:
        dropout: share of the sampled clients whose update never arrives (0 ≤ p < 1).
        attacker_share: share of the sampled clients that are malicious.
        attack: ``"none"``, ``"scale"`` (send −``boost`` × the honest update: model
            replacement by scaling) or ``"push"`` (send only a row for ``target_item``
            that raises its bias and moves its vector toward the popular items').
        boost: the attack's scale factor.
        target_item: the item a ``"push"`` attack promotes.
        aggregator: one of :data:`AGGREGATORS`.  clip_norm: C for ``"clip"``.
        trim: share cut at each end by ``"trimmed"``.
        seed: seeds who drops out and who is malicious.
    """

    dropout: float = 0.0
    attacker_share: float = 0.0
    attack: str = "none"
    boost: float = 10.0
    target_item: int = 0
    aggregator: str = "mean"
    clip_norm: float = 0.5
    trim: float = 0.2
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError for impossible settings."""
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout share must lie in [0, 1), got {self.dropout}")
        if not 0 <= self.attacker_share < 1:
            raise ValueError(f"attacker share must lie in [0, 1), got {self.attacker_share}")
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {self.aggregator!r}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim share must lie in [0, 0.5), got {self.trim}")


def attack(updates: fc.Updates, attackers: np.ndarray, threat: Threat, params: np.ndarray) -> fc.Updates:
    """Replace the rows of the clients at positions ``attackers`` by malicious ones.

    ``"scale"``: −boost × their honest update. ``"push"``: one row for the target item,
    Δb = boost·0.1 and Δq = boost·0.1·(mean vector of the 100 highest-bias items − q_target),
    claiming the median n_k so as not to stand out. ``params``: the global item table (I, d + 1).
    """
    if threat.attack == "none" or len(attackers) == 0:
        return updates
    bad = np.isin(updates.slot, attackers)
    values = updates.values.copy()
    if threat.attack == "scale":
        values[bad] *= -threat.boost
        return replace(updates, values=values)
    item_vec, item_bias = item_table(params)
    popular = np.argsort(-item_bias)[:100]
    row = np.append(item_vec[popular].mean(axis=0) - item_vec[threat.target_item], 1.0) * 0.1 * threat.boost
    n = len(attackers)
    counts = updates.num_examples.copy()
    counts[attackers] = int(np.median(updates.num_examples))
    upload = updates.upload_bytes.copy()
    upload[attackers] = fc.row_bytes(values.shape[1])
    return fc.Updates(updates.clients, counts, np.concatenate([updates.slot[~bad], np.asarray(attackers)]),
                      np.concatenate([updates.rows[~bad], np.full(n, threat.target_item)]),
                      np.concatenate([values[~bad], np.tile(row, (n, 1))]).astype(np.float32), upload)


def attack_transform(threat: Threat) -> fc.Transform:
    """The attack as a transform of the core: a share of the reporting clients, drawn by
    (seed, round), send malicious rows instead of their own."""
    def transform(updates: fc.Updates, context: fc.RoundContext) -> fc.Updates:
        order = np.random.default_rng([threat.seed, context.state.round]).permutation(len(updates.clients))
        return attack(updates, order[:int(round(threat.attacker_share * len(updates.clients)))], threat,
                      context.state.params)

    return transform


def robust_aggregate(updates: fc.Updates, n_items: int, method: str, trim: float = 0.2) -> np.ndarray:
    """Step (4) with ``"median"``, ``"trimmed"`` or ``"median_all"`` (see the module doc): dense (I, W)."""
    if method == "median_all":
        return _median_all(updates, n_items)
    if method not in ("median", "trimmed"):
        raise ValueError(f"robust aggregator must be 'median', 'trimmed' or 'median_all', got {method!r}")
    weight = (updates.num_examples / max(int(updates.num_examples.sum()), 1))[updates.slot]
    values = updates.values.astype(np.float64)
    items = updates.rows
    counts = np.bincount(items, minlength=n_items)
    share = np.bincount(items, weights=weight, minlength=n_items)
    start = np.concatenate([[0], np.cumsum(counts)])[items]  # where each row's item group begins
    dense = np.zeros((n_items, values.shape[1]))
    for column in range(values.shape[1]):
        order = np.lexsort((values[:, column], items))  # rows sorted by item, then by value
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order)) - start[order]  # position within the item's group
        c = counts[items]
        if method == "median":
            keep = (rank == (c - 1) // 2) | (rank == c // 2)  # the middle one or two values
        else:
            cut = np.floor(trim * c).astype(np.int64)
            keep = (rank >= cut) & (rank < c - cut)
        total = np.bincount(items[keep], weights=values[keep, column], minlength=n_items)
        kept = np.bincount(items[keep], minlength=n_items)
        dense[:, column] = np.divide(total, kept, out=np.zeros(n_items), where=kept > 0) * share
    return dense.astype(np.float32)


def _median_all(updates: fc.Updates, n_items: int) -> np.ndarray:
    """Coordinate-wise median over all K clients, zeros for the items a client did not send."""
    k = len(updates.clients)
    dense = np.zeros((n_items, updates.values.shape[1]), np.float32)
    counts = np.bincount(updates.rows, minlength=n_items)
    for item in np.flatnonzero(2 * counts >= k):  # otherwise zeros are the majority: median 0
        column = updates.values[updates.rows == item]
        dense[item] = np.median(np.vstack([column, np.zeros((k - len(column), column.shape[1]))]), axis=0)
    return dense


def threatened(threat: Threat) -> fc.Algorithm:
    """FedAvg under ``threat`` as hooks of the core: uniform K with dropouts, the attack as a
    transform (then norm clipping for ``"clip"``), and the chosen aggregator."""
    threat.check()
    transforms = (attack_transform(threat),) + ((fc.clip(threat.clip_norm),) if threat.aggregator == "clip" else ())
    if threat.aggregator in ("mean", "clip"):
        aggregator = fc.weighted_mean
    else:
        def aggregator(updates, shape, context):
            return robust_aggregate(updates, shape[0], threat.aggregator, threat.trim)
    return fc.Algorithm(sampler=fc.with_dropout(fc.uniform, threat.dropout, threat.seed), transforms=transforms,
                        aggregator=aggregator)


def hit_rate(state: fc.ServerState, store: ClientStore, federation: Federation, item: int, k: int = 10) -> float:
    """Share of users whose top-k of *unrated* items contains ``item`` (its training raters excluded)."""
    item_vec, item_bias = item_table(state.params)
    scores = store.user_vec @ item_vec.T + item_bias[None, :]
    train = federation.train
    scores[train["user_idx"].to_numpy(), train["item_idx"].to_numpy()] = -np.inf
    users = np.setdiff1d(federation.client_ids, train.loc[train["item_idx"] == item, "user_idx"].to_numpy())
    top = np.argpartition(-scores[users], k, axis=1)[:, :k]
    return float(np.mean((top == item).any(axis=1)))


DEFENCE_CONDITIONS = ("clean", "scaling attack", "push attack")  # the columns of lesson 10's defence table


def defence_table(federation: Federation, config_for_seed, rounds: int, dim: int, target_item: int,
                  seeds=(0,), attacker_share: float = 0.1, clip_norm: float = 0.1, progress: bool = True) -> pd.DataFrame:
    """Lesson 10's defence table: every aggregator of :data:`AGGREGATORS` with no attack, the
    scaling attack and the push attack on ``target_item`` (``attacker_share`` of each round's
    clients attack; C = ``clip_norm`` for ``"clip"``), one FedAvg run of ``rounds`` rounds per seed.

    Args:
        config_for_seed: seed → :class:`~helpers.fedcore.FedConfig` (e.g. ``lessons.mf_config(seed=s)``);
            the same seed also draws who attacks and who drops out.
    Returns:
        pandas DataFrame, one row per run: ``aggregator``, ``condition`` (:data:`DEFENCE_CONDITIONS`),
        ``seed``, ``test RMSE`` (stars, after the last round), ``test units`` (each test user's
        (Σ squared error, ratings), (U, 2): :func:`helpers.federated.user_error_sums`, for the bootstrap
        over test users), ``target hit rate`` (:func:`hit_rate`, 0–1).
    """
    attacks = {"clean": {}, "scaling attack": dict(attacker_share=attacker_share, attack="scale"),
               "push attack": dict(attacker_share=attacker_share, attack="push", target_item=target_item)}
    rows = []
    for aggregator in progress_bar(AGGREGATORS, "aggregators", enabled=progress):
        for condition in DEFENCE_CONDITIONS:
            for seed in seeds:
                threat = Threat(aggregator=aggregator, clip_norm=clip_norm, seed=seed, **attacks[condition])
                state, store, history = train_federated(federation, config_for_seed(seed), rounds, dim=dim,
                                                        algorithm=threatened(threat))
                rows.append({"aggregator": aggregator, "condition": condition, "seed": seed,
                             "test RMSE": history.test_rmse[-1],
                             "test units": user_error_sums(state, store, federation, federation.test),
                             "target hit rate": hit_rate(state, store, federation, target_item)})
    return pd.DataFrame(rows)
