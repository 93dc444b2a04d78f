"""Non-IID client partitions: label skew drawn from a Dirichlet distribution (lesson 07).

For each class c, a share vector q_c ~ Dirichlet(α · 1_N) over the N clients says
which fraction of class c's examples each client holds. Small α (0.1) gives each class
to one or two clients, so most clients see only a couple of classes; large α (100)
gives every client almost exactly 1/N of every class, i.e. an IID split. This is the
partition of Hsu et al. (2019) and of most label-skew benchmarks since.

The same shares split the test set, so each client's test examples follow its own
label mix (what a personalised model is judged on).
"""

from __future__ import annotations

import numpy as np


def dirichlet_shares(n_classes: int, n_clients: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Shares q (C, N): row c is client shares of class c, each row ~ Dirichlet(α · 1_N)."""
    return rng.dirichlet(np.full(n_clients, float(alpha)), size=n_classes)


def split_by_shares(labels: np.ndarray, shares: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Deal every example of class c to the clients in proportion to ``shares[c]``.

    Args:
        labels: (M,) int class of each example, values 0..C-1.
        shares: (C, N) non-negative, each row summing to 1.
    Returns:
        N sorted index arrays into ``labels``; together they hold every index exactly once.
    """
    n_clients = shares.shape[1]
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in range(shares.shape[0]):
        members = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(shares[c])[:-1] * len(members)).astype(int)
        for client, piece in enumerate(np.split(members, cuts)):
            parts[client].append(piece)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def dirichlet_partition(labels: np.ndarray, n_clients: int, alpha: float, seed: int = 0, min_size: int = 10,
                        max_tries: int = 1000) -> tuple[list[np.ndarray], np.ndarray]:
    """A seeded Dirichlet(α) label-skew partition in which every client has ≥ ``min_size`` examples.

    Shares are redrawn (up to ``max_tries`` times) until no client is left with fewer than
    ``min_size`` examples, the usual guard that keeps tiny clients out of the experiment.

    Args:
        labels: (M,) int classes 0..C-1.  n_clients: N.  alpha: concentration α > 0.
    Returns:
        (N index arrays, the (C, N) shares used — pass them to :func:`split_by_shares`
        to split a test set the same way).
    Raises:
        ValueError: impossible settings (α ≤ 0, N < 1, N · min_size > M) or no valid draw.
    """
    labels = np.asarray(labels)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"α must be a positive number, got {alpha}")
    if int(n_clients) != n_clients or n_clients < 1:
        raise ValueError(f"the number of clients must be a whole number ≥ 1, got {n_clients}")
    if n_clients * min_size > len(labels):
        raise ValueError(f"{n_clients} clients × {min_size} examples need {n_clients * min_size} examples, "
                         f"only {len(labels)} available")
    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    for _ in range(max_tries):
        shares = dirichlet_shares(n_classes, n_clients, alpha, rng)
        parts = split_by_shares(labels, shares, rng)
        if min(len(p) for p in parts) >= min_size:
            return parts, shares
    raise ValueError(f"no Dirichlet(α={alpha}) draw in {max_tries} gave every one of {n_clients} clients "
                     f"≥ {min_size} examples; raise α, use fewer clients or lower min_size")


def class_counts(labels: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """Examples of each class on each client: (N, C) int."""
    return np.stack([np.bincount(labels[p], minlength=n_classes) for p in parts])


def classes_seen(counts: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Per client, how many classes make up at least ``threshold`` of its data: (N,) int."""
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return (fractions >= threshold).sum(axis=1)
