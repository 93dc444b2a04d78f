"""Matplotlib figures used by the lessons. Each function draws and returns the figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def plot_training_loss(loss: list[float], title: str, ylabel: str = "cross-entropy (nats)"):
    """Training loss per epoch."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(loss) + 1)
    ax.plot(epochs, loss, marker="o")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_temperature(summary: dict, titles: list[str], temperature: float):
    """Left: the top-k probabilities with titles. Right: P(c|u) against rank, log scale.

    Args:
        summary: output of :func:`helpers.softmax.temperature_summary`.
        titles: k item titles, best first.
        temperature: T, shown in the title.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.2, 1]})
    k = len(titles)
    left.barh(np.arange(k)[::-1], summary["top_probs"], color="tab:blue")
    left.set_yticks(np.arange(k)[::-1], [t[:40] for t in titles], fontsize=8)
    left.set(xlabel="P(item | user)", title=f"Top-{k} at T = {temperature:.2g}: "
             f"{summary['mass_top_k']:.0%} of the probability mass")
    sorted_probs = np.sort(summary["probs"])[::-1]
    right.loglog(np.arange(1, len(sorted_probs) + 1), sorted_probs)
    right.axvline(k, color="grey", ls="--", lw=1)
    right.set(xlabel="item rank (1 = most probable)", ylabel="P(item | user)",
              title=f"Entropy {summary['entropy_bits']:.1f} of {summary['max_entropy_bits']:.1f} bits")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig



def temperature_figure(scores: np.ndarray, titles, temperature: float, k: int = 10):
    """The temperature widget's callback: one user's distribution at temperature T.

    Args:
        scores: (I,) logits of one user (already-seen items may be set to -inf).
        titles: sequence of I item titles, indexed like ``scores``.
        temperature: T > 0 (ValueError otherwise).
        k: length of the top list.
    """
    from helpers.softmax import temperature_summary

    summary = temperature_summary(scores, temperature, k)
    return plot_temperature(summary, [titles[i] for i in summary["top_items"]], temperature)
