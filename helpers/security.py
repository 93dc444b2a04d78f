"""Faults and attacks on federated MF, and robust aggregation (lesson 07).

All functions work on one round's :class:`~helpers.federated.RoundUpdates`: rows of
(client, item, Δq, Δb). Attacks rewrite some clients' rows before aggregation;
aggregators turn the rows into the dense (I, d) and (I,) update of step (4).

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

from helpers.federated import (ClientStore, FedConfig, Federation, RoundUpdates, ServerState, apply_update,
                               local_training, sample_clients, weighted_mean)
from helpers.privacy import clip_per_client

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


def keep_clients(updates: RoundUpdates, keep: np.ndarray) -> RoundUpdates:
    """The updates of the clients whose position in ``updates.clients`` is in ``keep``."""
    keep = np.sort(np.asarray(keep, dtype=int))
    position = np.full(len(updates.clients), -1)
    position[keep] = np.arange(len(keep))
    rows = position[updates.slot] >= 0
    return RoundUpdates(updates.clients[keep], updates.num_examples[keep], position[updates.slot[rows]],
                        updates.items[rows], updates.item_vec_delta[rows], updates.item_bias_delta[rows])


def attack(updates: RoundUpdates, attackers: np.ndarray, threat: Threat, server: ServerState) -> RoundUpdates:
    """Replace the attackers' rows by malicious ones.

    ``"scale"``: −boost × their honest update. ``"push"``: one row for the target item,
    Δb = boost·0.1 and Δq = boost·0.1·(mean vector of the 100 highest-bias items − q_target),
    claiming the median n_k so as not to stand out.
    """
    if threat.attack == "none" or len(attackers) == 0:
        return updates
    bad = np.isin(updates.slot, attackers)
    vec, bias = updates.item_vec_delta.copy(), updates.item_bias_delta.copy()
    if threat.attack == "scale":
        vec[bad] *= -threat.boost
        bias[bad] *= -threat.boost
        return replace(updates, item_vec_delta=vec, item_bias_delta=bias)
    keep = ~bad
    popular = np.argsort(-server.item_bias)[:100]
    direction = server.item_vec[popular].mean(axis=0) - server.item_vec[threat.target_item]
    n = len(attackers)
    counts = updates.num_examples.copy()
    counts[attackers] = int(np.median(updates.num_examples))
    return RoundUpdates(updates.clients, counts,
                        np.concatenate([updates.slot[keep], np.asarray(attackers)]),
                        np.concatenate([updates.items[keep], np.full(n, threat.target_item)]),
                        np.concatenate([vec[keep], np.tile(0.1 * threat.boost * direction, (n, 1))]).astype(np.float32),
                        np.concatenate([bias[keep], np.full(n, 0.1 * threat.boost)]).astype(np.float32))


def robust_aggregate(updates: RoundUpdates, n_items: int, method: str, clip_norm: float = 0.5,
                     trim: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Step (4) with one of :data:`AGGREGATORS`: dense (I, d) and (I,) updates."""
    if method == "mean":
        return weighted_mean(updates, n_items)
    if method == "clip":
        vec, bias, _ = clip_per_client(updates, clip_norm)
        return weighted_mean(replace(updates, item_vec_delta=vec, item_bias_delta=bias), n_items)
    if method == "median_all":
        return _median_all(updates, n_items)
    if method not in ("median", "trimmed"):
        raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {method!r}")
    weight = (updates.num_examples / max(int(updates.num_examples.sum()), 1))[updates.slot]
    values = np.column_stack([updates.item_vec_delta, updates.item_bias_delta]).astype(np.float64)
    items = updates.items
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
    dense = dense.astype(np.float32)
    return dense[:, :-1], dense[:, -1]


def _median_all(updates: RoundUpdates, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinate-wise median over all K clients, zeros for the items a client did not send."""
    k = len(updates.clients)
    values = np.column_stack([updates.item_vec_delta, updates.item_bias_delta])
    dense = np.zeros((n_items, values.shape[1]), np.float32)
    counts = np.bincount(updates.items, minlength=n_items)
    for item in np.flatnonzero(2 * counts >= k):  # otherwise zeros are the majority: median 0
        column = values[updates.items == item]
        dense[item] = np.median(np.vstack([column, np.zeros((k - len(column), values.shape[1]))]), axis=0)
    return dense[:, :-1], dense[:, -1]


def threatened_round(threat: Threat):
    """A round function for :func:`helpers.federated.train_federated` under ``threat``."""
    threat.check()

    def round_fn(server: ServerState, store: ClientStore, federation: Federation, config: FedConfig) -> ServerState:
        clients = sample_clients(federation, config, server.round)
        updates = local_training(server, store, federation, config, clients)
        rng = np.random.default_rng([threat.seed, server.round])
        order = rng.permutation(len(clients))
        n_bad = int(round(threat.attacker_share * len(clients)))
        updates = attack(updates, order[:n_bad], threat, server)
        arrived = order[n_bad:][rng.random(len(clients) - n_bad) >= threat.dropout]
        updates = keep_clients(updates, np.concatenate([order[:n_bad], arrived]))
        vec, bias = robust_aggregate(updates, federation.n_items, threat.aggregator, threat.clip_norm, threat.trim)
        return apply_update(server, vec, bias, config.server_lr)

    return round_fn


def hit_rate(server: ServerState, store: ClientStore, federation: Federation, item: int, k: int = 10) -> float:
    """Share of users whose top-k of *unrated* items contains ``item`` (its training raters excluded)."""
    scores = store.user_vec @ server.item_vec.T + server.item_bias[None, :]
    train = federation.train
    scores[train["user_idx"].to_numpy(), train["item_idx"].to_numpy()] = -np.inf
    users = np.setdiff1d(federation.client_ids, train.loc[train["item_idx"] == item, "user_idx"].to_numpy())
    top = np.argpartition(-scores[users], k, axis=1)[:, :k]
    return float(np.mean((top == item).any(axis=1)))
