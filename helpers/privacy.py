"""Privacy and security of federated MF (lesson 10): the leak, secure aggregation, DP.

Builds on :mod:`helpers.fedcore`: a round's :class:`~helpers.fedcore.Updates` are what
the server would receive from each client.

- **The leak**: a client's update is non-zero exactly on the rows of the items it
  rated, so the server can read off what each user watched.
- **Secure aggregation** (Bonawitz et al. 2017, simplified *for teaching*, not
  production cryptography): updates are quantised to integers mod 2³²; every pair of
  clients shares a seed, and the pseudo-random masks derived from it are added by one
  and subtracted by the other, so they cancel in the sum. If a client drops out after
  masking, the survivors reveal their pair seeds with it and the server removes the
  dangling masks.
- **DP-FedAvg** (McMahan et al. 2018): clients are Poisson-sampled with rate q, each
  client's update is clipped to L2 norm C, the clipped updates are summed, Gaussian noise
  N(0, σ²C²) is added to every coordinate of the sum, and the result is divided by the
  expected number of clients — in the core's terms: sampler ``poisson(q)``, transform
  ``clip(C)``, aggregator ``noisy_sum(σC, qN)`` (:func:`dp_fedavg`). The privacy loss
  (ε at a given δ) is computed with Google's ``dp-accounting``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from helpers import fedcore as fc

MODULUS = 2**32
SCALE = 2**20  # fixed-point scale: updates are rounded to multiples of 2⁻²⁰ ≈ 1e-6


# ------------------------------------------------------------------ the leak


def dense_update(updates: fc.Updates, k: int, n_rows: int) -> np.ndarray:
    """Client k's update as the server would get it in the dense protocol: (n_rows, W), zeros
    on the rows it did not change."""
    dense = np.zeros((n_rows, updates.values.shape[1]), np.float32)
    rows, values = updates.client(k)
    dense[rows] = values
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


PLD_DISCRETISATION = 1e-3  # the PLD accountant's value grid: ε agrees with its default 1e-4 to 4 decimals here, ~8× faster


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float,
            accountant: str = "rdp") -> float:
    """ε of DP-FedAvg with Poisson sampling, by ``dp-accounting``'s RDP or PLD accountant.

    The PLD accountant discretises the privacy loss on a grid of :data:`PLD_DISCRETISATION`
    (pessimistically: ε stays an upper bound).

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
        engine = dp_accounting.pld.PLDAccountant(value_discretization_interval=PLD_DISCRETISATION)
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


def noise_for_epsilon(target: float, sampling_rate: float, rounds: int, delta: float, accountant: str = "rdp",
                      tolerance: float = 0.01) -> float:
    """The smallest noise multiplier σ (to ``tolerance`` relative) whose ε after ``rounds`` rounds at
    ``sampling_rate`` and δ is at most ``target``: bisection on log σ, ε falling as σ grows.

    Raises:
        ValueError: ``target`` is not reachable with σ in [0.3, 100].
    """
    if not target > 0:
        raise ValueError(f"target ε must be > 0, got {target}")
    low, high = 0.3, 100.0
    if epsilon(high, sampling_rate, rounds, delta, accountant) > target:
        raise ValueError(f"ε = {target} needs σ > {high} with q = {sampling_rate:.3g}, {rounds} rounds, δ = {delta:.1e}")
    if epsilon(low, sampling_rate, rounds, delta, accountant) <= target:
        return low
    while high / low > 1 + tolerance:
        middle = float(np.sqrt(low * high))
        low, high = (middle, high) if epsilon(middle, sampling_rate, rounds, delta, accountant) > target else (low, middle)
    return high


def dp_fedavg(dp: DPConfig, sampling_rate: float, clipped_by_clients: bool = False) -> fc.Algorithm:
    """DP-FedAvg as hooks of the federated core: Poisson sampling with rate q, each update
    clipped to C, then (Σ clipped + N(0, σ²C²)) / qN; the server applies η_s times that.
    ``clipped_by_clients``: the clients clip their own updates before sending them (Flower's nodes,
    :func:`helpers.flower_rounds.train_on_nodes` with ``clip_norm = C``), so the server does not clip
    them a second time."""
    if not dp.clip_norm > 0 or dp.noise_multiplier < 0:
        raise ValueError(f"clipping norm must be > 0 and noise multiplier ≥ 0, got C = {dp.clip_norm}, "
                         f"σ = {dp.noise_multiplier}")
    clipping = () if clipped_by_clients else (fc.clip(dp.clip_norm),)
    return fc.Algorithm(sampler=fc.poisson(sampling_rate), transforms=clipping,
                        aggregator=fc.noisy_sum(dp.noise_multiplier * dp.clip_norm, dp.expected_clients, dp.seed))
