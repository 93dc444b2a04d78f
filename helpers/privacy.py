"""Privacy and security of federated MF (lesson 07): the leak, secure aggregation, DP.

Builds on :mod:`helpers.federated`: a round's :class:`~helpers.federated.RoundUpdates`
is what the server would receive from each client.

- **The leak**: a client's update is non-zero exactly on the rows of the items it
  rated, so the server can read off what each user watched.
- **Secure aggregation** (Bonawitz et al. 2017, simplified *for teaching*, not
  production cryptography): updates are quantised to integers mod 2³²; every pair of
  clients shares a seed, and the pseudo-random masks derived from it are added by one
  and subtracted by the other, so they cancel in the sum. If a client drops out after
  masking, the survivors reveal their pair seeds with it and the server removes the
  dangling masks.
- **DP-FedAvg** (McMahan et al. 2018): each client's update is clipped to L2 norm C,
  the clipped updates are summed, Gaussian noise N(0, σ²C²) is added to every
  coordinate of the sum, and the result is divided by the expected number of clients.
  The privacy loss (ε at a given δ) is computed with Google's ``dp-accounting``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from helpers.federated import RoundUpdates, apply_update, local_training

MODULUS = 2**32
SCALE = 2**20  # fixed-point scale: updates are rounded to multiples of 2⁻²⁰ ≈ 1e-6


# ------------------------------------------------------------------ the leak


def dense_update(updates: RoundUpdates, k: int, n_items: int) -> np.ndarray:
    """Client k's update as the server would get it in the dense protocol: (I, d + 1)."""
    dense = np.zeros((n_items, updates.item_vec_delta.shape[1] + 1), np.float32)
    rows = updates.slot == k
    dense[updates.items[rows], :-1] = updates.item_vec_delta[rows]
    dense[updates.items[rows], -1] = updates.item_bias_delta[rows]
    return dense


def reconstruct_items(dense: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """The server's guess of what a client rated: rows whose update is larger than ``threshold``."""
    return np.flatnonzero(np.abs(dense).max(axis=1) > threshold)


def precision_recall(guessed: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a guessed item set against the true one (1.0 for empty/empty)."""
    guessed, truth = set(np.asarray(guessed).tolist()), set(np.asarray(truth).tolist())
    hits = len(guessed & truth)
    precision = hits / len(guessed) if guessed else 1.0
    recall = hits / len(truth) if truth else 1.0
    return precision, recall


# ------------------------------------------------------------------ secure aggregation (teaching version)


def quantise(values: np.ndarray) -> np.ndarray:
    """Floats → integers mod 2³² in fixed point (2²⁰ steps per unit); |values| must stay < 2¹¹."""
    return np.round(np.asarray(values, np.float64) * SCALE).astype(np.int64) % MODULUS


def dequantise(values: np.ndarray) -> np.ndarray:
    """Integers mod 2³² → floats, reading the upper half of the ring as negative numbers."""
    values = np.asarray(values, np.int64) % MODULUS
    return np.where(values >= MODULUS // 2, values - MODULUS, values).astype(np.float64) / SCALE


def pair_seed(round_seed: int, a: int, b: int) -> int:
    """The seed clients a and b agree on (in the real protocol: by Diffie–Hellman key agreement)."""
    low, high = sorted((int(a), int(b)))
    return int(np.random.default_rng([round_seed, low, high]).integers(0, 2**62))


def pair_mask(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """The pseudo-random mask expanded from a pair seed: uniform integers mod 2³²."""
    return np.random.default_rng(seed).integers(0, MODULUS, size=shape, dtype=np.int64)


def mask_update(update: np.ndarray, client: int, participants: np.ndarray, round_seed: int) -> np.ndarray:
    """Client ``client``'s masked update: quantised, + masks shared with higher ids, − masks with lower ids."""
    masked = quantise(update)
    for other in participants:
        if other == client:
            continue
        mask = pair_mask(pair_seed(round_seed, client, other), update.shape)
        masked = (masked + mask) % MODULUS if client < other else (masked - mask) % MODULUS
    return masked


def unmask_sum(masked: dict[int, np.ndarray], participants: np.ndarray, round_seed: int) -> np.ndarray:
    """The server's sum of the masked updates it received, with dropped clients' masks removed.

    Args:
        masked: client id → masked update, for the clients that *did* report.
        participants: every client that was asked (and took part in the mask set-up).

    Returns:
        The float sum of the surviving clients' updates. For each dropped client d, the
        survivors reveal seed(s, d); the server regenerates those masks and cancels them.
    """
    survivors = sorted(masked)
    total = np.zeros_like(next(iter(masked.values())))
    for client in survivors:
        total = (total + masked[client]) % MODULUS
    for dropped in sorted(set(int(c) for c in participants) - set(survivors)):
        for survivor in survivors:
            mask = pair_mask(pair_seed(round_seed, survivor, dropped), total.shape)
            # the survivor added +mask if survivor < dropped, −mask otherwise: undo it
            total = (total - mask) % MODULUS if survivor < dropped else (total + mask) % MODULUS
    return dequantise(total)


# ------------------------------------------------------------------ differential privacy


def clip_per_client(updates: RoundUpdates, clip_norm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale each client's whole update (its vector and bias deltas) to L2 norm ≤ ``clip_norm``.

    Returns:
        (item_vec_delta (R, d), item_bias_delta (R,), the clients' norms before clipping (K,)).
    """
    if not clip_norm > 0:
        raise ValueError(f"clipping norm C must be > 0, got {clip_norm}")
    squared = np.bincount(updates.slot, weights=(updates.item_vec_delta.astype(np.float64) ** 2).sum(axis=1)
                          + updates.item_bias_delta.astype(np.float64) ** 2, minlength=len(updates.clients))
    norms = np.sqrt(squared)
    factor = np.minimum(1.0, clip_norm / np.maximum(norms, 1e-12))[updates.slot]
    return (updates.item_vec_delta * factor[:, None]).astype(np.float32), (updates.item_bias_delta * factor).astype(np.float32), norms


@dataclass(frozen=True)
class DPConfig:
    """DP-FedAvg settings.

    Attributes:
        clip_norm: C, the L2 bound on one client's update.
        noise_multiplier: σ; the noise on the sum has standard deviation σ·C per coordinate.
        expected_clients: the fixed denominator qN (expected clients per round).
        seed: seeds the noise.
    """

    clip_norm: float
    noise_multiplier: float
    expected_clients: float
    seed: int = 0


def dp_aggregate(updates: RoundUpdates, n_items: int, dp: DPConfig, round_num: int) -> tuple[np.ndarray, np.ndarray]:
    """(Σ_k clip(Δ_k) + N(0, σ²C²)) / qN, dense over all items: every row gets noise."""
    if dp.noise_multiplier < 0:
        raise ValueError(f"noise multiplier must be ≥ 0, got {dp.noise_multiplier}")
    vec_rows, bias_rows, _ = clip_per_client(updates, dp.clip_norm)
    vec = np.zeros((n_items, vec_rows.shape[1]), np.float64)
    bias = np.zeros(n_items, np.float64)
    np.add.at(vec, updates.items, vec_rows)
    np.add.at(bias, updates.items, bias_rows)
    rng = np.random.default_rng([dp.seed, round_num])
    std = dp.noise_multiplier * dp.clip_norm
    vec += rng.normal(0, std, vec.shape)
    bias += rng.normal(0, std, bias.shape)
    return (vec / dp.expected_clients).astype(np.float32), (bias / dp.expected_clients).astype(np.float32)


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float,
            accountant: str = "rdp") -> float:
    """ε of DP-FedAvg with Poisson sampling, by ``dp-accounting``'s RDP or PLD accountant.

    Args:
        noise_multiplier: σ (> 0).  sampling_rate: q = expected clients / N, in (0, 1].
        rounds: T.  delta: δ.  accountant: ``"rdp"`` or ``"pld"``.
    """
    import dp_accounting

    if not noise_multiplier > 0:
        raise ValueError(f"noise multiplier must be > 0 for a finite ε, got {noise_multiplier}")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling rate must lie in (0, 1], got {sampling_rate}")
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), rounds)
    if accountant == "rdp":
        engine = dp_accounting.rdp.RdpAccountant()
    elif accountant == "pld":
        engine = dp_accounting.pld.PLDAccountant()
    else:
        raise ValueError(f"accountant must be 'rdp' or 'pld', got {accountant!r}")
    # The RDP accountant tries fractional Rényi orders near 1 whose series may not converge for
    # small σ; it then excludes that order (ε comes from the others) and logs one absl warning per
    # order. That exclusion is its documented behaviour, so the warnings are not shown to learners.
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        engine.compose(event)
        return float(engine.get_epsilon(delta))
    finally:
        absl_logger.setLevel(level)


def poisson_sample(federation, sampling_rate: float, seed: int, round_num: int) -> np.ndarray:
    """Each client takes part independently with probability q (what the accountant assumes)."""
    rng = np.random.default_rng([seed, round_num, 1])
    return federation.client_ids[rng.random(len(federation.client_ids)) < sampling_rate]


def dp_round(dp: DPConfig, sampling_rate: float):
    """A DP-FedAvg round function for :func:`helpers.federated.train_federated`.

    Clients are Poisson-sampled with rate q; their updates are clipped, summed, noised
    and divided by qN (``dp.expected_clients``); the server applies η_s times that.
    """
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling rate q = clients per round / N must lie in (0, 1], got {sampling_rate:.3g}")
    if not dp.clip_norm > 0 or dp.noise_multiplier < 0:
        raise ValueError(f"clipping norm must be > 0 and noise multiplier ≥ 0, got C = {dp.clip_norm}, "
                         f"σ = {dp.noise_multiplier}")

    def round_fn(server, store, federation, config):
        clients = poisson_sample(federation, sampling_rate, dp.seed, server.round)
        if len(clients) == 0:
            updates = RoundUpdates(clients, clients, clients, clients.astype(np.int32),
                                   np.zeros((0, server.item_vec.shape[1]), np.float32), np.zeros(0, np.float32))
        else:
            updates = local_training(server, store, federation, config, clients)
        vec, bias = dp_aggregate(updates, federation.n_items, dp, server.round)
        return apply_update(server, vec, bias, config.server_lr)

    return round_fn
